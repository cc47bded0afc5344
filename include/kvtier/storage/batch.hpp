#pragma once
// storage_batch: the caller-owned completion of one submitted batch. A backend fills one status per
// request (in request order); the caller polls done() or waits on the backend.
#include <algorithm>
#include <cassert>
#include <cstddef>
#include <span>
#include <vector>

#include "kvtier/core/error.hpp"

namespace kvtier {

class storage_batch {
 public:
  storage_batch() = default;
  // A batch in flight is referenced by its backend: it must not move or die until done().
  storage_batch(const storage_batch&) = delete;
  storage_batch& operator=(const storage_batch&) = delete;
  ~storage_batch() { assert(pending_ == 0 && "kvtier: storage_batch destroyed while in flight"); }

  // True when every request of the batch has completed (also before the first submission).
  bool done() const noexcept { return pending_ == 0; }
  std::size_t size() const noexcept { return status_.size(); }
  std::size_t pending() const noexcept { return pending_; }
  // Per-request outcome, in request order. get: ok = loaded and verified, not_found = miss,
  // corrupted = failed verification (a miss). contains: ok = present, not_found = absent.
  std::span<const error> status() const noexcept { return status_; }
  const error& operator[](std::size_t i) const noexcept { return status_[i]; }
  std::size_t count(errc c) const noexcept {
    return std::size_t(std::count_if(status_.begin(), status_.end(), [c](const error& e) { return e.code == c; }));
  }
  bool all_ok() const noexcept { return done() && count(errc::ok) == status_.size(); }

  // ---- backend side ----------------------------------------------------------------------------
  // Starts a batch of n requests, all pending. Returns false (and leaves the batch alone) when it
  // is still in flight or memory runs out.
  bool begin(std::size_t n) noexcept {
    if (pending_ != 0) return false;
    try {
      status_.resize(n);
      std::fill(status_.begin(), status_.end(), error{errc::busy, 0});
    } catch (...) {
      return false;
    }
    pending_ = n;
    return true;
  }
  // Records the outcome of request i; each request completes exactly once.
  void complete(std::size_t i, error e) noexcept {
    assert(i < status_.size() && pending_ > 0);
    status_[i] = e;
    --pending_;
  }

 private:
  std::vector<error> status_;
  std::size_t pending_ = 0;
};

}  // namespace kvtier
