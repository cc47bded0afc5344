#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <thread>
#include <vector>

#include "kvtier/storage/file_tier.hpp"
#include "kvtier/testing/test_pages.hpp"
#include "kvtier/testing/temp_dir.hpp"

using namespace kvtier;
using namespace std::chrono_literals;

namespace {
constexpr std::size_t page = 64 * 1024;

file_tier_config config(const std::filesystem::path& dir, std::size_t capacity, unsigned qd = 8) {
  file_tier_config c{.directory = dir, .shape = shapes::llama3_8b(), .page_bytes = page, .capacity_pages = capacity};
  c.pages_per_file = 16;
  c.queue_depth = qd;
  return c;
}

template <class Tier>
void put_pages(Tier& t, std::uint64_t ns, std::size_t first, std::size_t n, std::uint64_t version = 0) {
  testing::page_buffer buf(n, page);
  auto w = testing::page_writes(buf, ns, first, n, version);
  storage_batch b;
  BOOST_REQUIRE(t.put(w, b).has_value());
  BOOST_REQUIRE(t.wait(b, 10s).has_value());
  BOOST_TEST(b.count(errc::ok) == n);
}

// Reads pages [first, first+n) into aligned (or, with offset 8, unaligned) buffers.
template <class Tier>
testing::ledger get_pages(Tier& t, std::uint64_t ns, std::size_t first, std::size_t n,
                       std::initializer_list<std::uint64_t> versions = {0}, std::size_t misalign = 0) {
  testing::page_buffer buf(n + 1, page);
  std::vector<page_read> r;
  for (std::size_t i = 0; i < n; ++i)
    r.push_back({testing::address_of(ns, first + i), testing::tokens_of(ns, first + i), buf[i].subspan(misalign).first(page - misalign)});
  std::vector<std::vector<std::byte>> unaligned;
  if (misalign != 0)  // unaligned destinations of the full page size
    for (std::size_t i = 0; i < n; ++i) {
      unaligned.emplace_back(page + 8);
      r[i].payload = std::span(unaligned.back()).subspan(misalign, page);
    }
  storage_batch b;
  BOOST_REQUIRE(t.get(r, b).has_value());
  BOOST_REQUIRE(t.wait(b, 10s).has_value());
  testing::ledger l;
  for (std::size_t i = 0; i < n; ++i) l.check(b[i], r[i].payload, ns, first + i, versions);
  return l;
}

// A codec that is not the identity, to exercise the staging path.
struct xor_codec {
  using kvtier_codec = codec_tag;
  static constexpr std::uint32_t id = 11;
  std::size_t max_encoded_bytes(std::size_t n) const noexcept { return n; }
  result<std::size_t> encode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (out.size() < in.size()) return make_error(errc::invalid_argument);
    for (std::size_t i = 0; i < in.size(); ++i) out[i] = in[i] ^ std::byte{0x5a};
    return in.size();
  }
  result<std::size_t> decode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (out.size() != in.size()) return make_error(errc::corrupted);
    return encode(in, out);
  }
};
}  // namespace

BOOST_AUTO_TEST_CASE(round_trip_on_each_io_path) {
  struct variant { bool uring, direct; };
  for (const variant v : {variant{true, true}, variant{true, false}, variant{false, true}, variant{false, false}}) {
    testing::temp_dir dir;
    auto c = config(dir.path, 64);
    c.use_uring = v.uring;
    c.use_direct = v.direct;
    file_tier<> t(c);
    BOOST_TEST_MESSAGE("requested uring=" << v.uring << " direct=" << v.direct << ": active " << to_string(t.io_path()));
    if (!v.uring) BOOST_TEST((t.io_path() == file_io_path::pread_direct || t.io_path() == file_io_path::pread_buffered));
    if (!v.direct) BOOST_TEST((t.io_path() == file_io_path::uring_buffered || t.io_path() == file_io_path::pread_buffered));
    put_pages(t, 1, 0, 40);
    auto l = get_pages(t, 1, 0, 40);
    BOOST_TEST(l.served == 40u);
    BOOST_TEST(l.wrong == 0u);
    auto u = get_pages(t, 1, 0, 8, {0}, 8);  // unaligned destinations go through a staging buffer
    BOOST_TEST(u.served == 8u);
    BOOST_TEST(u.wrong == 0u);
    BOOST_TEST(t.usage().pages == 40u);
    BOOST_TEST(t.usage().capacity_pages == 64u);
    BOOST_TEST(t.stats().hits == 48u);
  }
}

BOOST_AUTO_TEST_CASE(contains_erase_and_misses) {
  testing::temp_dir dir;
  file_tier<> t(config(dir.path, 32));
  put_pages(t, 1, 0, 4);
  std::vector<page_address> a{testing::address_of(1, 0), testing::address_of(1, 1), testing::address_of(1, 7), testing::address_of(2, 0)};
  storage_batch b;
  BOOST_REQUIRE(t.contains(a, b).has_value());
  BOOST_TEST((b[0].code == errc::ok));
  BOOST_TEST((b[2].code == errc::not_found));
  BOOST_TEST((b[3].code == errc::not_found));
  BOOST_REQUIRE(t.erase(std::span(a).first(3), b).has_value());
  BOOST_REQUIRE(t.wait(b, 5s).has_value());
  BOOST_TEST((b[0].code == errc::ok));
  BOOST_TEST((b[1].code == errc::ok));
  BOOST_TEST((b[2].code == errc::not_found));
  auto l = get_pages(t, 1, 0, 4);
  BOOST_TEST(l.served == 2u);
  BOOST_TEST(l.wrong == 0u);
  // Wrong-size requests are refused, not truncated.
  std::vector<std::byte> small(page - 4096);
  std::vector<page_write> w{{testing::address_of(1, 9), 0, small}};
  BOOST_REQUIRE(t.put(w, b).has_value());
  BOOST_REQUIRE(t.wait(b, 5s).has_value());
  BOOST_TEST((b[0].code == errc::invalid_argument));
  // A batch still in flight cannot be reused.
  storage_batch busy;
  BOOST_REQUIRE(busy.begin(1));
  BOOST_TEST((t.contains(a, busy).code() == errc::busy));
  busy.complete(0, {});
}

BOOST_AUTO_TEST_CASE(lru_eviction_when_full) {
  testing::temp_dir dir;
  file_tier<> t(config(dir.path, 8));
  put_pages(t, 1, 0, 8);
  auto hot = get_pages(t, 1, 0, 2);  // pages 0 and 1 become the most recently used
  BOOST_TEST(hot.served == 2u);
  put_pages(t, 1, 8, 4);             // evicts 2, 3, 4, 5
  std::vector<page_address> a;
  for (std::size_t i = 0; i < 12; ++i) a.push_back(testing::address_of(1, i));
  storage_batch b;
  BOOST_REQUIRE(t.contains(a, b).has_value());
  for (std::size_t i : {0, 1, 6, 7, 8, 9, 10, 11}) BOOST_TEST((b[i].code == errc::ok), "page " << i);
  for (std::size_t i : {2, 3, 4, 5}) BOOST_TEST((b[i].code == errc::not_found), "page " << i);
  BOOST_TEST(t.stats().evictions == 4u);
  BOOST_TEST(t.usage().pages == 8u);
  auto l = get_pages(t, 1, 6, 6);
  BOOST_TEST(l.served == 6u);
  BOOST_TEST(l.wrong == 0u);
}

BOOST_AUTO_TEST_CASE(restart_finds_the_pages) {
  testing::temp_dir dir;
  {
    file_tier<> t(config(dir.path, 48, 4));
    put_pages(t, 1, 0, 30);
    put_pages(t, 1, 0, 5, /*version=*/1);  // newer copies of pages 0..4
    std::vector<page_address> gone{testing::address_of(1, 29)};
    storage_batch b;
    BOOST_REQUIRE(t.erase(gone, b).has_value());
    BOOST_REQUIRE(t.wait(b, 5s).has_value());
    BOOST_TEST(b.all_ok());
  }
  file_tier<> t(config(dir.path, 48, 4));
  BOOST_TEST(t.stats().recovered == 29u);
  BOOST_TEST(t.usage().pages == 29u);
  auto fresh = get_pages(t, 1, 0, 5, {1});
  BOOST_TEST(fresh.served == 5u);  // the newest copy wins
  auto old = get_pages(t, 1, 5, 25);
  BOOST_TEST(old.served == 24u);   // page 29 was erased before the restart
  BOOST_TEST(old.wrong + fresh.wrong == 0u);
  put_pages(t, 1, 100, 10);        // recovered slots and free slots are both reused correctly
  auto more = get_pages(t, 1, 100, 10);
  BOOST_TEST(more.served == 10u);
}

BOOST_AUTO_TEST_CASE(codec_other_than_identity) {
  testing::temp_dir dir;
  {
    file_tier<xor_codec> t(config(dir.path, 16));
    put_pages(t, 3, 0, 10);
    auto l = get_pages(t, 3, 0, 10);
    BOOST_TEST(l.served == 10u);
  }
  {
    file_tier<xor_codec> again(config(dir.path, 16));
    BOOST_TEST(again.stats().recovered == 10u);
    auto l = get_pages(again, 3, 0, 10);
    BOOST_TEST(l.served == 10u);
    BOOST_TEST(l.wrong == 0u);
  }  // closed first: one tier per directory at a time
  file_tier<> identity(config(dir.path, 16));  // pages of another codec are not served as identity
  BOOST_TEST(identity.stats().recovered == 0u);
  BOOST_TEST(identity.stats().foreign == 10u);
}

BOOST_AUTO_TEST_CASE(bad_configuration_throws) {
  testing::temp_dir dir;
  auto c = config(dir.path, 16);
  c.page_bytes = 0;
  BOOST_CHECK_THROW(file_tier<>{c}, config_error);
  c = config(dir.path, 0);
  BOOST_CHECK_THROW(file_tier<>{c}, config_error);
  c = config(dir.path, 16, 0);
  BOOST_CHECK_THROW(file_tier<>{c}, config_error);
  { file_tier<> t(config(dir.path, 16)); }
  c = config(dir.path, 16);
  c.page_bytes = 2 * page;  // the directory is laid out for another slot size
  BOOST_CHECK_THROW(file_tier<>{c}, config_error);
}

BOOST_AUTO_TEST_CASE(readme_taste) {
  testing::temp_dir dir;
  // clang-format off
  file_tier<> disk({.directory = dir.path, .shape = shapes::llama3_8b(), .page_bytes = 2 << 20, .capacity_pages = 64});
  std::vector<std::byte> page(disk.page_bytes(), std::byte{42}), back(disk.page_bytes());
  const page_address where{namespace_id{1}, page_key{0x1234, 0x5678}};   // namespace + 128-bit key
  const std::uint64_t tokens = tokens_fingerprint(std::vector<token_id>(16, token_id{7}));
  const page_write w[] = {{where, tokens, page}};
  storage_batch batch;                                   // caller-owned completion of one batch
  if (auto r = disk.put(w, batch); !r) BOOST_FAIL(r.err().message());   // refused (busy)
  (void)disk.wait(batch, std::chrono::seconds(1));       // or: while (!batch.done()) disk.poll();
  BOOST_TEST((batch[0].code == errc::ok));               // or capacity_exhausted, io_error, ...
  const page_read r[] = {{where, tokens, back}};
  (void)disk.get(r, batch);
  (void)disk.wait(batch, std::chrono::seconds(1));
  BOOST_TEST((batch[0].code == errc::ok));               // exactly the bytes written, or a miss
  BOOST_TEST(back == page);
  BOOST_TEST_MESSAGE("I/O path: " << to_string(disk.io_path()));   // e.g. "io_uring + O_DIRECT"
  // clang-format on
}

BOOST_AUTO_TEST_CASE(poll_alone_completes_batches) {
  // A caller that never waits (an event loop) still sees every request complete.
  for (const bool uring : {true, false}) {
    testing::temp_dir dir;
    auto c = config(dir.path, 32, 4);
    c.use_uring = uring;
    file_tier<> t(c);
    testing::page_buffer buf(16, page);
    auto w = testing::page_writes(buf, 4, 0, 16);
    storage_batch b;
    BOOST_REQUIRE(t.put(w, b).has_value());
    for (int i = 0; i < 100'000 && !b.done(); ++i) {  // bounded: at most ~10 s
      t.poll();
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    BOOST_TEST(b.all_ok());
    auto r = testing::page_reads(buf, 4, 0, 16);
    std::memset(buf.raw.get(), 0, 16 * page);
    BOOST_REQUIRE(t.get(r, b).has_value());
    for (int i = 0; i < 100'000 && !b.done(); ++i) {
      t.poll();
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    testing::ledger l;
    for (std::size_t i = 0; i < 16; ++i) l.check(b[i], buf[i], 4, i);
    BOOST_TEST(l.served == 16u);
    BOOST_TEST(l.wrong == 0u);
  }
}
