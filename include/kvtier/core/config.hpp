#pragma once
// Portability macros shared by host-only and CUDA translation units.

#if defined(__CUDACC__) || defined(__CUDA_ARCH__)
#  define KVTIER_HOST_DEVICE __host__ __device__
#else
#  define KVTIER_HOST_DEVICE
#endif

#define KVTIER_FORCEINLINE inline __attribute__((always_inline))
