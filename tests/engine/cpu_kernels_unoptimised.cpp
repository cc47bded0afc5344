// The CPU backend's matmul kernel at -O0 (this test is built unoptimised on purpose): its AVX2
// clone once called the baseline-target vector helpers for real there, and the two pass 8-float
// vectors differently (ymm register vs memory), so a Debug build's products came out 0. Every
// element must equal dot()'s, bit for bit, on each row/token remainder, and the exact sum.
#include <boost/test/unit_test.hpp>

#include <cstddef>
#include <cstring>
#include <vector>

#include "kvtier_engine/cpu/kernels.hpp"

using namespace kvtier_engine::cpu::detail;

BOOST_AUTO_TEST_CASE(matmul_rows_equals_dot_at_o0) {
  for (const std::size_t n : {8u, 13u, 64u}) {
    for (const std::size_t T : {1u, 2u, 3u, 5u}) {
      const std::size_t rows = 7;  // a block of 4 and 3 single rows
      std::vector<float> W(rows * n), X(T * n), out(T * rows, -1.f);
      // Small integers times powers of two: every product and partial sum is exact in fp32.
      for (std::size_t i = 0; i < W.size(); ++i) W[i] = float(int(i % 7) - 3) * 0.5f;
      for (std::size_t i = 0; i < X.size(); ++i) X[i] = float(int(i % 5) - 2) * 0.25f;
      matmul_rows(W.data(), X.data(), out.data(), T, n, 0, rows, rows);
      for (std::size_t t = 0; t < T; ++t)
        for (std::size_t o = 0; o < rows; ++o) {
          double exact = 0;
          for (std::size_t i = 0; i < n; ++i) exact += double(W[o * n + i]) * double(X[t * n + i]);
          const float d = dot(W.data() + o * n, X.data() + t * n, n);
          BOOST_TEST(out[t * rows + o] == float(exact), "n=" << n << " T=" << T << " t=" << t << " o=" << o);
          BOOST_TEST(std::memcmp(&out[t * rows + o], &d, sizeof d) == 0);
        }
    }
  }
}
