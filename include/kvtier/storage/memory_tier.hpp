#pragma once
// memory_tier: an in-memory storage backend with the full page format, LRU eviction and fault
// injection. The reference the file and Redis tiers are tested against, and a stand-in slow tier
// for tests of the layers above (it can complete batches only on poll(), like a real device).
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvtier/codec/concepts.hpp"
#include "kvtier/codec/identity.hpp"
#include "kvtier/codec/kv_page.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/storage/detail/verify_read.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/request.hpp"
#include "kvtier/storage/stats.hpp"

namespace kvtier {

struct memory_tier_config {
  kv_shape shape;                       // pages of another shape are foreign
  std::size_t page_bytes = 0;           // bytes of one page (decoded); > 0
  std::size_t capacity_pages = 0;       // > 0; the least recently used page goes when full
  bool complete_on_poll = false;        // true: statuses appear only at poll()/wait(), as on a device
};

template <page_codec Codec = identity_codec>
class memory_tier {
 public:
  using kvtier_storage_backend = storage_backend_tag;
  using codec_type = Codec;

  explicit memory_tier(memory_tier_config cfg) : memory_tier(cfg, default_tier_codec<Codec>(cfg.shape, cfg.page_bytes)) {}
  // With a codec built for this tier's pages (a cachegen codec and its profile, say).
  memory_tier(memory_tier_config cfg, Codec codec) : cfg_(cfg) {
    if (cfg_.page_bytes == 0) throw config_error("kvtier: memory_tier with page_bytes 0");
    codec_ = checked_tier_codec(std::move(codec), cfg_.shape, cfg_.page_bytes);
    if (cfg_.capacity_pages == 0) throw config_error("kvtier: memory_tier with capacity_pages 0");
  }

  result<void> put(std::span<const page_write> writes, storage_batch& batch) noexcept {
    if (!batch.begin(writes.size())) return make_error(errc::busy);
    for (std::size_t i = 0; i < writes.size(); ++i) finish(batch, i, put_one(writes[i]));
    return {};
  }
  result<void> get(std::span<const page_read> reads, storage_batch& batch) noexcept {
    if (!batch.begin(reads.size())) return make_error(errc::busy);
    for (std::size_t i = 0; i < reads.size(); ++i) finish(batch, i, get_one(reads[i]));
    return {};
  }
  result<void> contains(std::span<const page_address> where, storage_batch& batch) noexcept {
    if (!batch.begin(where.size())) return make_error(errc::busy);
    for (std::size_t i = 0; i < where.size(); ++i)
      finish(batch, i, pages_.count(where[i]) ? error{} : make_error(errc::not_found));
    return {};
  }
  result<void> erase(std::span<const page_address> where, storage_batch& batch) noexcept {
    if (!batch.begin(where.size())) return make_error(errc::busy);
    for (std::size_t i = 0; i < where.size(); ++i) {
      auto it = pages_.find(where[i]);
      if (it == pages_.end()) {
        finish(batch, i, make_error(errc::not_found));
        continue;
      }
      drop(it);
      finish(batch, i, {});
    }
    return {};
  }

  std::size_t poll() noexcept {
    std::size_t n = 0;
    for (auto& [b, i, e] : deferred_) {
      b->complete(i, e);
      ++n;
    }
    deferred_.clear();
    return n;
  }
  result<void> wait(storage_batch& batch, std::chrono::milliseconds) noexcept {
    poll();
    return batch.done() ? result<void>{} : make_error(errc::timeout);
  }

  kv_shape shape() const noexcept { return cfg_.shape; }
  std::size_t page_bytes() const noexcept { return cfg_.page_bytes; }
  storage_usage usage() const noexcept {
    return {pages_.size(), cfg_.capacity_pages, stored_bytes_, 0};
  }
  storage_stats stats() const noexcept { return stats_; }

  // ---- fault injection (tests) ------------------------------------------------------------------
  // Flips bit `bit` of the stored bytes of a page (header first, then payload). False if absent.
  bool flip_bit(const page_address& where, std::size_t bit) noexcept {
    auto it = pages_.find(where);
    if (it == pages_.end() || bit / 8 >= it->second.bytes.size()) return false;
    it->second.bytes[bit / 8] ^= std::byte(1u << (bit % 8));
    return true;
  }
  // The next n requests fail with `e` (an I/O error, a timeout, a lost connection, ...).
  void fail_next(std::size_t n, error e) noexcept {
    fail_count_ = n;
    fail_with_ = e;
  }
  // Stored bytes of a page (header + payload), for tests that copy pages around.
  std::span<const std::byte> raw(const page_address& where) const noexcept {
    auto it = pages_.find(where);
    if (it == pages_.end()) return {};
    return it->second.bytes;
  }
  // Stores raw bytes under an address as they are (a misplaced or forged page, for tests).
  bool store_raw(const page_address& where, std::span<const std::byte> bytes) noexcept {
    try {
      auto it = pages_.find(where);
      if (it != pages_.end()) drop(it);
      make_room();
      lru_.push_front(where);
      pages_.emplace(where, entry{std::vector<std::byte>(bytes.begin(), bytes.end()), lru_.begin()});
      stored_bytes_ += bytes.size();
      return true;
    } catch (...) {
      return false;
    }
  }

 private:
  struct entry {
    std::vector<std::byte> bytes;  // header, then encoded payload
    std::list<page_address>::iterator lru;
  };
  struct pending {
    storage_batch* batch;
    std::size_t index;
    error status;
  };
  using map_type = std::unordered_map<page_address, entry>;

  void finish(storage_batch& batch, std::size_t i, error e) noexcept {
    if (cfg_.complete_on_poll) {
      try {
        deferred_.push_back({&batch, i, e});
        return;
      } catch (...) {  // no memory for deferral: complete now rather than lose the status
      }
    }
    batch.complete(i, e);
  }
  bool injected(error& e) noexcept {
    if (fail_count_ == 0) return false;
    --fail_count_;
    e = fail_with_;
    ++stats_.errors;
    return true;
  }
  void drop(typename map_type::iterator it) noexcept {
    stored_bytes_ -= it->second.bytes.size();
    lru_.erase(it->second.lru);
    pages_.erase(it);
  }
  void make_room() noexcept {
    while (pages_.size() >= cfg_.capacity_pages && !lru_.empty()) {
      drop(pages_.find(lru_.back()));
      ++stats_.evictions;
    }
  }

  error put_one(const page_write& w) noexcept {
    if (error e; injected(e)) return e;
    if (w.payload.size() != cfg_.page_bytes) {
      ++stats_.errors;
      return make_error(errc::invalid_argument);
    }
    try {
      std::vector<std::byte> bytes(page_header_bytes + codec_.max_encoded_bytes(w.payload.size()));
      const std::span<std::byte> body = std::span(bytes).subspan(page_header_bytes);
      const result<std::size_t> n = codec_.encode(w.payload, body);
      if (!n) {
        ++stats_.errors;
        return n.err();
      }
      bytes.resize(page_header_bytes + *n);
      const page_header h = make_page_header(cfg_.shape, w.where, w.tokens_fingerprint, Codec::id,
                                             std::span(bytes).subspan(page_header_bytes), w.payload.size(), ++sequence_);
      store_page_header(h, bytes);
      if (auto it = pages_.find(w.where); it != pages_.end()) drop(it);
      make_room();
      lru_.push_front(w.where);
      stored_bytes_ += bytes.size();
      pages_.emplace(w.where, entry{std::move(bytes), lru_.begin()});
    } catch (...) {
      ++stats_.errors;
      return make_error(errc::capacity_exhausted);
    }
    ++stats_.puts;
    stats_.bytes_written += w.payload.size();
    return {};
  }

  error get_one(const page_read& r) noexcept {
    ++stats_.gets;
    if (error e; injected(e)) {
      ++stats_.misses;
      return e;
    }
    auto it = pages_.find(r.where);
    if (it == pages_.end()) {
      ++stats_.misses;
      return make_error(errc::not_found);
    }
    const std::span<const std::byte> bytes = it->second.bytes;
    const page_header h = load_page_header(bytes);
    const page_expectation want{cfg_.shape.fingerprint(), r.where, r.tokens_fingerprint, Codec::id,
                                r.payload.size(), codec_.max_encoded_bytes(r.payload.size())};
    const std::span<const std::byte> body = bytes.subspan(std::min(page_header_bytes, bytes.size()));
    if (const error e = detail::verify_read(codec_, h, body, want, r.payload, stats_); e.code != errc::ok) {
      ++stats_.misses;
      drop(it);  // a damaged or foreign page is never served: forget it
      return e;
    }
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    ++stats_.hits;
    stats_.bytes_read += r.payload.size();
    return {};
  }

  memory_tier_config cfg_;
  [[no_unique_address]] Codec codec_{};
  map_type pages_;
  std::list<page_address> lru_;  // front: most recently used
  std::vector<pending> deferred_;
  std::size_t stored_bytes_ = 0;
  std::uint64_t sequence_ = 0;
  std::size_t fail_count_ = 0;
  error fail_with_{};
  storage_stats stats_{};
};

static_assert(storage_backend<memory_tier<>>);

}  // namespace kvtier
