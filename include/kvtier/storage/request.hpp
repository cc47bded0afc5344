#pragma once
// What a slow tier is asked to do: batches of page writes, reads, presence checks and erasures.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "kvtier/core/page_key.hpp"

namespace kvtier {

// Where a page lives on a slow tier: its namespace and its 128-bit key.
struct page_address {
  namespace_id ns{0};
  page_key key{};
  friend constexpr bool operator==(const page_address&, const page_address&) noexcept = default;
};

// One page to store. `payload` must stay valid until the batch is done.
struct page_write {
  page_address where;
  std::uint64_t tokens_fingerprint = 0;  // tokens_fingerprint() of the page's token ids
  std::span<const std::byte> payload;    // the page's bytes (page-first layout)
};

// One page to load into `payload` (exactly the page's size). `tokens_fingerprint` is what the
// caller expects; a page stored for other tokens is a miss. On any status but ok, `payload` holds
// unspecified bytes and must not be used.
struct page_read {
  page_address where;
  std::uint64_t tokens_fingerprint = 0;
  std::span<std::byte> payload;
};

}  // namespace kvtier

template <>
struct std::hash<kvtier::page_address> {
  std::size_t operator()(const kvtier::page_address& a) const noexcept {
    return std::hash<kvtier::page_key>{}(a.key) ^ std::size_t(a.ns.raw * 0xff51afd7ed558ccdull);
  }
};
