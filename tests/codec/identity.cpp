#include <boost/test/unit_test.hpp>

#include <array>
#include <cstddef>
#include <span>
#include <vector>

#include "kvtier/codec.hpp"

using namespace kvtier;

namespace {
// Has every member a codec needs but does not opt in: must not model page_codec.
struct unannounced_codec {
  static constexpr std::uint32_t id = 9;
  std::size_t max_encoded_bytes(std::size_t n) const noexcept { return n; }
  result<std::size_t> encode(std::span<const std::byte>, std::span<std::byte>) const noexcept { return 0; }
  result<std::size_t> decode(std::span<const std::byte>, std::span<std::byte>) const noexcept { return 0; }
};
// Opts in but its encode may throw: errors must be values.
struct throwing_codec {
  using kvtier_codec = codec_tag;
  static constexpr std::uint32_t id = 10;
  std::size_t max_encoded_bytes(std::size_t n) const noexcept { return n; }
  result<std::size_t> encode(std::span<const std::byte>, std::span<std::byte>) const { return 0; }
  result<std::size_t> decode(std::span<const std::byte>, std::span<std::byte>) const noexcept { return 0; }
};
// A complete, opted-in codec without an identity claim.
struct xor_codec {
  using kvtier_codec = codec_tag;
  static constexpr std::uint32_t id = 11;
  std::size_t max_encoded_bytes(std::size_t n) const noexcept { return n; }
  result<std::size_t> encode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    for (std::size_t i = 0; i < in.size(); ++i) out[i] = in[i] ^ std::byte{0x5a};
    return in.size();
  }
  result<std::size_t> decode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept { return encode(in, out); }
};
}  // namespace

static_assert(page_codec<identity_codec>);
static_assert(is_identity_codec_v<identity_codec>);
static_assert(page_codec<xor_codec>);
static_assert(!is_identity_codec_v<xor_codec>);
static_assert(!page_codec<unannounced_codec>);
static_assert(!page_codec<throwing_codec>);
static_assert(!page_codec<int>);

BOOST_AUTO_TEST_CASE(identity_round_trip) {
  std::vector<std::byte> page(4096), encoded(4096), back(4096);
  for (std::size_t i = 0; i < page.size(); ++i) page[i] = std::byte(i * 31 + 7);
  const identity_codec c;
  BOOST_TEST(c.max_encoded_bytes(page.size()) == page.size());
  auto n = c.encode(page, encoded);
  BOOST_REQUIRE(n.has_value());
  BOOST_TEST(*n == page.size());
  auto m = c.decode(std::span<const std::byte>(encoded).first(*n), back);
  BOOST_REQUIRE(m.has_value());
  BOOST_TEST(back == page);
}

BOOST_AUTO_TEST_CASE(identity_refuses_bad_sizes) {
  std::vector<std::byte> page(100), small(99), big(101);
  const identity_codec c;
  BOOST_TEST((c.encode(page, small).code() == errc::invalid_argument));
  BOOST_TEST((c.decode(page, big).code() == errc::corrupted));  // a page has exactly one size
}
