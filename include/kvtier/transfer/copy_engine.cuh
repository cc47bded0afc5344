#pragma once
// Copy-engine baselines behind the copy interface: the runs of for_each_run handed to the DMA
// engines, one cudaMemcpyAsync each, or one cudaMemcpyBatchAsync per layer (CUDA 12.8+). They need
// host-readable views (plane tables in host memory) and host pairs.
#include <cuda_runtime.h>

#include <cstddef>
#include <span>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/transfer/detail/dispatch.cuh"
#include "kvtier/transfer/geometry.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer::detail {

// Runs layer by layer (so an event can follow each layer), calling issue(geometry of one layer).
template <class Issue>
result<void> per_layer(const copy_geometry& g, std::span<const cudaEvent_t> events, cudaStream_t stream, Issue&& issue) {
  if (!events.empty() && events.size() != g.layers) return make_error(errc::invalid_argument);
  if (events.empty() || g.shape == run_shape::page) {
    if (result<void> r = issue(g); !r) return r;
    for (cudaEvent_t ev : events)
      if (cudaError_t e = cudaEventRecord(ev, stream); e != cudaSuccess) return cuda_error(e);
    return {};
  }
  for (std::size_t i = 0; i < g.layers; ++i) {
    copy_geometry one = g;
    one.first_layer = g.first_layer + i;
    one.layers = 1;
    if (result<void> r = issue(one); !r) return r;
    if (cudaError_t e = cudaEventRecord(events[i], stream); e != cudaSuccess) return cuda_error(e);
  }
  return {};
}

template <kv_view Src, kv_view Dst>
result<void> memcpy_per_run(const Src& src, const Dst& dst, std::span<const page_pair> pairs, const copy_geometry& g,
                            cudaStream_t stream, std::span<const cudaEvent_t> events) {
  return per_layer(g, events, stream, [&](const copy_geometry& one) -> result<void> {
    cudaError_t err = cudaSuccess;
    for_each_run(src, dst, pairs, one, [&](std::byte* d, const std::byte* s, std::size_t n) {
      if (err == cudaSuccess) err = cudaMemcpyAsync(d, s, n, cudaMemcpyDefault, stream);
    });
    if (err != cudaSuccess) return cuda_error(err);
    return {};
  });
}

template <kv_view Src, kv_view Dst>
result<void> memcpy_batch(const Src& src, const Dst& dst, std::span<const page_pair> pairs, const copy_geometry& g,
                          cudaStream_t stream, std::span<const cudaEvent_t> events) {
  if (stream == nullptr) return make_error(errc::invalid_argument);  // the batch API refuses the legacy stream
  std::vector<void*> dsts;
  std::vector<const void*> srcs;
  std::vector<std::size_t> sizes;
  return per_layer(g, events, stream, [&](const copy_geometry& one) -> result<void> {
    dsts.clear();
    srcs.clear();
    sizes.clear();
    for_each_run(src, dst, pairs, one, [&](std::byte* d, const std::byte* s, std::size_t n) {
      dsts.push_back(d);
      srcs.push_back(s);
      sizes.push_back(n);
    });
    if (dsts.empty()) return {};
    cudaMemcpyAttributes attr{};
    attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
    std::size_t attr_index = 0;
    if (cudaError_t e = cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), dsts.size(), &attr, &attr_index, 1,
                                             stream);
        e != cudaSuccess)
      return cuda_error(e);
    return {};
  });
}

}  // namespace kvtier::transfer::detail
