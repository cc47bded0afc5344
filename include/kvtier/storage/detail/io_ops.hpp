#pragma once
// io_ops: the fixed set of I/O requests a file tier keeps in flight (its queue depth). Each op
// owns a 4 KiB header block and, on first need, a staging buffer for payloads that cannot move
// straight between the caller's page and the disk (unaligned, or a codec that changes the bytes),
// and frames its vectored I/O: [header block][payload padded to the alignment] of one slot.
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/storage/detail/aligned_buffer.hpp"
#include "kvtier/storage/detail/slot_files.hpp"
#include "kvtier/storage/page_header.hpp"

namespace kvtier::detail {

template <class Job>
struct io_op {
  Job job{};
  std::uint32_t slot = 0;
  aligned_buffer header;        // the 4 KiB header block
  aligned_buffer staging;       // whole payload when the caller's buffer cannot be used directly
  iovec iov[2]{};
  int iovcnt = 0;
  std::size_t bytes = 0;        // bytes the I/O must move
  bool direct_payload = false;  // payload moved straight from/to the caller's buffer

  // The staging buffer, at least n bytes; empty when memory runs out.
  std::span<std::byte> stage(std::size_t n) noexcept {
    if (staging.size() < n) staging = aligned_buffer(n);
    return staging.empty() ? std::span<std::byte>{} : staging.span();
  }
  // A write of header h and `payload` (direct_payload: a multiple of the alignment already).
  void frame_write(const page_header& h, std::span<const std::byte> payload) noexcept {
    std::memset(header.data(), 0, header.size());
    store_page_header(h, header.span());
    iov[0] = {header.data(), direct_io_alignment};
    iov[1] = {const_cast<std::byte*>(payload.data()),
              direct_payload ? payload.size() : align_up(payload.size(), direct_io_alignment)};
    iovcnt = 2;
    bytes = iov[0].iov_len + iov[1].iov_len;
  }
  // A read of the header block and `n` payload bytes into `into`.
  void frame_read(std::byte* into, std::size_t n) noexcept {
    iov[0] = {header.data(), direct_io_alignment};
    iov[1] = {into, n};
    iovcnt = 2;
    bytes = iov[0].iov_len + iov[1].iov_len;
  }
  // A write of one zero block over the header: the slot reads as never written.
  void frame_clear(const aligned_buffer& zero) noexcept {
    iov[0] = {zero.data(), direct_io_alignment};
    iovcnt = 1;
    bytes = direct_io_alignment;
    direct_payload = false;
  }
  // The outcome of the I/O: res is the byte count moved or -errno.
  error outcome(int res) const noexcept {
    if (res < 0) return file_errno_error(-res);
    return std::size_t(res) != bytes ? make_error(errc::io_error, EIO) : error{};
  }
};

template <class Job>
class io_ops {
 public:
  // Throws config_error when the header blocks cannot be allocated.
  explicit io_ops(unsigned depth) : ops_(depth) {
    for (auto& op : ops_) {
      op.header = aligned_buffer(direct_io_alignment);
      if (op.header.empty()) throw config_error("kvtier: file_tier cannot allocate I/O buffers");
    }
    for (std::uint32_t i = depth; i-- > 0;) free_.push_back(i);
  }
  bool available() const noexcept { return !free_.empty(); }
  std::uint32_t next() const noexcept { return free_.back(); }  // the op acquire() hands out
  std::uint32_t acquire() noexcept {
    const std::uint32_t i = free_.back();
    free_.pop_back();
    return i;
  }
  void release(std::uint32_t i) noexcept { free_.push_back(i); }
  io_op<Job>& operator[](std::uint32_t i) noexcept { return ops_[i]; }

 private:
  std::vector<io_op<Job>> ops_;
  std::vector<std::uint32_t> free_;
};

}  // namespace kvtier::detail
