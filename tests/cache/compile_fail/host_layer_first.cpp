// The host tier holds whole pages: a layer-first host layout must not compile.
#include "kvtier/cache.hpp"
using namespace kvtier;
#ifdef KVTIER_COMPILE_FAIL
using bad = cache_builder<page_size<16>, device_memory<>, host_memory<layout::layer_first>>::cache_type;
bad* p = nullptr;
#else
using good = cache_builder<page_size<16>, device_memory<>, host_memory<layout::page_first>>::cache_type;
good* p = nullptr;
#endif
