// fast_divmod (the kernels' index decoder) equals integer division for every divisor tried, on
// boundary numerators and random ones up to 2^32 - 1.
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <random>

#include "kvtier/transfer/detail/fast_divmod.hpp"

using kvtier::transfer::detail::fast_divmod;

BOOST_AUTO_TEST_CASE(matches_division) {
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<std::uint32_t> any;
  std::vector<std::uint32_t> divisors;
  for (std::uint32_t d = 1; d < 600; ++d) divisors.push_back(d);
  for (std::uint32_t s = 10; s < 32; ++s) divisors.insert(divisors.end(), {(1u << s) - 1, 1u << s, (1u << s) + 1});
  for (int i = 0; i < 200; ++i) divisors.push_back(any(rng) | 1u);
  divisors.push_back(0xffffffffu);
  for (std::uint32_t d : divisors) {
    const fast_divmod f(d);
    auto check = [&](std::uint32_t n) {
      std::uint32_t q = 0;
      const std::uint32_t r = f.divmod(n, q);
      if (q != n / d || r != n % d) BOOST_FAIL("fast_divmod(" << d << ") wrong for " << n);
    };
    for (std::uint32_t n : {0u, 1u, d - 1, d, d + 1, 2 * d - 1, 0xfffffffeu, 0xffffffffu}) check(n);
    for (int i = 0; i < 2000; ++i) check(any(rng));
  }
  BOOST_TEST(fast_divmod(7).div(100) == 14u);
}
