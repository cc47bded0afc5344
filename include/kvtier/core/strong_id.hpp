#pragma once
// Distinct integer types for token ids, page ids and slot ids: an index into one pool cannot be
// handed to another pool, nor a slot used as a token, without an explicit conversion.
#include <compare>
#include <cstdint>
#include <functional>
#include <limits>

#include "kvtier/core/config.hpp"
#include "kvtier/core/tier.hpp"

namespace kvtier {

template <class Tag, class Rep>
struct strong_id {
  using rep_type = Rep;
  using tag_type = Tag;

  Rep raw = invalid_raw();

  static constexpr Rep invalid_raw() noexcept { return std::numeric_limits<Rep>::max(); }
  static constexpr strong_id invalid() noexcept { return strong_id{}; }

  constexpr strong_id() noexcept = default;
  KVTIER_HOST_DEVICE constexpr explicit strong_id(Rep r) noexcept : raw(r) {}

  KVTIER_HOST_DEVICE constexpr Rep value() const noexcept { return raw; }
  constexpr bool valid() const noexcept { return raw != invalid_raw(); }

  friend constexpr bool operator==(strong_id, strong_id) noexcept = default;
  friend constexpr auto operator<=>(strong_id, strong_id) noexcept = default;
};

struct token_tag {};
struct page_tag {};
template <class Tier>
struct slot_tag {};

// A vocabulary token id (what the tokenizer produced). 32 bits, as every engine stores them.
using token_id = strong_id<token_tag, std::int32_t>;
// A page of the prefix index (a node-local page number, not a memory location).
using page_id = strong_id<page_tag, std::uint32_t>;
// A fixed-size slot inside one tier's pool: slot_id<device_tier> and slot_id<host_tier> differ.
template <class Tier>
using slot_id = strong_id<slot_tag<Tier>, std::uint32_t>;
using device_slot = slot_id<device_tier>;
using host_slot = slot_id<host_tier>;

}  // namespace kvtier

template <class Tag, class Rep>
struct std::hash<kvtier::strong_id<Tag, Rep>> {
  std::size_t operator()(kvtier::strong_id<Tag, Rep> id) const noexcept {
    return std::hash<Rep>{}(id.raw);
  }
};
