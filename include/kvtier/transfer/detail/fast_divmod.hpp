#pragma once
// Division of 32-bit indices by a run-time constant as a multiply-high, an add and a shift
// (Granlund & Montgomery), so the copy kernels decode page/layer/kv indices without a divide.
#include <cstdint>

#include "kvtier/core/config.hpp"

namespace kvtier::transfer::detail {

class fast_divmod {
 public:
  constexpr fast_divmod() noexcept = default;
  // d >= 1. Exact for every numerator below 2^32.
  constexpr explicit fast_divmod(std::uint32_t d) noexcept : d_(d) {
    while ((std::uint64_t{1} << s_) < d) ++s_;  // s = ceil(log2 d)
    m_ = static_cast<std::uint32_t>(((std::uint64_t{1} << 32) * ((std::uint64_t{1} << s_) - d)) / d + 1);
  }
  KVTIER_HOST_DEVICE constexpr std::uint32_t divisor() const noexcept { return d_; }
  KVTIER_HOST_DEVICE constexpr std::uint32_t div(std::uint32_t n) const noexcept {
#if defined(__CUDA_ARCH__)
    const std::uint32_t hi = __umulhi(m_, n);
#else
    const std::uint32_t hi = static_cast<std::uint32_t>((std::uint64_t{m_} * n) >> 32);
#endif
    return static_cast<std::uint32_t>((std::uint64_t{hi} + n) >> s_);
  }
  // q = n / d, returns n % d.
  KVTIER_HOST_DEVICE constexpr std::uint32_t divmod(std::uint32_t n, std::uint32_t& q) const noexcept {
    q = div(n);
    return n - q * d_;
  }

 private:
  std::uint32_t d_ = 1;
  std::uint32_t m_ = 1;
  std::uint32_t s_ = 0;
};

}  // namespace kvtier::transfer::detail
