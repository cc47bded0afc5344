// kvtier-demo-gpu: the main demo compiled with nvcc. With a CUDA device it runs the GPU path
// (device_layer_pool, mapped pinned host pool, kvtier's copy kernels); without one, the CPU path.
#define KVTIER_DEMO_GPU 1
#include "demo.cpp"
