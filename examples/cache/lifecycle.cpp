// The request lifecycle of kvtier's hierarchical cache, as an engine calls it (CPU build: host
// memory stands in for the device). Quoted in README.md and docs/cache.md between [lifecycle] marks.
#include <cstdio>
#include <memory>
#include <vector>

#include <kvtier/cache.hpp>

int main() {
  using namespace kvtier;
  // [lifecycle]
  // One type, composed at compile time: 16-token pages, device → host → one slow tier; the rest auto.
  using cache_type = cache_builder<page_size<16>, device_memory<>, host_memory<>,
                                   slow_tiers<slow_tier<memory_tier>>>::cache_type;
  const kv_shape shape = kv_shape::mha(32, 8, 128, dtype::bf16);                // Llama-3-8B
  cache_type cache({shape, {}, /*device_pages=*/256, /*host_pages=*/1024},       // capacities: run time
                   std::make_unique<memory_tier<>>(memory_tier_config{shape, shape.bytes_per_page(16), 4096}));
  cache_type::stream_type stream;  // the engine's copy stream (a CUDA stream on a GPU)

  std::vector<token_id> prompt(1000, token_id{42});
  cache_type::lease_type lease;
  (void)cache.lookup(namespace_id{1}, prompt, lease);    // cached prefix, locked; never waits
  cache.prefetch(lease);                                 // slow tier → host, in the background
  (void)cache.load(lease, stream);                       // scheduled: host → device, layer by layer
  for (std::size_t layer = 0; layer < shape.layers(); ++layer) {
    (void)cache.wait_layer(lease, layer);                // just before attention of this layer
    // ... attention over lease.device_slots() (the cached prefix) ...
  }
  const std::size_t first = lease.cached_pages(), whole = prompt.size() / 16;
  std::vector<device_slot> fresh(whole - first);
  (void)cache.allocate(fresh);                           // slots for the KV the engine computes
  // ... prefill tokens [lease.cached_tokens(), prompt.size()) into `fresh` ...
  (void)cache.commit(lease, prompt, fresh);              // whole new pages enter the index
  (void)cache.release(lease);                            // unlock
  cache.poll();                                          // once per scheduler step: completions
  // [lifecycle]
  std::printf("cached %zu of %zu tokens; %zu pages on the device, %zu to compute next time\n", lease.cached_tokens(),
              prompt.size(), cache.index().pages_in(tier_id::device), prompt.size() % 16);
  (void)cache.lookup(namespace_id{1}, prompt, lease);
  std::printf("second lookup: %zu tokens cached, %zu to compute\n", lease.cached_tokens(), lease.tokens_to_compute());
  (void)cache.release(lease);
  return lease.cached_tokens() == 992 ? 0 : 1;
}
