#pragma once
// A growable array of trivially copyable values whose growth never copies: on Linux the storage is
// an anonymous mapping that mremap() enlarges (page tables move, the data and the pages already
// touched stay), so a growing index faults each memory page in once instead of once per
// reallocation. Arrays of 2 MiB and more live at 2 MiB-aligned addresses and ask for transparent
// huge pages (one fault per 2 MiB instead of 512): growth moves them with MREMAP_FIXED to a fresh
// aligned range, so the kernel carries whole huge pages over; the one step that crosses 2 MiB
// copies the small array into its first huge page. From 2 MiB on, sizes are whole 2 MiB ranges (a
// range the mapping only partly covers gets small pages, and keeps them once touched).
// Shrinking hands the tail back to the system. Elsewhere: realloc.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace kvtier::detail {

template <class T>
class mapped_array {
  static_assert(std::is_trivially_copyable_v<T>, "mapped_array holds trivially copyable values");

 public:
  mapped_array() noexcept = default;
  mapped_array(const mapped_array&) = delete;
  mapped_array& operator=(const mapped_array&) = delete;
  mapped_array(mapped_array&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), bytes_(std::exchange(o.bytes_, 0)) {}
  mapped_array& operator=(mapped_array&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  ~mapped_array() { release(); }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  T& operator[](std::size_t i) noexcept { return data_[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }
  T* begin() noexcept { return data_; }
  T* end() noexcept { return data_ + size_; }
  const T* begin() const noexcept { return data_; }
  const T* end() const noexcept { return data_ + size_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return bytes_ / sizeof(T); }
  bool empty() const noexcept { return size_ == 0; }
  std::size_t memory_bytes() const noexcept { return bytes_; }

  // Grows or shrinks the element count; new elements are zero bytes (not constructed).
  void resize(std::size_t n) {
    if (n > capacity()) reserve(n + n / 4 + 64);  // 25% slack: growth costs no copy
    if (n > size_) std::memset(static_cast<void*>(data_ + size_), 0, (n - size_) * sizeof(T));
    size_ = n;
  }
  void push_back(const T& v) {
    if (size_ == capacity()) reserve(size_ + size_ / 4 + 64);
    data_[size_++] = v;
  }
  // Appends k elements the caller writes before reading (not zeroed); returns the first.
  T* extend(std::size_t k) {
    if (size_ + k > capacity()) reserve(size_ + k + (size_ + k) / 4 + 64);
    T* first = data_ + size_;
    size_ += k;
    return first;
  }
  void pop_back() noexcept { --size_; }
  T& back() noexcept { return data_[size_ - 1]; }
  void clear() noexcept { size_ = 0; }

  // Room for n elements (never shrinks).
  void reserve(std::size_t n) {
    if (n > capacity()) remap(round_up(n * sizeof(T)));
  }
  // Returns the storage beyond size() (rounded to memory pages) to the system.
  void shrink_to_fit() { shrink_to(size_); }
  // Returns the storage beyond max(n, size()) elements (rounded to memory pages) to the system.
  void shrink_to(std::size_t n) {
    const std::size_t want = round_up((n > size_ ? n : size_) * sizeof(T));
    if (want < bytes_) remap(want);
  }

 private:
  static constexpr std::size_t page = 4096;
  static constexpr std::size_t huge = std::size_t{2} << 20;
  static std::size_t round_up(std::size_t b) noexcept {
    const std::size_t unit = b >= huge ? huge : page;  // whole 2 MiB ranges: each can be one huge page
    return (b + unit - 1) / unit * unit;
  }

  void remap(std::size_t bytes) {
#if defined(__linux__)
    void* p;
    if (bytes == 0) {
      release();
      return;
    }
    if (bytes < huge || (data_ && bytes < bytes_)) {  // small, or shrinking (in place: alignment kept)
      if (!data_) p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      else p = ::mremap(data_, bytes_, bytes, MREMAP_MAYMOVE);
      if (p == MAP_FAILED) throw std::bad_alloc();
    } else {
      p = map_aligned(bytes);
      // Asked before anything is written: the copy below then faults in huge pages, not 4 KiB ones.
      (void)::madvise(p, bytes, MADV_HUGEPAGE);
      if (data_ && bytes_ >= huge) {  // aligned already: its page tables (huge pages whole) move
        if (::mremap(data_, bytes_, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, p) == MAP_FAILED) {
          ::munmap(p, bytes);
          throw std::bad_alloc();
        }
        (void)::madvise(p, bytes, MADV_HUGEPAGE);  // the moved range, grown
      } else if (data_) {  // small pages so far: copied once into huge ones
        std::memcpy(p, data_, size_ * sizeof(T));
        ::munmap(data_, bytes_);
      }
    }
#else
    void* p = std::realloc(data_, bytes ? bytes : 1);
    if (!p) throw std::bad_alloc();
#endif
    data_ = static_cast<T*>(p);
    bytes_ = bytes;
  }
#if defined(__linux__)
  // A fresh mapping of `bytes` at a 2 MiB boundary (mapped 2 MiB longer, the ends given back).
  static void* map_aligned(std::size_t bytes) {
    void* raw = ::mmap(nullptr, bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const auto at = reinterpret_cast<std::uintptr_t>(raw);
    const std::uintptr_t aligned = (at + huge - 1) & ~std::uintptr_t(huge - 1);
    if (aligned > at) ::munmap(raw, aligned - at);
    if (const std::size_t tail = huge - (aligned - at); tail > 0) ::munmap(reinterpret_cast<void*>(aligned + bytes), tail);
    return reinterpret_cast<void*>(aligned);
  }
#endif
  void release() noexcept {
    if (!data_) return;
#if defined(__linux__)
    ::munmap(data_, bytes_);
#else
    std::free(data_);
#endif
    data_ = nullptr;
    size_ = bytes_ = 0;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t bytes_ = 0;  // mapped bytes
};

}  // namespace kvtier::detail
