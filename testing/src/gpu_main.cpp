// main() of every GPU test module: with no CUDA device it says so and exits with 77, which
// kvtier_add_test registers as CTest's SKIP_RETURN_CODE, so the test shows as skipped, not passed.
#include <cstdio>

#include <boost/test/unit_test.hpp>
#include <cuda_runtime_api.h>

bool init_unit_test();  // defined by BOOST_TEST_MODULE in the module's first source

int main(int argc, char* argv[]) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::printf("SKIPPED: no CUDA device (%s); this GPU test did not run\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "device count 0");
    return 77;
  }
  return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
