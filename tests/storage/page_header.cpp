#include <boost/test/unit_test.hpp>

#include <cstring>
#include <unordered_set>
#include <vector>

#include "kvtier/storage.hpp"
#include "kvtier/testing/test_pages.hpp"

using namespace kvtier;

namespace {
constexpr kv_shape shape = shapes::llama3_8b();
struct sealed_page {
  std::vector<std::byte> payload = std::vector<std::byte>(4096);
  page_address where = testing::address_of(1, 2);
  std::uint64_t tokens = testing::tokens_of(1, 2);
  page_header header;
  sealed_page() {
    testing::fill_page(payload, 1, 2);
    header = make_page_header(shape, where, tokens, identity_codec::id, payload, payload.size(), 42);
  }
  page_expectation expect() const { return {shape.fingerprint(), where, tokens, identity_codec::id, payload.size(), payload.size()}; }
};
}  // namespace

BOOST_AUTO_TEST_CASE(intact_page_verifies) {
  const sealed_page p;
  BOOST_TEST(header_intact(p.header));
  BOOST_TEST((verify_page(p.header, p.payload, p.expect()) == page_verdict::intact));
  BOOST_TEST((p.header.address() == p.where));
  BOOST_TEST(p.header.sequence == 42u);
  // The header survives a trip through raw bytes unchanged.
  std::vector<std::byte> raw(page_header_bytes);
  store_page_header(p.header, raw);
  BOOST_TEST((verify_page(load_page_header(raw), p.payload, p.expect()) == page_verdict::intact));
}

BOOST_AUTO_TEST_CASE(every_header_bit_flip_is_detected) {
  const sealed_page p;
  std::size_t tried = 0, detected = 0;
  for (std::size_t bit = 0; bit < page_header_bytes * 8; ++bit) {
    std::vector<std::byte> raw(page_header_bytes);
    store_page_header(p.header, raw);
    raw[bit / 8] ^= std::byte(1u << (bit % 8));
    ++tried;
    if (verify_page(load_page_header(raw), p.payload, p.expect()) == page_verdict::corrupted) ++detected;
  }
  BOOST_TEST_MESSAGE("header bit flips tried " << tried << ", detected " << detected);
  BOOST_TEST(tried == page_header_bytes * 8);
  BOOST_TEST(detected == tried);
}

BOOST_AUTO_TEST_CASE(every_payload_bit_flip_is_detected) {
  const sealed_page p;
  std::size_t tried = 0, detected = 0;
  for (std::size_t bit = 0; bit < p.payload.size() * 8; bit += 3) {
    std::vector<std::byte> bad = p.payload;
    bad[bit / 8] ^= std::byte(1u << (bit % 8));
    ++tried;
    if (verify_page(p.header, bad, p.expect()) == page_verdict::corrupted) ++detected;
  }
  BOOST_TEST_MESSAGE("payload bit flips tried " << tried << ", detected " << detected);
  BOOST_TEST(detected == tried);
}

BOOST_AUTO_TEST_CASE(truncated_or_extended_payload_is_corrupted) {
  const sealed_page p;
  std::vector<std::byte> shorter(p.payload.begin(), p.payload.end() - 1);
  BOOST_TEST((verify_page(p.header, shorter, p.expect()) == page_verdict::corrupted));
  page_expectation small = p.expect();
  small.max_payload_bytes = p.payload.size() - 1;  // longer than the codec could ever produce
  BOOST_TEST((verify_page(p.header, p.payload, small) == page_verdict::corrupted));
}

BOOST_AUTO_TEST_CASE(someone_elses_page_is_foreign) {
  const sealed_page p;
  auto with = [&](auto change) {
    page_expectation e = p.expect();
    change(e);
    return verify_page(p.header, p.payload, e);
  };
  // Same bytes per page, another element type: the fingerprint tells them apart.
  const kv_shape fp16 = kv_shape::mha(32, 8, 128, dtype::fp16);
  BOOST_TEST(fp16.bytes_per_token() == shape.bytes_per_token());
  BOOST_TEST((with([&](page_expectation& e) { e.shape_fingerprint = fp16.fingerprint(); }) == page_verdict::foreign));
  BOOST_TEST((with([](page_expectation& e) { e.where.ns = namespace_id{2}; }) == page_verdict::foreign));
  BOOST_TEST((with([](page_expectation& e) { e.where.key.lo ^= 1; }) == page_verdict::foreign));
  BOOST_TEST((with([](page_expectation& e) { e.where.key.hi ^= 1; }) == page_verdict::foreign));
  BOOST_TEST((with([](page_expectation& e) { e.tokens_fingerprint ^= 1; }) == page_verdict::foreign));
  BOOST_TEST((with([](page_expectation& e) { e.codec_id = 7; }) == page_verdict::foreign));
  BOOST_TEST((with([](page_expectation& e) { e.page_bytes = 8192; }) == page_verdict::foreign));
}

BOOST_AUTO_TEST_CASE(tokens_fingerprint_separates_token_lists) {
  std::vector<token_id> a{token_id{1}, token_id{2}, token_id{3}};
  std::vector<token_id> b{token_id{1}, token_id{3}, token_id{2}};
  BOOST_TEST(tokens_fingerprint(a) == tokens_fingerprint(a));
  BOOST_TEST(tokens_fingerprint(a) != tokens_fingerprint(b));
  BOOST_TEST(tokens_fingerprint(std::span(a).first(2)) != tokens_fingerprint(a));
}

BOOST_AUTO_TEST_CASE(page_keys_compare_and_hash) {
  const page_key a{1, 2}, b{1, 2}, c{2, 1};
  BOOST_TEST((a == b));
  BOOST_TEST((a < c));
  std::unordered_set<page_key> keys{a, b, c};
  BOOST_TEST(keys.size() == 2u);
  std::unordered_set<page_address> addrs{{namespace_id{1}, a}, {namespace_id{2}, a}, {namespace_id{1}, a}};
  BOOST_TEST(addrs.size() == 2u);
}
