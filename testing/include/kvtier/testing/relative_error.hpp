#pragma once
// The relative L2 distance the engine tests report between two logit (or KV) vectors.
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>

namespace kvtier::testing {

// ‖got − want‖₂ / ‖want‖₂ in double; infinity when `got` holds a NaN or an infinity.
inline double rel_l2(std::span<const float> got, std::span<const float> want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    num += double(got[i] - want[i]) * (got[i] - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

}  // namespace kvtier::testing
