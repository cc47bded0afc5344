#pragma once
// The CUDA backend's row filter for partial prefill (cuda_backend::prefill_rows): which rows of the
// pass are still computed, and the gather that moves the kept rows to the front of the residual
// stream, queries, positions and key counts (double buffers, swapped with the model's).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <utility>
#include <vector>

#include "kvtier_engine/backend.hpp"
#include "kvtier_engine/cuda/common.cuh"
#include "kvtier_engine/cuda/kernels.cuh"
#include "kvtier_engine/row_filter_rules.hpp"

namespace kvtier_engine::cuda::detail {

template <class T>
class row_narrower {
 public:
  row_narrower() = default;
  row_narrower(const row_narrower&) = delete;
  row_narrower& operator=(const row_narrower&) = delete;
  ~row_narrower() {
    if (ready_ != nullptr) {
      (void)cudaEventSynchronize(ready_);
      (void)cudaEventDestroy(ready_);
    }
    if (from_host_ != nullptr) (void)cudaFreeHost(from_host_);
  }

  // A pass of n rows starts: every row is active.
  void start(std::size_t n) {
    active_.resize(n);
    std::iota(active_.begin(), active_.end(), std::size_t(0));
  }

  // After layer l's K/V: asks `filter`, then gathers the kept rows (a subsequence of the active ones
  // that keeps the last, else std::invalid_argument) into the second buffers and swaps them in.
  // x (rows, dim) fp32, q (rows, q_dim), positions and key counts: the model's buffers of R rows.
  int apply(std::size_t l, int rows, const row_filter& filter, device_buffer<float>& x, device_buffer<T>& q,
            device_buffer<std::int32_t>& positions, device_buffer<std::int32_t>& keys, int dim, int q_dim, cudaStream_t s) {
    prev_.assign(active_.begin(), active_.end());
    filter(l, active_);
    if (active_ == prev_) return rows;
    if (active_.empty() || active_.back() != prev_.back())
      throw std::invalid_argument("kvtier_engine: prefill_rows: the filter dropped the last row");
    const std::size_t R = positions.size();
    if (from_.size() != R) {  // first use: the second buffers and the pinned index staging
      x2_ = device_buffer<float>(x.size());
      q2_ = device_buffer<T>(q.size());
      positions2_ = device_buffer<std::int32_t>(R);
      keys2_ = device_buffer<std::int32_t>(R);
      from_ = device_buffer<std::int32_t>(R);
      if (from_host_ == nullptr)
        check(cudaHostAlloc(reinterpret_cast<void**>(&from_host_), R * sizeof(std::int32_t), cudaHostAllocDefault), "cudaHostAlloc");
      if (ready_ == nullptr) check(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "cudaEventCreate");
    } else {
      check(cudaEventSynchronize(ready_), "prefill_rows staging");  // the previous upload has read it
    }
    // Each kept row's index in the current (compacted) buffers.
    if (!kvtier_engine::detail::kept_sources(prev_, active_, from_host_))
      throw std::invalid_argument("kvtier_engine: prefill_rows: the filter added a row or broke the order");
    const int kept = int(active_.size());
    check(cudaMemcpyAsync(from_.data(), from_host_, std::size_t(kept) * sizeof(std::int32_t), cudaMemcpyHostToDevice, s), "H2D");
    check(cudaEventRecord(ready_, s), "cudaEventRecord");
    gather_rows(from_.data(), kept, x.data(), q.data(), positions.data(), x2_.data(), q2_.data(), positions2_.data(),
                keys2_.data(), dim, q_dim, s);
    std::swap(x, x2_);
    std::swap(q, q2_);
    std::swap(positions, positions2_);
    std::swap(keys, keys2_);
    return kept;
  }

 private:
  std::vector<std::size_t> active_, prev_;  // indices into the pass's rows, ascending
  device_buffer<float> x2_;
  device_buffer<T> q2_;
  device_buffer<std::int32_t> positions2_, keys2_, from_;
  std::int32_t* from_host_ = nullptr;
  cudaEvent_t ready_ = nullptr;
};

}  // namespace kvtier_engine::cuda::detail
