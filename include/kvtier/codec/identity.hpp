#pragma once
// The identity codec: encoded bytes are the page bytes (codec id 0).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "kvtier/codec/concepts.hpp"
#include "kvtier/core/error.hpp"

namespace kvtier {

struct identity_codec {
  using kvtier_codec = codec_tag;
  static constexpr std::uint32_t id = 0;
  static constexpr bool is_identity = true;

  constexpr std::size_t max_encoded_bytes(std::size_t n) const noexcept { return n; }

  // Copies `in` to the front of `out`; returns the bytes written.
  result<std::size_t> encode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (out.size() < in.size()) return make_error(errc::invalid_argument);
    if (!in.empty() && in.data() != out.data()) std::memmove(out.data(), in.data(), in.size());
    return in.size();
  }
  // Copies `in` to `out`; the sizes must match exactly (a page has one size).
  result<std::size_t> decode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (out.size() != in.size()) return make_error(errc::corrupted);
    if (!in.empty() && in.data() != out.data()) std::memmove(out.data(), in.data(), in.size());
    return in.size();
  }
};

static_assert(page_codec<identity_codec>);

}  // namespace kvtier
