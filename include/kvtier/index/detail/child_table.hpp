#pragma once
// One flat open-addressing table for every parent → child edge of the prefix index, keyed by a
// 64-bit hash of (parent node, tokens of the child's first page). No allocation per node; linear
// probing with backward-shift deletion, so no tombstones; 8 bytes a slot, at most half full, and
// halved when it falls below an eighth. Equal hashes may repeat: find() asks the caller to confirm
// each candidate (same parent, same tokens), so a collision can never return a wrong child.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kvtier/core/strong_id.hpp"

namespace kvtier::detail {

// The edge hash: the parent's id and the first (up to 64) tokens of the child's first page,
// folded 16 bytes at a time through a 64x64->128-bit multiply (wyhash's mixing step).
inline std::uint64_t fold_multiply(std::uint64_t a, std::uint64_t b) noexcept {
  const unsigned __int128 r = static_cast<unsigned __int128>(a) * b;
  return std::uint64_t(r) ^ std::uint64_t(r >> 64);
}

inline std::uint64_t edge_hash(std::uint32_t parent, const token_id* tokens, std::size_t count) noexcept {
  static_assert(sizeof(token_id) == 4);
  constexpr std::uint64_t k0 = 0xa0761d6478bd642full, k1 = 0xe7037ed1a0b428dbull, k2 = 0x8ebc6af09c88c6e3ull;
  const auto* p = reinterpret_cast<const unsigned char*>(tokens);
  std::size_t len = (count < 64 ? count : 64) * sizeof(token_id);
  std::uint64_t h = fold_multiply(std::uint64_t(parent) ^ k0, len ^ k1);
  for (; len >= 16; len -= 16, p += 16) {
    std::uint64_t a, b;
    std::memcpy(&a, p, 8);
    std::memcpy(&b, p + 8, 8);
    h = fold_multiply(a ^ k1 ^ h, b ^ k2);
  }
  if (len > 0) {  // 4, 8 or 12 bytes left
    std::uint64_t a = 0, b = 0;
    std::memcpy(&a, p, len < 8 ? len : 8);
    if (len > 8) std::memcpy(&b, p + 8, len - 8);
    h = fold_multiply(a ^ k1 ^ h, b ^ k2);
  }
  return fold_multiply(h ^ k0, k2);
}

class child_table {
 public:
  static constexpr std::uint32_t none = UINT32_MAX;

  child_table() { slots_.resize(16); }

  // The first value stored under `hash` that `accept` confirms, or none.
  template <class Accept>
  std::uint32_t find(std::uint64_t hash, Accept&& accept) const {
    const std::uint32_t t = tag(hash);
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = t & mask;; i = (i + 1) & mask) {
      const entry& e = slots_[i];
      if (e.value == none) return none;
      if (e.tag == t && accept(e.value)) return e.value;
    }
  }

  void insert(std::uint64_t hash, std::uint32_t value) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.size() * 2);
    place(tag(hash), value);
    ++size_;
  }

  // Re-points the entry (hash, from) at `to`. Returns false when no such entry exists.
  bool replace(std::uint64_t hash, std::uint32_t from, std::uint32_t to) noexcept {
    const std::size_t i = locate(tag(hash), from);
    if (i == npos) return false;
    slots_[i].value = to;
    return true;
  }

  // Removes the entry (hash, value). Returns false when no such entry exists.
  bool erase(std::uint64_t hash, std::uint32_t value) {
    std::size_t i = locate(tag(hash), value);
    if (i == npos) return false;
    // Backward shift: pull later entries of the probe run into the hole when that keeps them
    // reachable from their home slot.
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
      if (slots_[j].value == none) break;
      const std::size_t h = slots_[j].tag & mask;
      const bool movable = (i <= j) ? (h <= i || h > j) : (h <= i && h > j);
      if (movable) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = entry{};
    --size_;
    if (slots_.size() > 16 && size_ * 8 < slots_.size()) rehash(slots_.size() / 2);  // the tree shrank
    return true;
  }

  std::size_t size() const noexcept { return size_; }
  std::size_t memory_bytes() const noexcept { return slots_.capacity() * sizeof(entry); }

 private:
  struct entry {
    std::uint32_t tag = 0;
    std::uint32_t value = none;
  };
  static constexpr std::size_t npos = SIZE_MAX;

  static std::uint32_t tag(std::uint64_t h) noexcept { return std::uint32_t(h ^ (h >> 32)); }

  std::size_t locate(std::uint32_t t, std::uint32_t value) const noexcept {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = t & mask;; i = (i + 1) & mask) {
      if (slots_[i].value == none) return npos;
      if (slots_[i].tag == t && slots_[i].value == value) return i;
    }
  }

  void place(std::uint32_t t, std::uint32_t value) noexcept {
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = t & mask;
    while (slots_[i].value != none) i = (i + 1) & mask;
    slots_[i] = entry{t, value};
  }

  void rehash(std::size_t slots) {
    std::vector<entry> old(slots);
    old.swap(slots_);
    for (const entry& e : old)
      if (e.value != none) place(e.tag, e.value);
  }

  std::vector<entry> slots_;
  std::size_t size_ = 0;
};

}  // namespace kvtier::detail
