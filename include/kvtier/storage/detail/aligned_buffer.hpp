#pragma once
// An owning, zero-initialised buffer aligned for O_DIRECT I/O.
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>

namespace kvtier::detail {

inline constexpr std::size_t direct_io_alignment = 4096;  // covers 512-byte and 4 KiB logical blocks

constexpr std::size_t align_up(std::size_t n, std::size_t a) noexcept { return (n + a - 1) / a * a; }

inline bool is_direct_aligned(const void* p, std::size_t n) noexcept {
  return reinterpret_cast<std::uintptr_t>(p) % direct_io_alignment == 0 && n % direct_io_alignment == 0;
}

class aligned_buffer {
 public:
  aligned_buffer() = default;
  // Allocates n bytes (rounded up to the alignment); empty() on failure, never throws.
  explicit aligned_buffer(std::size_t n) noexcept {
    const std::size_t bytes = align_up(n == 0 ? 1 : n, direct_io_alignment);
    if (void* p = std::aligned_alloc(direct_io_alignment, bytes)) {
      std::memset(p, 0, bytes);
      data_.reset(static_cast<std::byte*>(p));
      size_ = bytes;
    }
  }
  std::byte* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::span<std::byte> span() const noexcept { return {data_.get(), size_}; }

 private:
  struct deleter {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<std::byte, deleter> data_;
  std::size_t size_ = 0;
};

}  // namespace kvtier::detail
