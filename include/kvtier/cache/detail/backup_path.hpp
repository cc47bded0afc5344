#pragma once
// The cache's device → host backup path: one copy stream of the copy strategy (a thread in CPU
// mode, a CUDA stream on a GPU), the backups in flight (the pages each batch fills), and the pages
// policies asked to back up, started at the next poll. Scheduler thread only.
#include <cstddef>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::detail {

template <class Copy>
class backup_path {
 public:
  using stream_type = typename Copy::stream_type;
  using event_type = typename Copy::event_type;

  backup_path() : stream_(std::make_unique<stream_type>()) {}
  backup_path(const backup_path&) = delete;
  backup_path& operator=(const backup_path&) = delete;
  ~backup_path() { stop(); }
  // Drains the copies in flight and stops the stream.
  void stop() { stream_.reset(); }

  // Starts the copies pairs[k] (device slot → host slot) of pages[k] (moved from on success). A
  // refusal (a geometry mismatch) queues nothing and is returned.
  template <class DeviceView, class HostView>
  result<void> start(const DeviceView& device, const HostView& host, std::span<const transfer::page_pair> pairs,
                     std::vector<page_id>& pages) {
    const result<event_type> e = Copy::backup(*stream_, device, host, pairs);
    if (!e) return e.err();
    pending_.push_back(pending{*e, std::move(pages)});
    return {};
  }
  // Waits for the backups in flight (memory copies, not I/O); false when there were none.
  bool settle() {
    if (pending_.empty()) return false;
    Copy::synchronize(*stream_, pending_.back().done);
    return true;
  }
  // landed(page) for every page of the batches that finished, oldest first; never waits.
  template <class Landed>
  void collect(Landed&& landed) {
    std::size_t done = 0;
    while (done < pending_.size() && Copy::query(*stream_, pending_[done].done)) ++done;
    for (std::size_t k = 0; k < done; ++k)
      for (const page_id p : pending_[k].pages) landed(p);
    pending_.erase(pending_.begin(), pending_.begin() + std::ptrdiff_t(done));
  }

  // Pages a policy asked to back up.
  void queue(page_id p) { queue_.push_back(p); }
  void queue(std::span<const page_id> pages) { queue_.insert(queue_.end(), pages.begin(), pages.end()); }
  std::vector<page_id> take_queue() { return std::exchange(queue_, {}); }
  bool idle() const noexcept { return pending_.empty() && queue_.empty(); }

 private:
  struct pending {
    event_type done;
    std::vector<page_id> pages;
  };
  std::unique_ptr<stream_type> stream_;
  std::vector<pending> pending_;
  std::vector<page_id> queue_;
};

}  // namespace kvtier::detail
