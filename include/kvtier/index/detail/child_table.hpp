#pragma once
// One flat open-addressing table for every parent → child edge of the prefix index, keyed by the
// chained key of the child's first page (which already encodes the parent). No allocation per
// node; linear probing with backward-shift deletion, so no tombstones. Equal keys may repeat (a
// 128-bit collision stays correct): find() asks the caller to confirm each candidate.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvtier/core/page_key.hpp"

namespace kvtier::detail {

class child_table {
 public:
  static constexpr std::uint32_t none = UINT32_MAX;

  child_table() { slots_.resize(16); }

  // The first value stored under `key` that `accept` confirms, or none.
  template <class Accept>
  std::uint32_t find(page_key key, Accept&& accept) const {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = home(key);; i = (i + 1) & mask) {
      const entry& e = slots_[i];
      if (e.value == none) return none;
      if (e.key == key && accept(e.value)) return e.value;
    }
  }

  void insert(page_key key, std::uint32_t value) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    place(key, value);
    ++size_;
  }

  // Re-points the entry (key, from) at `to`. Returns false when no such entry exists.
  bool replace(page_key key, std::uint32_t from, std::uint32_t to) noexcept {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = home(key);; i = (i + 1) & mask) {
      entry& e = slots_[i];
      if (e.value == none) return false;
      if (e.key == key && e.value == from) {
        e.value = to;
        return true;
      }
    }
  }

  // Removes the entry (key, value). Returns false when no such entry exists.
  bool erase(page_key key, std::uint32_t value) noexcept {
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = home(key);
    for (;; i = (i + 1) & mask) {
      if (slots_[i].value == none) return false;
      if (slots_[i].key == key && slots_[i].value == value) break;
    }
    // Backward shift: pull later entries of the probe run into the hole when that keeps them
    // reachable from their home slot.
    for (std::size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
      if (slots_[j].value == none) break;
      const std::size_t h = home(slots_[j].key);
      const bool movable = (i <= j) ? (h <= i || h > j) : (h <= i && h > j);
      if (movable) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = entry{};
    --size_;
    return true;
  }

  std::size_t size() const noexcept { return size_; }
  std::size_t memory_bytes() const noexcept { return slots_.capacity() * sizeof(entry); }

 private:
  struct entry {
    page_key key{};
    std::uint32_t value = none;
  };

  std::size_t home(page_key k) const noexcept { return std::size_t(k.lo ^ (k.hi >> 7)) & (slots_.size() - 1); }

  void place(page_key key, std::uint32_t value) noexcept {
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = home(key);
    while (slots_[i].value != none) i = (i + 1) & mask;
    slots_[i] = entry{key, value};
  }

  void grow() {
    std::vector<entry> old(slots_.size() * 2);
    old.swap(slots_);
    for (const entry& e : old)
      if (e.value != none) place(e.key, e.value);
  }

  std::vector<entry> slots_;
  std::size_t size_ = 0;
};

}  // namespace kvtier::detail
