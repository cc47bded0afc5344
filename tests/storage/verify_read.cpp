// Unit test of detail::verify_read, the one check of a page read back that the file, Redis and
// memory tiers share: intact pages are served (and decoded unless already in place), damaged and
// foreign ones are misses counted in the tier's stats.
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <ostream>
#include <vector>

#include "kvtier/codec/identity.hpp"
#include "kvtier/storage/detail/verify_read.hpp"

using namespace kvtier;

namespace kvtier {
std::ostream& operator<<(std::ostream& os, const error& e) { return os << e.message(); }
}  // namespace kvtier

namespace {
// A codec whose encoded bytes differ from the page (every byte xor 0x5a): decoding must happen.
struct xor_codec {
  using kvtier_codec = codec_tag;
  static constexpr std::uint32_t id = 0x584f52;
  std::size_t max_encoded_bytes(std::size_t n) const noexcept { return n; }
  result<std::size_t> encode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    for (std::size_t i = 0; i < in.size(); ++i) out[i] = in[i] ^ std::byte{0x5a};
    return in.size();
  }
  result<std::size_t> decode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (in.size() != out.size()) return make_error(errc::corrupted);
    return encode(in, out);
  }
};

const kv_shape shape = shapes::llama3_8b();
const page_address where{namespace_id{3}, page_key{1, 2}};

template <class Codec>
struct stored {
  explicit stored(std::size_t n) : page(n), encoded(n) {
    for (std::size_t i = 0; i < n; ++i) page[i] = std::byte(i * 31 + 7);
    (void)Codec{}.encode(page, encoded);
    header = make_page_header(shape, where, 42, Codec::id, encoded, n, 1);
    want = {shape.fingerprint(), where, 42, Codec::id, n, n};
  }
  std::vector<std::byte> page, encoded;
  page_header header;
  page_expectation want;
};
}  // namespace

BOOST_AUTO_TEST_CASE(intact_page_is_decoded_into_the_callers_page) {
  stored<xor_codec> s(256);
  std::vector<std::byte> out(256, std::byte{0xee});
  storage_stats st;
  BOOST_TEST(detail::verify_read(xor_codec{}, s.header, s.encoded, s.want, out, st) == error{});
  BOOST_TEST(std::memcmp(out.data(), s.page.data(), 256) == 0);
  BOOST_TEST(st.corrupted + st.foreign == 0u);
}

BOOST_AUTO_TEST_CASE(payload_already_in_place_is_not_copied) {
  stored<identity_codec> s(256);
  storage_stats st;
  // The payload is the caller's page (a zero-copy read): verified where it lies.
  BOOST_TEST(detail::verify_read(identity_codec{}, s.header, s.encoded, s.want, s.encoded, st) == error{});
  std::vector<std::byte> out(256);
  BOOST_TEST(detail::verify_read(identity_codec{}, s.header, s.encoded, s.want, out, st) == error{});
  BOOST_TEST(out == s.page);
}

BOOST_AUTO_TEST_CASE(damage_is_corrupted_and_counted) {
  stored<identity_codec> s(256);
  std::vector<std::byte> out(256);
  storage_stats st;
  s.encoded[100] ^= std::byte{1};
  BOOST_TEST(detail::verify_read(identity_codec{}, s.header, s.encoded, s.want, out, st) == make_error(errc::corrupted));
  s.encoded[100] ^= std::byte{1};
  BOOST_TEST(detail::verify_read(identity_codec{}, s.header, std::span(s.encoded).first(255), s.want, out, st) ==
             make_error(errc::corrupted));  // truncated
  page_header h = s.header;
  h.sequence ^= 1;
  BOOST_TEST(detail::verify_read(identity_codec{}, h, s.encoded, s.want, out, st) == make_error(errc::corrupted));
  BOOST_TEST(st.corrupted == 3u);
  BOOST_TEST(st.foreign == 0u);
}

BOOST_AUTO_TEST_CASE(someone_elses_page_is_foreign_and_counted) {
  stored<identity_codec> s(256);
  std::vector<std::byte> out(256);
  storage_stats st;
  page_expectation other_tokens = s.want;
  other_tokens.tokens_fingerprint = 43;
  page_expectation other_codec = s.want;
  other_codec.codec_id = xor_codec::id;
  BOOST_TEST(detail::verify_read(identity_codec{}, s.header, s.encoded, other_tokens, out, st) == make_error(errc::corrupted));
  BOOST_TEST(detail::verify_read(identity_codec{}, s.header, s.encoded, other_codec, out, st) == make_error(errc::corrupted));
  BOOST_TEST(st.foreign == 2u);
  BOOST_TEST(st.corrupted == 0u);
}
