#pragma once
// An O(1) allocator of fixed-size slots: a stack of free slot ids plus one state byte per slot.
// It hands out ids only; pools turn ids into addresses. Not thread-safe: one owner serialises calls.
//
// Errors are values, never exceptions, never assertions:
//  - allocate when too few slots are free      -> errc::capacity_exhausted (nothing is taken);
//  - free of an id out of range or invalid     -> errc::invalid_argument (a foreign slot);
//  - free of a slot that is not allocated      -> errc::invalid_argument (a double free);
//  both rejections leave the allocator unchanged and count in rejected_frees.
// Ids carry no pool identity: a slot of another pool of the same tier that is in range and
// allocated here cannot be told apart (the tier is in the type: slot_id<device_tier> never mixes
// with slot_id<host_tier>).
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/memory/pool_stats.hpp"
#include "kvtier/memory/slot_geometry.hpp"

namespace kvtier::memory {

template <class Tier>
class slot_allocator {
 public:
  using tier_type = Tier;
  using slot_type = slot_id<Tier>;

  // Every slot starts free; allocate() hands out 0, 1, 2, … first. Throws config_error for a
  // capacity of 0 or above max_slots.
  explicit slot_allocator(std::size_t capacity) : in_use_(checked(capacity), 0) {
    free_.reserve(capacity);
    for (std::size_t i = capacity; i-- > 0;) free_.push_back(std::uint32_t(i));
  }

  // One slot, or capacity_exhausted.
  result<slot_type> allocate() noexcept {
    if (free_.empty()) {
      ++failed_allocations_;
      return make_error(errc::capacity_exhausted);
    }
    const std::uint32_t s = free_.back();
    free_.pop_back();
    in_use_[s] = 1;
    note_allocated(1);
    return slot_type{s};
  }

  // out.size() slots written to out, or capacity_exhausted and nothing taken (all or nothing).
  result<void> allocate(std::span<slot_type> out) noexcept {
    if (out.size() > free_.size()) {
      ++failed_allocations_;
      return make_error(errc::capacity_exhausted);
    }
    for (slot_type& o : out) {
      const std::uint32_t s = free_.back();
      free_.pop_back();
      in_use_[s] = 1;
      o = slot_type{s};
    }
    note_allocated(out.size());
    return {};
  }

  // Gives one slot back; invalid_argument for a foreign or already free slot.
  result<void> free(slot_type s) noexcept {
    if (!is_allocated(s)) {
      ++rejected_frees_;
      return make_error(errc::invalid_argument);
    }
    in_use_[s.value()] = 0;
    free_.push_back(s.value());
    ++freed_;
    return {};
  }

  // Gives a batch back, all or nothing: one foreign, already free or repeated id rejects the whole
  // batch with invalid_argument and frees none of it.
  result<void> free(std::span<const slot_type> slots) noexcept {
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (!is_allocated(slots[i])) {
        for (std::size_t j = 0; j < i; ++j) in_use_[slots[j].value()] = 1;  // undo the marks
        ++rejected_frees_;
        return make_error(errc::invalid_argument);
      }
      in_use_[slots[i].value()] = 0;  // marks now, so a repeat later in the batch is caught
    }
    for (slot_type s : slots) free_.push_back(s.value());
    freed_ += slots.size();
    return {};
  }

  // True when s is in range and currently handed out.
  bool is_allocated(slot_type s) const noexcept {
    return s.valid() && s.value() < in_use_.size() && in_use_[s.value()] != 0;
  }
  // True when s names a slot of this allocator (allocated or not).
  bool contains(slot_type s) const noexcept { return s.valid() && s.value() < in_use_.size(); }

  std::size_t capacity() const noexcept { return in_use_.size(); }
  std::size_t used() const noexcept { return in_use_.size() - free_.size(); }
  std::size_t available() const noexcept { return free_.size(); }
  std::size_t high_water() const noexcept { return high_water_; }

  // Slot counts and call counters; byte fields are left for the pool to fill.
  pool_stats stats() const noexcept {
    pool_stats st;
    st.capacity_slots = capacity();
    st.used_slots = used();
    st.free_slots = available();
    st.high_water_slots = high_water_;
    st.allocated = allocated_;
    st.freed = freed_;
    st.failed_allocations = failed_allocations_;
    st.rejected_frees = rejected_frees_;
    return st;
  }

 private:
  static std::size_t checked(std::size_t capacity) {
    if (capacity == 0) throw config_error("kvtier: a pool needs at least one slot");
    if (capacity > max_slots) throw config_error("kvtier: a pool holds at most 2^32 - 2 slots");
    return capacity;
  }
  void note_allocated(std::size_t n) noexcept {
    allocated_ += n;
    if (used() > high_water_) high_water_ = used();
  }

  std::vector<std::uint32_t> free_;   // stack of free slot ids, next to hand out at the back
  std::vector<std::uint8_t> in_use_;  // 1 while the slot is handed out
  std::size_t high_water_ = 0;
  std::uint64_t allocated_ = 0;
  std::uint64_t freed_ = 0;
  std::uint64_t failed_allocations_ = 0;
  std::uint64_t rejected_frees_ = 0;
};

}  // namespace kvtier::memory
