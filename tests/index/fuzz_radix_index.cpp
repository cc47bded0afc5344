// libFuzzer target: fuzzer bytes drive the same model-vs-index driver as index.reference_model.
// Build and run with tests/index/run_fuzz.sh (clang++ -fsanitize=fuzzer,address,undefined);
// not part of the default build.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "index/reference_model.hpp"

using namespace kvtier;

namespace {

template <class Index>
void drive(Index& idx, const std::uint8_t* data, std::size_t size) {
  testing::byte_choices choices(data, size);
  testing::model_driver<Index> driver(idx, choices);
  try {
    for (int steps = 0; !choices.exhausted() && steps < 4096; ++steps) (void)driver.step();
    driver.finish();
  } catch (const testing::model_mismatch& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t config = data[0] % 6;
  ++data;
  --size;
  switch (config) {
    case 0: { radix_index<lru, 1> idx; drive(idx, data, size); break; }
    case 1: { radix_index<lru, 16> idx; drive(idx, data, size); break; }
    case 2: { radix_index<lfu_aging, 64> idx; drive(idx, data, size); break; }
    case 3: { radix_index<priority_lru, 2> idx; drive(idx, data, size); break; }
    case 4: { radix_index<look_ahead<lru>, 4> idx; drive(idx, data, size); break; }
    default: { radix_index<lru> idx(page_size<>(3)); drive(idx, data, size); break; }
  }
  return 0;
}
