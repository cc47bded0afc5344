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

struct cuda_traits {
  static constexpr std::size_t page_tokens = 16;
#ifdef KVTIER_SERVE_FILE
  static constexpr bool has_file_tier = true;
#else
  static constexpr bool has_file_tier = false;
#endif
  using backend = kvtier_engine::cuda::cuda_backend;
  using pages = kvtier::page_size<page_tokens>;
  using device_only_cache =
      kvtier::gpu_cache_builder<pages, kvtier::slow_tiers<>, kvtier::write_policies<no_backup, kvtier::auto_choice>>::cache_type;
  using host_cache = kvtier::gpu_cache_builder<pages>::cache_type;

  model_weights w;
  model_config m;
  backend_options bo;

  explicit cuda_traits(const options& o) {
    if (!o.model_dir.empty()) throw kvtier::config_error("kvtier-serve-cuda: synthetic shapes only (--shape NAME)");
    m = shapes::by_name(o.shape.empty() ? "llama3-8b" : o.shape);
    if (o.context) m.seq_len = o.context;
    w = model_weights::synthetic(m, o.seed, /*materialize=*/false);  // generated on the device
    bo = backend_options{precision::bf16, 0, 0};
  }
  const model_config& config() const { return m; }
  std::string backend_name() const { return "cuda-bf16"; }
  std::string device_name() const {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "no CUDA device";
    return p.name;
  }
  kvtier::dtype kv_type() const { return kvtier::dtype::bf16; }

  kvtier::result<run_result> run(cache_mode mode, const options& o, const workload& wl) {
    switch (mode) {
      case cache_mode::none: return serve_once<backend, device_only_cache>(m, w, precision::bf16, bo, o, false, 1, wl);
      case cache_mode::device: return serve_once<backend, device_only_cache>(m, w, precision::bf16, bo, o, true, 1, wl);
      case cache_mode::host: return serve_once<backend, host_cache>(m, w, precision::bf16, bo, o, true, o.host_pages, wl);
      case cache_mode::file: {
#ifdef KVTIER_SERVE_FILE
        using file_cache = kvtier::gpu_cache_builder<pages, kvtier::slow_tiers<kvtier::slow_tier<kvtier::file_tier>>>::cache_type;
        scratch_dir dir(o.dir);
        const kvtier::kv_shape shape = m.kv_shape(kvtier::dtype::bf16);
        kvtier::file_tier_config fc{dir.path, shape, shape.bytes_per_page(page_tokens), o.disk_pages, 256, 64, true, true};
        return serve_once<backend, file_cache>(m, w, precision::bf16, bo, o, true, o.host_pages, wl,
                                               std::make_unique<kvtier::file_tier<>>(fc));
#else
        break;
#endif
      }
    }
    return kvtier::make_error(kvtier::errc::invalid_argument);
  }
  // The file tier's put and get bandwidth on a scratch tier of its own (256 pages, one batch each way).
  std::vector<slow_tier_measurement> file_bandwidth(const options& o) const {
#ifdef KVTIER_SERVE_FILE
    scratch_dir dir(o.dir);
    const kvtier::kv_shape shape = m.kv_shape(kvtier::dtype::bf16);
    const std::size_t page_bytes = shape.bytes_per_page(page_tokens);
    kvtier::file_tier<> tier(kvtier::file_tier_config{dir.path, shape, page_bytes, 256, 256, 32, true, true});
    return {slow_tier_bandwidth(tier, page_bytes, 256, kvtier::namespace_id{0xca1})};
#else
    (void)o;
    return {};
#endif
  }
  std::vector<copy_measurement> copy_bandwidth(const options&) const {
    return serving::copy_bandwidth<host_cache>(m.kv_shape(kvtier::dtype::bf16), page_tokens, {1, 16, 256});
  }
};

}  // namespace kvtier_serve

int main(int argc, char** argv) {
  try {
    kvtier_serve::options defaults;
    defaults.shape = "llama3-8b";
    defaults.context = 34816;
    defaults.longdoc.documents = 12;
    defaults.longdoc.questions = 4;
    defaults.longdoc.doc_min = 8192;
    defaults.longdoc.doc_max = 24576;
    defaults.longdoc.question_tokens = 32;
    defaults.longdoc.answer_tokens = 32;
    defaults.longdoc.rate = 1;
    defaults.trace.path = KVTIER_SERVE_DEFAULT_TRACE;
    defaults.server.token_budget = 8192;
    defaults.server.chunk_tokens = 4096;
    defaults.server.max_batch = 32;
    defaults.device_pages = 4096;   // 8 GiB of llama3-8b bf16 KV (2 MiB a page)
    defaults.host_pages = 16384;    // 32 GiB pinned
    defaults.disk_pages = 16384;
    const kvtier_serve::options o = kvtier_serve::parse(argc, argv, defaults);
    kvtier_serve::cuda_traits traits(o);
    return kvtier_serve::run_all(o, traits);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvtier-serve-cuda: %s\n", e.what());
    return 2;
  }
}
