// Must not compile: a device_pool handed to a routine that reads slots on the CPU (its memory is
// GPU-only). Built by nvcc, so the memory-space check holds in CUDA translation units too.
// Without KVTIER_COMPILE_FAIL this file compiles (the control), so the failure is the guarded call.
#include <cstddef>

#include "kvtier/memory.cuh"

namespace mem = kvtier::memory;

// What a host-only routine looks like: a CPU reader of whole pages. It takes any pool and states
// the memory space in a static_assert, which every compiler (nvcc's front end included) prints
// verbatim; a concept in the template head would only say that no overload matches.
template <mem::pool Pool>
std::size_t checksum_on_cpu(const Pool& pool, typename Pool::slot_type s) {
  static_assert(mem::host_accessible_pool<Pool>,
                "kvtier: checksum_on_cpu reads slots on the CPU and needs a host-accessible pool "
                "(host_pool, pinned_host_pool); device_pool memory is GPU-only");
  std::size_t sum = 0;
  for (std::byte b : pool.host_span(s)) sum += static_cast<unsigned char>(b);
  return sum;
}

void misuse(const mem::device_pool& pool) {
#ifdef KVTIER_COMPILE_FAIL
  (void)checksum_on_cpu(pool, kvtier::device_slot{0});
#else
  (void)pool.device_plane(kvtier::device_slot{0}, 0, 0);
#endif
}
