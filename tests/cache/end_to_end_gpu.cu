// End to end on the GPU: the same multi-turn workload as cache.end_to_end, through the real device
// pool (device_layer_pool), the mapped pinned host pool and kvtier's copy kernels; every cached
// page is read back from device memory and compared byte for byte with reference_kv.
#include <boost/test/unit_test.hpp>

#include <cuda_runtime.h>

#include <vector>

#include "kvtier/cache.hpp"
#include "kvtier/cache.cuh"
#include "kvtier/testing/e2e_setup.hpp"
#include "kvtier/testing/simulated_engine.hpp"
#include "kvtier/testing/simulated_engine_gpu.cuh"

using namespace kvtier;
using namespace kvtier::testing;

// The builder picks gpu_copy for a device pool by itself.
static_assert(std::same_as<gpu_cache_builder<page_size<16>>::copy_type, transfer::gpu_copy>);
static_assert(std::same_as<cache_builder<page_size<16>, device_memory<layout::layer_first, memory::device_layer_pool>,
                                         host_memory<layout::page_first, memory::pinned_host_pool>>::copy_type,
                           transfer::gpu_copy>);

BOOST_AUTO_TEST_CASE(thousands_of_requests_through_gpu_host_and_a_slow_tier) {
  using cache_type = gpu_cache_builder<page_size<P>, slow_tiers<slow_tier<memory_tier>>>::cache_type;
  cache_type::config cfg{small_shape, page_size<P>{}};
  cfg.device_pages = 160;
  cfg.host_pages = 320;
  cache_type cache(cfg,
                   std::make_unique<memory_tier<>>(memory_tier_config{small_shape, small_shape.bytes_per_page(P), 100000, true}));
  chat_workload work(workload(500));
  const reference_kv gen(small_shape, 11);
  transfer::gpu_stream stream;
  const auto r = run_chat_workload<cuda_device_access>(cache, work, gen, stream);
  cache.drain();
  const cache_stats& s = cache.stats();
  BOOST_TEST_MESSAGE("gpu: " << r.requests << " requests, " << r.pages_checked << " pages checked, " << r.rows_mismatched
                             << " rows wrong; loaded " << s.pages_loaded << " backed up " << s.pages_backed_up
                             << " fetched " << s.pages_fetched[2]);
  BOOST_TEST(r.requests >= 2000u);
  BOOST_TEST(r.rows_mismatched == 0u);
  BOOST_TEST(r.errors == 0u);
  BOOST_TEST(s.pages_loaded > 0u);
  BOOST_TEST(s.pages_backed_up > 0u);
  BOOST_TEST(s.pages_fetched[2] > 0u);
  BOOST_TEST(r.pages_checked > 10000u);
}
