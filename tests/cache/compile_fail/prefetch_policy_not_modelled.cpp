// A prefetch "policy" that is just a duration must not compile.
#include <chrono>
#include "kvtier/cache.hpp"
using namespace kvtier;
#ifdef KVTIER_COMPILE_FAIL
using bad = cache_builder<page_size<16>, device_memory<>, host_memory<>, slow_tiers<>, auto_choice, write_policies<>,
                          std::chrono::milliseconds>::cache_type;
bad* p = nullptr;
#else
using good = cache_builder<page_size<16>, device_memory<>, host_memory<>, slow_tiers<>, auto_choice, write_policies<>,
                           prefetch_best_effort>::cache_type;
good* p = nullptr;
#endif
