#pragma once
// An intrusive LRU list over slot numbers: O(1) touch, remove and pop, no allocation after setup.
#include <cstdint>
#include <limits>
#include <vector>

namespace kvtier::detail {

class slot_lru {
 public:
  static constexpr std::uint32_t none = std::numeric_limits<std::uint32_t>::max();

  explicit slot_lru(std::size_t slots = 0) : prev_(slots, none), next_(slots, none), linked_(slots, false) {}

  bool linked(std::uint32_t s) const noexcept { return linked_[s]; }
  std::uint32_t back() const noexcept { return tail_; }  // least recently used, or none
  std::uint32_t front() const noexcept { return head_; }
  std::uint32_t prev(std::uint32_t s) const noexcept { return prev_[s]; }  // towards the front

  void push_front(std::uint32_t s) noexcept {
    if (linked_[s]) remove(s);
    prev_[s] = none;
    next_[s] = head_;
    if (head_ != none) prev_[head_] = s;
    head_ = s;
    if (tail_ == none) tail_ = s;
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
  std::vector<bool> linked_;
  std::uint32_t head_ = none, tail_ = none;
};

}  // namespace kvtier::detail
