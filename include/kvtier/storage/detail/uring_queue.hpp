#pragma once
// kvtier: needs-uring
// uring_queue: an io_uring of a fixed depth for vectored reads and writes, each tagged with a
// 64-bit value that comes back with its completion. Tracks what is prepared but not yet submitted
// and what the kernel still holds, so that its owner never closes a ring the kernel writes into.
#include <liburing.h>
#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace kvtier::detail {

struct uring_completion {
  std::uint64_t tag = 0;
  int res = 0;  // bytes moved, or -errno
};

class uring_queue {
 public:
  uring_queue() = default;
  uring_queue(const uring_queue&) = delete;
  uring_queue& operator=(const uring_queue&) = delete;
  ~uring_queue() { close(); }

  // Sets up a ring of `depth` entries. False where io_uring is refused (seccomp, old kernel).
  // A plain ring: completions reach whichever thread waits (COOP_TASKRUN would tie them to the
  // submitting thread, and measured no faster here).
  bool open(unsigned depth) noexcept {
    close();
    active_ = io_uring_queue_init(depth, &ring_, 0) == 0;
    return active_;
  }
  bool active() const noexcept { return active_; }
  std::size_t in_flight() const noexcept { return in_flight_; }
  std::size_t unsubmitted() const noexcept { return unsubmitted_; }
  bool idle() const noexcept { return in_flight_ == 0 && unsubmitted_ == 0; }

  // Prepares one vectored read or write (not submitted yet). False when no entry is free.
  bool prepare(bool write, int fd, const iovec* iov, unsigned n, std::uint64_t offset, std::uint64_t tag) noexcept {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {  // cannot happen with at most `depth` requests out; stay safe anyway
      submit();
      sqe = io_uring_get_sqe(&ring_);
    }
    if (sqe == nullptr) return false;
    if (write) io_uring_prep_writev(sqe, fd, iov, n, offset);
    else io_uring_prep_readv(sqe, fd, iov, n, offset);
    io_uring_sqe_set_data64(sqe, tag);
    ++unsubmitted_;
    return true;
  }

  // Hands the prepared requests to the kernel.
  void submit() noexcept {
    if (unsubmitted_ == 0) return;
    io_uring_submit(&ring_);
    in_flight_ += unsubmitted_;
    unsubmitted_ = 0;
  }

  // A completion the kernel has already posted, if any.
  bool peek(uring_completion& c) noexcept {
    io_uring_cqe* cqe = nullptr;
    if (io_uring_peek_cqe(&ring_, &cqe) != 0 || cqe == nullptr) return false;
    take(cqe, c);
    return true;
  }
  // Submits what is prepared and waits up to `timeout` for one completion (one system call).
  bool submit_and_wait(uring_completion& c, std::chrono::nanoseconds timeout) noexcept {
    __kernel_timespec ts{timeout.count() / 1'000'000'000, timeout.count() % 1'000'000'000};
    io_uring_cqe* cqe = nullptr;
    in_flight_ += unsubmitted_;
    unsubmitted_ = 0;
    if (io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr) < 0 || cqe == nullptr) return false;
    take(cqe, c);
    return true;
  }
  // Waits, without a limit, for one completion of a request in flight.
  bool wait(uring_completion& c) noexcept {
    io_uring_cqe* cqe = nullptr;
    if (in_flight_ == 0 || io_uring_wait_cqe(&ring_, &cqe) != 0 || cqe == nullptr) return false;
    take(cqe, c);
    return true;
  }

  void close() noexcept {
    if (active_) io_uring_queue_exit(&ring_);
    active_ = false;
    in_flight_ = unsubmitted_ = 0;
  }

 private:
  void take(io_uring_cqe* cqe, uring_completion& c) noexcept {
    c = {io_uring_cqe_get_data64(cqe), cqe->res};
    io_uring_cqe_seen(&ring_, cqe);
    --in_flight_;
  }

  io_uring ring_{};
  bool active_ = false;
  std::size_t in_flight_ = 0;    // submitted to the kernel, not yet completed
  std::size_t unsubmitted_ = 0;  // prepared in the ring, not yet submitted
};

}  // namespace kvtier::detail
