#pragma once
// A page codec sits between a page's bytes and a slow tier: encode on the way down, decode on the
// way up, with a bound on the encoded size so tiers can size their slots.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "kvtier/core/error.hpp"

namespace kvtier {

// Opt-in tag: a codec declares `using kvtier_codec = codec_tag;`.
struct codec_tag {};

template <class T>
inline constexpr bool enable_page_codec =
    requires { requires std::is_same_v<typename T::kvtier_codec, codec_tag>; };

template <class C>
concept page_codec =
    enable_page_codec<C> &&
    std::is_nothrow_default_constructible_v<C> &&
    requires { { C::id } -> std::convertible_to<std::uint32_t>; } &&
    requires(const C& c, std::size_t n, std::span<const std::byte> in, std::span<std::byte> out) {
      { c.max_encoded_bytes(n) } noexcept -> std::same_as<std::size_t>;
      { c.encode(in, out) } noexcept -> std::same_as<result<std::size_t>>;
      { c.decode(in, out) } noexcept -> std::same_as<result<std::size_t>>;
    };

// True for codecs whose encoded bytes are the page bytes: tiers may then move pages without a copy.
template <page_codec C>
inline constexpr bool is_identity_codec_v = requires { requires C::is_identity; };

}  // namespace kvtier
