#pragma once
// Tokens per page, fixed at compile time (page_size<16>) or at run time (page_size<>{16}).
#include <cstddef>
#include <span>

#include "kvtier/core/config.hpp"
#include "kvtier/core/error.hpp"

namespace kvtier {

inline constexpr std::size_t dynamic_extent = std::dynamic_extent;

template <std::size_t PageSize = std::dynamic_extent>
class page_size {
  static_assert(PageSize > 0, "kvtier: a page holds at least one token");

 public:
  static constexpr bool is_static = true;
  static constexpr std::size_t static_tokens = PageSize;

  constexpr page_size() noexcept = default;
  constexpr explicit page_size(std::size_t n) {
    if (n != PageSize) throw config_error("kvtier: run-time page size differs from the static one");
  }
  KVTIER_HOST_DEVICE static constexpr std::size_t tokens() noexcept { return PageSize; }
  KVTIER_HOST_DEVICE static constexpr std::size_t full_pages(std::size_t n) noexcept { return n / PageSize; }
  KVTIER_HOST_DEVICE static constexpr std::size_t pages_covering(std::size_t n) noexcept { return (n + PageSize - 1) / PageSize; }
  KVTIER_HOST_DEVICE static constexpr std::size_t whole_tokens(std::size_t n) noexcept { return n - n % PageSize; }
};

template <>
class page_size<std::dynamic_extent> {
 public:
  static constexpr bool is_static = false;
  static constexpr std::size_t static_tokens = std::dynamic_extent;

  constexpr explicit page_size(std::size_t n) : n_(n) {
    if (n == 0) throw config_error("kvtier: page size of 0 tokens");
    if (n > (std::size_t{1} << 20)) throw config_error("kvtier: page size above 2^20 tokens");
  }
  template <std::size_t N>
    requires(N != std::dynamic_extent)
  constexpr page_size(page_size<N>) noexcept : n_(N) {}  // NOLINT: static converts to dynamic

  KVTIER_HOST_DEVICE constexpr std::size_t tokens() const noexcept { return n_; }
  KVTIER_HOST_DEVICE constexpr std::size_t full_pages(std::size_t n) const noexcept { return n / n_; }
  KVTIER_HOST_DEVICE constexpr std::size_t pages_covering(std::size_t n) const noexcept { return (n + n_ - 1) / n_; }
  KVTIER_HOST_DEVICE constexpr std::size_t whole_tokens(std::size_t n) const noexcept { return n - n % n_; }

 private:
  std::size_t n_;
};

page_size(std::size_t) -> page_size<std::dynamic_extent>;

}  // namespace kvtier
