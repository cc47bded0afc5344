// kvtier quickstart (CPU): a KV shape, its sizes, and the page math every tier uses.
#include <cstdio>
#include <vector>

#include <kvtier/core.hpp>

int main() {
  using namespace kvtier;

  // [taste]
  constexpr kv_shape llama = shapes::llama3_8b();        // 32 layers, 8 KV heads, dim 128, bf16
  constexpr page_size<16> pages;                         // 16 tokens a page, fixed at compile time
  const kv_shape mla = kv_shape::mla(61, 576, dtype::bf16);  // DeepSeek-V3-style latent cache

  std::vector<token_id> prompt(32'000, token_id{7});
  const std::size_t cacheable = pages.full_pages(prompt.size());  // only whole pages are cached
  std::printf("%-10s %8s %14s %16s %12s\n", "shape", "layers", "bytes/token", "bytes/page(16)", "prompt GiB");
  for (const auto& [name, s] : {std::pair{"llama3-8b", llama}, std::pair{"mla-576", mla}})
    std::printf("%-10s %8zu %14zu %16zu %12.2f\n", name, s.layers(), s.bytes_per_token(),
                s.bytes_per_page(pages.tokens()), double(s.bytes_per_token()) * double(prompt.size()) / (1 << 30));
  std::printf("a %zu-token prompt: %zu whole pages, %zu tokens left to compute\n", prompt.size(),
              cacheable, prompt.size() - pages.whole_tokens(prompt.size()));
  // [taste]

  try {
    (void)kv_shape::mha(32, 0, 128, dtype::bf16);
  } catch (const config_error& e) {
    std::printf("bad shapes throw at configuration: %s\n", e.what());
  }
  return 0;
}
