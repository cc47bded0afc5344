// A host pool (host_slot ids, host memory) handed to the device tier must not compile.
#include "kvtier/cache.hpp"
using namespace kvtier;
#ifdef KVTIER_COMPILE_FAIL
using bad = cache_builder<page_size<16>, device_memory<layout::layer_first, memory::host_pool>>::cache_type;
bad* p = nullptr;
#else
using good = cache_builder<page_size<16>, device_memory<layout::layer_first, host_backed_device_pool>>::cache_type;
good* p = nullptr;
#endif
