// kvtier-serve on a GPU: the CUDA backend (bf16) at a named shape (default llama3-8b) with synthetic
// weights generated on the device, kvtier's GPU composition (device_layer_pool, pinned host pool,
// gpu_copy). See docs/serving.md and scripts/serving-gpu-sweep.
#include <cuda_runtime.h>

#include <cstdio>
#include <exception>
#include <string>

#include "driver.hpp"
#include "kvtier/cache.cuh"
#include "kvtier_engine/cuda/cuda_backend.cuh"
#ifdef KVTIER_SERVE_FILE
#  include "kvtier/storage/file_tier.hpp"
#endif

namespace kvtier_serve {

// cuda_backend with the process's own cuda_options, set once in run() before any engine is built:
// --batch-invariant 0 (cuBLAS's heuristics and occupancy-driven attention splits: the A side of the
// batch-invariance cost measurement) and --decode-split-keys N (the batch-invariant decode attention
// split at N keys; a fixed split length keeps decode rows batch-invariant at any value).
struct cuda_backend_tuned : kvtier_engine::cuda::cuda_backend {
  cuda_backend_tuned(const model_config& m, const model_weights& w, const kv_pool& pool, backend_options o)
      : cuda_backend(m, w, pool, o, options()) {}
  static kvtier_engine::cuda::cuda_options& options() {
    static kvtier_engine::cuda::cuda_options c;
    return c;
  }
};

struct cuda_traits : traits_base {
  static constexpr std::size_t page_tokens = 16;
  using pages = kvtier::page_size<page_tokens>;
  using device_only_cache =
      kvtier::gpu_cache_builder<pages, kvtier::slow_tiers<>, kvtier::write_policies<no_backup, kvtier::auto_choice>>::cache_type;
  using host_cache = kvtier::gpu_cache_builder<pages>::cache_type;
#ifdef KVTIER_SERVE_FILE
  static constexpr bool has_file_tier = true;
  using file_tier_type = kvtier::file_tier<>;
  using file_cache = kvtier::gpu_cache_builder<pages, kvtier::slow_tiers<kvtier::slow_tier<kvtier::file_tier>>>::cache_type;
  kvtier::file_tier_config file_config(const std::filesystem::path& dir, std::size_t capacity) const {
    const kvtier::kv_shape shape = m.kv_shape(kvtier::dtype::bf16);
    return {dir, shape, shape.bytes_per_page(page_tokens), capacity, 256, 64, true, true};  // O_DIRECT
  }
#else
  static constexpr bool has_file_tier = false;
#endif

  explicit cuda_traits(const options& o) {
    if (!o.model_dir.empty()) throw kvtier::config_error("kvtier-serve-cuda: synthetic shapes only (--shape NAME)");
    m = shapes::by_name(o.shape.empty() ? "llama3-8b" : o.shape);
    if (o.context) m.seq_len = o.context;
    w = model_weights::synthetic(m, o.seed, /*materialize=*/false);  // generated on the device
    bo = backend_options{precision::bf16, 0, 0};
  }
  precision run_precision() const { return precision::bf16; }
  std::string backend_name() const { return "cuda-bf16"; }
  std::string device_name() const {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "no CUDA device";
    return p.name;
  }
  kvtier::dtype kv_type() const { return kvtier::dtype::bf16; }

  kvtier::result<run_result> run(cache_mode mode, const options& o, const workload& wl) {
    if (!o.batch_invariant || o.decode_split_keys != 0) {
      kvtier_engine::cuda::cuda_options& c = cuda_backend_tuned::options();
      c.batch_invariant = o.batch_invariant;
      if (o.decode_split_keys != 0) c.decode_split_keys = int(o.decode_split_keys);
      return run_mode<cuda_backend_tuned>(*this, mode, o, wl);
    }
    return run_mode<kvtier_engine::cuda::cuda_backend>(*this, mode, o, wl);
  }
  static constexpr std::size_t file_bandwidth_pages = 256;  // the file tier's bandwidth: pages in one batch
};

}  // namespace kvtier_serve

int main(int argc, char** argv) {
  kvtier_serve::options defaults;
  defaults.shape = "llama3-8b";
  defaults.context = 34816;
  defaults.wl.longdoc = {.documents = 12, .questions = 4, .doc_min = 8192, .doc_max = 24576, .question_tokens = 32,
                         .answer_tokens = 32, .rate = 1};
  defaults.wl.trace.path = KVTIER_SERVE_DEFAULT_TRACE;
  defaults.server.token_budget = 8192;
  defaults.server.chunk_tokens = 4096;
  defaults.server.max_batch = 32;
  defaults.device_pages = 4096;   // 8 GiB of llama3-8b bf16 KV (2 MiB a page)
  defaults.host_pages = 16384;    // 32 GiB pinned
  defaults.disk_pages = 16384;
  return kvtier_serve::serve_main<kvtier_serve::cuda_traits>(argc, argv, defaults, "kvtier-serve-cuda");
}
