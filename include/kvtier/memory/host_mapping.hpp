#pragma once
// host_mapping: anonymous host memory kvtier maps itself (mmap), optionally on 2 MiB huge pages,
// so a pinned pool of many GiB needs few TLB entries and few page-table walks when the GPU and the
// kernel's DMA mapping touch it. Linux only; no CUDA.
#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "kvtier/core/error.hpp"

#ifndef MAP_HUGE_SHIFT
#  define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#  define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif

namespace kvtier::memory {

inline constexpr std::size_t huge_page_bytes = std::size_t{2} << 20;

// What backs a mapping.
enum class huge_page_mode : std::uint8_t {
  none,         // ordinary 4 KiB pages
  transparent,  // 2 MiB-aligned, madvise(MADV_HUGEPAGE): the kernel uses huge pages when it can
  hugetlb,      // MAP_HUGETLB: reserved 2 MiB pages (vm.nr_hugepages), guaranteed
};

constexpr std::string_view to_string(huge_page_mode m) noexcept {
  switch (m) {
    case huge_page_mode::none: return "none";
    case huge_page_mode::transparent: return "transparent";
    case huge_page_mode::hugetlb: return "hugetlb";
  }
  return "?";
}

class host_mapping {
 public:
  // Maps at least `bytes` bytes of zeroed, private, anonymous memory. With huge_pages the size is
  // rounded up to 2 MiB and MAP_HUGETLB is tried first; when no huge pages are reserved it falls
  // back to a 2 MiB-aligned ordinary mapping with madvise(MADV_HUGEPAGE). Throws config_error for 0
  // bytes or when mmap fails (the message carries strerror).
  explicit host_mapping(std::size_t bytes, bool huge_pages = false) {
    if (bytes == 0) throw config_error("kvtier: host_mapping of 0 bytes");
    if (!huge_pages) {
      size_ = bytes;
      data_ = map_or_throw(size_, 0);
      return;
    }
    if (bytes > SIZE_MAX - 2 * huge_page_bytes) throw config_error("kvtier: host_mapping size overflows");
    size_ = (bytes + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes;
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
    if (p != MAP_FAILED) {
      data_ = static_cast<std::byte*>(p);
      mode_ = huge_page_mode::hugetlb;
      return;
    }
    // Over-map by 2 MiB, then trim head and tail so the mapping starts on a 2 MiB boundary.
    std::byte* raw = map_or_throw(size_ + huge_page_bytes, 0);
    const auto addr = reinterpret_cast<std::uintptr_t>(raw);
    const std::size_t head = (huge_page_bytes - addr % huge_page_bytes) % huge_page_bytes;
    if (head != 0) ::munmap(raw, head);
    const std::size_t tail = huge_page_bytes - head;
    if (tail != 0) ::munmap(raw + head + size_, tail);
    data_ = raw + head;
    mode_ = ::madvise(data_, size_, MADV_HUGEPAGE) == 0 ? huge_page_mode::transparent : huge_page_mode::none;
  }

  host_mapping(host_mapping&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), mode_(o.mode_) {}
  host_mapping& operator=(host_mapping&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      mode_ = o.mode_;
    }
    return *this;
  }
  host_mapping(const host_mapping&) = delete;
  host_mapping& operator=(const host_mapping&) = delete;
  ~host_mapping() { release(); }

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }  // bytes mapped (rounded up with huge pages)
  huge_page_mode mode() const noexcept { return mode_; }

 private:
  static std::byte* map_or_throw(std::size_t n, int extra_flags) {
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
    if (p == MAP_FAILED)
      throw config_error("kvtier: mmap of " + std::to_string(n) + " bytes failed: " + std::strerror(errno));
    return static_cast<std::byte*>(p);
  }
  void release() noexcept {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = nullptr;
    size_ = 0;
  }

  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  huge_page_mode mode_ = huge_page_mode::none;
};

}  // namespace kvtier::memory
