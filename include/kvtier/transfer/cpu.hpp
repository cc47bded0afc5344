#pragma once
// The CPU copy path: the same function as the GPU kernels (load, backup, copy_pages), computed with
// memcpy over the runs contiguous on both sides. It is the reference the GPU tests compare against
// and the copy strategy of CPU-only builds. Host-only: no CUDA header.
#include <cstring>
#include <span>

#include "kvtier/core/error.hpp"
#include "kvtier/transfer/geometry.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer::cpu {

// Copies pages[i].src of src to pages[i].dst of dst for the layers in `layers`, pages of
// page_tokens tokens. Destination pages must be distinct. Errors: see plan_copy.
template <kv_view Src, kv_view Dst>
result<void> copy_pages(const Src& src, const Dst& dst, std::span<const page_pair> pairs, layer_range layers,
                        std::size_t page_tokens) noexcept {
  const result<copy_geometry> g = plan_copy(src, dst, pairs, layers, page_tokens);
  if (!g) return g.err();
  for_each_run(src, dst, pairs, *g, [](std::byte* d, const std::byte* s, std::size_t n) { std::memcpy(d, s, n); });
  return {};
}

// load: paged (host) -> any layout (the engine's layer-first buffer), page size from src.
template <paged_kv_view Src, kv_view Dst>
result<void> load(const Src& src, const Dst& dst, std::span<const page_pair> pairs,
                  layer_range layers = layer_range::all()) noexcept {
  return copy_pages(src, dst, pairs, layers, src.map.page_tokens());
}

// backup: any layout (the engine's layer-first buffer) -> paged (host), page size from dst.
template <kv_view Src, paged_kv_view Dst>
result<void> backup(const Src& src, const Dst& dst, std::span<const page_pair> pairs,
                    layer_range layers = layer_range::all()) noexcept {
  return copy_pages(src, dst, pairs, layers, dst.map.page_tokens());
}

}  // namespace kvtier::transfer::cpu
