// host_mapping: mmap'd memory kvtier maps itself, with the 2 MiB huge-page path and its fallback.
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstring>
#include <utility>

#include "kvtier/memory/host_mapping.hpp"

using namespace kvtier;
using memory::host_mapping;
using memory::huge_page_mode;

BOOST_AUTO_TEST_CASE(plain_mapping_is_zeroed_and_writable) {
  host_mapping m(10'000);
  BOOST_TEST(m.size() == 10'000u);
  BOOST_TEST((m.mode() == huge_page_mode::none));
  BOOST_TEST(reinterpret_cast<std::uintptr_t>(m.data()) % 4096 == 0u);
  for (std::size_t i = 0; i < m.size(); ++i) BOOST_REQUIRE(int(m.data()[i]) == 0);
  std::memset(m.data(), 0x5a, m.size());
  BOOST_TEST(int(m.data()[9'999]) == 0x5a);
}

BOOST_AUTO_TEST_CASE(huge_mapping_is_2mib_aligned_and_rounded) {
  host_mapping m(3 * memory::huge_page_bytes + 1, /*huge_pages=*/true);
  BOOST_TEST(m.size() == 4 * memory::huge_page_bytes);
  BOOST_TEST(reinterpret_cast<std::uintptr_t>(m.data()) % memory::huge_page_bytes == 0u);
  // hugetlb where pages are reserved, otherwise transparent huge pages (or none without THP).
  BOOST_TEST_MESSAGE("huge page mode here: " << memory::to_string(m.mode()));
  std::memset(m.data(), 0xa5, m.size());
  BOOST_TEST(int(m.data()[m.size() - 1]) == 0xa5);
}

BOOST_AUTO_TEST_CASE(moves_transfer_the_mapping) {
  host_mapping a(4096);
  std::byte* p = a.data();
  host_mapping b(std::move(a));
  BOOST_TEST(b.data() == p);
  BOOST_TEST(a.data() == nullptr);  // NOLINT: moved-from is empty
  BOOST_TEST(a.size() == 0u);
  host_mapping c(8192);
  c = std::move(b);
  BOOST_TEST(c.data() == p);
  BOOST_TEST(c.size() == 4096u);
}

BOOST_AUTO_TEST_CASE(zero_bytes_is_a_config_error) {
  BOOST_CHECK_THROW(host_mapping(0), config_error);
  BOOST_CHECK_THROW(host_mapping(SIZE_MAX - 100, true), config_error);
}
