#pragma once
// splitmix64 (Steele, Lea, Flood 2014): the one 64-bit mixer of the test data. reference_kv's
// rows and the Mooncake trace's block tokens are both streams of it.
#include <cstdint>

namespace kvtier::testing {

// The splitmix64 output for state x: x advanced by the golden-ratio step, then mixed.
constexpr std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace kvtier::testing
