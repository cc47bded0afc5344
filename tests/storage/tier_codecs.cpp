// KV codecs inside slow tiers: a tier builds an int8/fp8 codec for its own pages, takes a cachegen
// codec with its profile, serves pages back through the codec (lossless: bit for bit), and refuses
// a codec that is unconfigured or built for other pages.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "kvtier/codec.hpp"
#include "kvtier/storage.hpp"
#include "kvtier/storage/file_tier.hpp"
#include "kvtier/testing/temp_dir.hpp"

using namespace kvtier;

namespace {

const kv_shape shape = kv_shape::mha(2, 2, 64, dtype::bf16);
constexpr std::size_t P = 16;

std::vector<std::byte> page_of(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01;
  std::vector<std::byte> p(shape.bytes_per_page(P));
  float x = 0;
  for (std::size_t i = 0; i < p.size() / 2; ++i) {
    x = 0.9f * x + 0.4f * n01(rng);
    detail::store_typed<dtype::bf16>(p.data(), i, x);
  }
  return p;
}

// Puts `pages` into `tier` and reads them back.
template <class Tier>
std::vector<std::vector<std::byte>> round_trip(Tier& tier, const std::vector<std::vector<std::byte>>& pages) {
  std::vector<page_write> writes;
  std::vector<page_read> reads;
  std::vector<std::vector<std::byte>> back(pages.size(), std::vector<std::byte>(pages[0].size()));
  for (std::size_t i = 0; i < pages.size(); ++i) {
    const page_address a{namespace_id{1}, page_key{7, i + 1}};
    writes.push_back({a, 1000 + i, pages[i]});
    reads.push_back({a, 1000 + i, back[i]});
  }
  storage_batch put, get;
  BOOST_REQUIRE(tier.put(writes, put).has_value());
  (void)tier.wait(put, std::chrono::seconds(10));
  BOOST_REQUIRE(put.all_ok());
  BOOST_REQUIRE(tier.get(reads, get).has_value());
  (void)tier.wait(get, std::chrono::seconds(10));
  BOOST_REQUIRE(get.all_ok());
  return back;
}

double rel_error(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size() / 2; ++i) {
    const double x = detail::load_typed<dtype::bf16>(a.data(), i), y = detail::load_typed<dtype::bf16>(b.data(), i);
    num += (x - y) * (x - y);
    den += x * x;
  }
  return std::sqrt(num / den);
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_tier_builds_its_8bit_codec_for_its_pages) {
  memory_tier<int8_codec> tier(memory_tier_config{shape, shape.bytes_per_page(P), 16});
  const std::vector<std::vector<std::byte>> pages{page_of(1), page_of(2)};
  const auto back = round_trip(tier, pages);
  for (std::size_t i = 0; i < pages.size(); ++i) {
    BOOST_TEST(rel_error(pages[i], back[i]) < 0.02);
    BOOST_TEST(rel_error(pages[i], back[i]) > 0.0);  // the bytes went through the int8 codec
  }
}

BOOST_AUTO_TEST_CASE(cachegen_lossless_through_the_file_tier_is_bit_exact) {
  testing::temp_dir dir;
  const kv_page_geometry g{shape, P};
  std::vector<std::vector<std::byte>> samples{page_of(10), page_of(11)};
  std::vector<std::span<const std::byte>> views(samples.begin(), samples.end());
  cachegen_options o;
  o.lossless = true;
  const file_tier_config cfg{dir.path, shape, shape.bytes_per_page(P), 16};
  file_tier<cachegen_codec> tier(cfg, cachegen_codec(g, cachegen_profile::fit(g, views, o)));
  const std::vector<std::vector<std::byte>> pages{page_of(20), page_of(21), page_of(22)};
  const auto back = round_trip(tier, pages);
  BOOST_TEST((back == pages));
}

BOOST_AUTO_TEST_CASE(a_tier_refuses_an_unconfigured_or_foreign_codec) {
  const memory_tier_config cfg{shape, shape.bytes_per_page(P), 4};
  BOOST_CHECK_THROW(memory_tier<cachegen_codec>{cfg}, config_error);  // no profile
  BOOST_CHECK_THROW((memory_tier<int8_codec>{cfg, int8_codec(kv_page_geometry{shape, 8})}), config_error);  // 8-token pages
  BOOST_CHECK_THROW((memory_tier<int8_codec>{memory_tier_config{shape, shape.bytes_per_page(P) + 2, 4}}), config_error);
}
