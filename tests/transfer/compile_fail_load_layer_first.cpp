// Compile-fail test: cpu::load takes a paged source; a layer-first buffer as the source is rejected
// by the paged_kv_view constraint. With KVTIER_PAGED_SOURCE the same call is well-formed (control).
#include "kvtier/transfer.hpp"

int main() {
  using namespace kvtier;
  using namespace kvtier::transfer;
  const kv_shape s = shapes::llama3_8b();
  std::byte* mem = nullptr;
  const layer_first_buffer engine = layer_first_view(mem, s, 64);
  const page_pair pairs[1] = {{0, 0}};
#if defined(KVTIER_PAGED_SOURCE)
  const auto host = paged_view(mem, s, 4, page_size<>(16));
  return cpu::load(host, engine, pairs).has_value() ? 0 : 1;
#else
  return cpu::load(engine, engine, pairs).has_value() ? 0 : 1;
#endif
}
