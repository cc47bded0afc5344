#pragma once
// An intrusive LRU list over slot numbers, ordered by use stamps: no allocation after setup.
// Recency is the order requests were made in, not the order their I/O completed: `insert(s, use)`
// places s behind every slot used later, so completions that arrive out of order (io_uring
// reorders within its queue depth) still leave the list in request order. In order, insert is
// O(1); out of order it walks past at most the uses still in flight.
#include <cstdint>
#include <limits>
#include <vector>

namespace kvtier::detail {

class slot_lru {
 public:
  static constexpr std::uint32_t none = std::numeric_limits<std::uint32_t>::max();

  explicit slot_lru(std::size_t slots = 0) : prev_(slots, none), next_(slots, none), use_(slots, 0), linked_(slots, false) {}

  bool linked(std::uint32_t s) const noexcept { return linked_[s]; }
  std::uint32_t back() const noexcept { return tail_; }  // least recently used, or none
  std::uint32_t front() const noexcept { return head_; }
  std::uint32_t prev(std::uint32_t s) const noexcept { return prev_[s]; }  // towards the front

  std::uint64_t use(std::uint32_t s) const noexcept { return use_[s]; }

  // Links s with use stamp `use`, behind every linked slot with a later stamp (keeps its place
  // when it already has a later one: a stale completion never makes a slot look older).
  void insert(std::uint32_t s, std::uint64_t use) noexcept {
    if (linked_[s]) {
      if (use_[s] >= use) return;
      remove(s);
    }
    use_[s] = use;
    std::uint32_t after = none;  // the slot s goes behind (none: s becomes the head)
    for (std::uint32_t n = head_; n != none && use_[n] > use; n = next_[n]) after = n;
    const std::uint32_t before = after == none ? head_ : next_[after];
    prev_[s] = after;
    next_[s] = before;
    if (after != none) next_[after] = s; else head_ = s;
    if (before != none) prev_[before] = s; else tail_ = s;
    linked_[s] = true;
  }
  void remove(std::uint32_t s) noexcept {
    if (!linked_[s]) return;
    if (prev_[s] != none) next_[prev_[s]] = next_[s]; else head_ = next_[s];
    if (next_[s] != none) prev_[next_[s]] = prev_[s]; else tail_ = prev_[s];
    prev_[s] = next_[s] = none;
    linked_[s] = false;
  }

 private:
  std::vector<std::uint32_t> prev_, next_;
  std::vector<std::uint64_t> use_;
  std::vector<bool> linked_;
  std::uint32_t head_ = none, tail_ = none;
};

}  // namespace kvtier::detail
