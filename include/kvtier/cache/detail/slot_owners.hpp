#pragma once
// Who holds each device slot, so that the engine's calls can be checked in every build: a slot is
// free, the engine's (handed out by allocate(), not committed yet), a page's (in the index, or
// being loaded into), or a lease's duplicate of an indexed page (freed at release). Commit and
// free() accept only the engine's slots, each once; anything else is an error value.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kvtier/core/strong_id.hpp"

namespace kvtier::detail {

enum class slot_use : std::uint8_t { free, engine, indexed, lease_private, checking };

class slot_owners {
 public:
  explicit slot_owners(std::size_t slots) : use_(slots, slot_use::free) {}

  slot_use operator[](device_slot s) const noexcept { return use_[s.value()]; }
  void set(device_slot s, slot_use u) noexcept { use_[s.value()] = u; }
  void set(std::span<const device_slot> slots, slot_use u) noexcept {
    for (const device_slot s : slots) use_[s.value()] = u;
  }
  bool holds(device_slot s) const noexcept { return s.valid() && s.value() < use_.size(); }
  std::size_t size() const noexcept { return use_.size(); }

  // Whether every slot is the engine's, each once. Changes nothing.
  bool all_engine(std::span<const device_slot> slots) noexcept {
    std::size_t k = 0;
    for (; k < slots.size(); ++k) {
      const device_slot s = slots[k];
      if (!holds(s) || use_[s.value()] != slot_use::engine) break;
      use_[s.value()] = slot_use::checking;  // a repeat finds it taken
    }
    for (std::size_t j = 0; j < k; ++j) use_[slots[j].value()] = slot_use::engine;
    return k == slots.size();
  }

 private:
  std::vector<slot_use> use_;
};

}  // namespace kvtier::detail
