#pragma once
// The GPU benches' checks: a failed CUDA call or kvtier operation ends the run at once (exit code 1)
// with where and why on stderr. A bench has nothing to fall back on, and a table measured past a
// failure would be wrong.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "kvtier/core/error.hpp"

namespace kvtier_bench {

inline void cuda_check(cudaError_t e, const char* call, const char* file, int line) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "%s:%d: %s: %s\n", file, line, call, cudaGetErrorString(e));
  std::exit(1);
}

inline void must(const kvtier::result<void>& r, const char* what) {
  if (!r) {
    std::fprintf(stderr, "%s failed: %s\n", what, std::string(kvtier::to_string(r.code())).c_str());
    std::exit(1);
  }
}

}  // namespace kvtier_bench

// A macro so that the message names the call and the bench's own file and line.
#define CK(x) ::kvtier_bench::cuda_check((x), #x, __FILE__, __LINE__)
