#pragma once
// file_work: a file tier's request waiting for an I/O op (its backlog is a deque of these), and
// the look-ahead over that backlog that seals the headers of queued writes while the disk is busy.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>

#include "kvtier/core/error.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/request.hpp"

namespace kvtier::detail {

enum class work_kind : std::uint8_t { write, read, clear };

struct file_work {
  work_kind kind;
  storage_batch* batch;  // null: internal work (the clear of a damaged page; index names its slot)
  std::size_t index;
  page_address where;
  std::uint64_t tokens_fp;
  std::span<const std::byte> in;  // write payload
  std::span<std::byte> out;       // read destination
  bool sealed = false;            // header below already computed (while earlier I/O was in flight)
  page_header header{};
  std::uint64_t use = 0;          // a read's use stamp (slot_directory::pin), for the LRU
};

inline file_work make_work(storage_batch& b, std::size_t i, const page_write& r) {
  return {work_kind::write, &b, i, r.where, r.tokens_fingerprint, r.payload, {}};
}
inline file_work make_work(storage_batch& b, std::size_t i, const page_read& r) {
  return {work_kind::read, &b, i, r.where, r.tokens_fingerprint, {}, r.payload};
}
inline file_work make_work(storage_batch& b, std::size_t i, const page_address& r) {  // an erase
  return {work_kind::clear, &b, i, r, 0, {}, {}};
}

// The first write among the next `window` queued requests whose header is not sealed yet (and
// whose page has the right size), or null.
inline file_work* next_unsealed_write(std::deque<file_work>& backlog, std::size_t window, std::size_t page_bytes) noexcept {
  std::size_t n = 0;
  for (file_work& w : backlog) {
    if (n++ >= window) break;
    if (w.kind == work_kind::write && !w.sealed && w.in.size() == page_bytes) return &w;
  }
  return nullptr;
}

}  // namespace kvtier::detail
