// Must not compile: a host_pool handed to a routine that needs GPU-reachable memory.
// Without KVTIER_COMPILE_FAIL this file compiles (the control), so the failure is the guarded call.
#include "kvtier/memory.hpp"

namespace mem = kvtier::memory;

// What a device-only routine looks like: a kernel launcher over device-accessible slots.
template <mem::device_accessible_pool Pool>
void launch_on_gpu(Pool& pool) {
  (void)pool.device_plane(typename Pool::slot_type{0}, 0, 0);
}

int main() {
  mem::host_pool host(kvtier::shapes::llama3_8b(), kvtier::page_size<>(16), 4);
#ifdef KVTIER_COMPILE_FAIL
  launch_on_gpu(host);
#endif
  return int(host.capacity() != 4);
}
