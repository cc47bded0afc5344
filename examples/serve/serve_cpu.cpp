// kvtier-serve on the CPU: stories260K (models/stories260K) on the fp32 reference backend, kvtier's
// host-backed device pool. See docs/serving.md.
#include <cstdio>
#include <exception>
#include <string>
#include <thread>

#include "driver.hpp"
#include "kvtier/cache.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/model_files.hpp"
#ifdef KVTIER_SERVE_FILE
#  include "kvtier/storage/file_tier.hpp"
#endif

namespace kvtier_serve {

struct cpu_traits : traits_base {
  static constexpr std::size_t page_tokens = 16;
  using pages = kvtier::page_size<page_tokens>;
  using device_only_cache = kvtier::cache_builder<pages, kvtier::device_memory<>, kvtier::host_memory<>, kvtier::slow_tiers<>,
                                                  kvtier::auto_choice, kvtier::write_policies<no_backup, kvtier::auto_choice>>::cache_type;
  using host_cache = kvtier::cache_builder<pages>::cache_type;
#ifdef KVTIER_SERVE_FILE
  static constexpr bool has_file_tier = true;
  using file_tier_type = kvtier::file_tier<>;
  using file_cache = kvtier::cache_builder<pages, kvtier::device_memory<>, kvtier::host_memory<>,
                                           kvtier::slow_tiers<kvtier::slow_tier<kvtier::file_tier>>>::cache_type;
  kvtier::file_tier_config file_config(const std::filesystem::path& dir, std::size_t capacity) const {
    const kvtier::kv_shape shape = m.kv_shape(kvtier::dtype::fp32);
    return {dir, shape, shape.bytes_per_page(page_tokens), capacity, 256, 32, true, false};  // buffered I/O
  }
#else
  static constexpr bool has_file_tier = false;
#endif

  explicit cpu_traits(const options& o) {
    if (!o.shape.empty()) {
      m = shapes::by_name(o.shape);
      w = model_weights::synthetic(m, o.seed);
    } else {
      const model_files f = model_files::in(o.model_dir.empty() ? std::string(KVTIER_ENGINE_MODELS_DIR "/stories260K") : o.model_dir);
      w = model_weights::load_llama2c(f.checkpoint.string(), f.name);
      m = w.config();
    }
    if (o.context) m.seq_len = o.context;  // RoPE has no length limit; the model was trained at its own
    bo = backend_options{precision::fp32, o.threads, 0};
  }
  precision run_precision() const { return precision::fp32; }
  std::string backend_name() const { return "cpu-fp32"; }
  std::string device_name() const { return "CPU, " + std::to_string(std::thread::hardware_concurrency()) + " hardware threads"; }
  kvtier::dtype kv_type() const { return kvtier::dtype::fp32; }

  kvtier::result<run_result> run(cache_mode mode, const options& o, const workload& wl) {
    return run_mode<cpu_backend>(*this, mode, o, wl);
  }
  static constexpr std::size_t file_bandwidth_pages = 1024;  // the file tier's bandwidth: pages in one batch
};

}  // namespace kvtier_serve

int main(int argc, char** argv) {
  kvtier_serve::options defaults;
  // CPU defaults sized for stories260K on two cores: documents of 256-768 tokens, a 1,024-token context.
  defaults.context = 1024;
  defaults.wl.longdoc = {.documents = 8, .questions = 3, .doc_min = 256, .doc_max = 768, .question_tokens = 16,
                         .answer_tokens = 16, .rate = 2};
  defaults.wl.chat.rate = 4;
  defaults.wl.trace.path = KVTIER_SERVE_DEFAULT_TRACE;
  defaults.wl.trace.max_output = 16;
  defaults.device_pages = 128;    // 3 documents; the 8 need ~2.5x that
  defaults.host_pages = 1024;
  defaults.disk_pages = 4096;
  return kvtier_serve::serve_main<kvtier_serve::cpu_traits>(argc, argv, defaults, "kvtier-serve");
}
