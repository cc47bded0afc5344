#pragma once
// slot_directory: which page each slot of a file tier holds, and in which state. The index from
// page address to slot, the free slots (handed out lowest first), LRU order with eviction of the
// least recently used idle page, read pins (a slot read from is never reused under the read), and
// restart recovery (the newest copy of a page wins). No I/O: the tier does that.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "kvtier/storage/detail/slot_lru.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/request.hpp"

namespace kvtier::detail {

enum class slot_state : std::uint8_t { free, writing, valid, clearing };

struct slot_meta {
  page_address where;
  std::uint64_t sequence = 0;
  std::uint64_t use = 0;   // when the write was requested (its LRU place once published)
  std::uint32_t pins = 0;  // reads in flight
  slot_state state = slot_state::free;
  bool retired = false;    // left the index while pinned; freed when the last read ends
};

// A page found intact in a slot at open.
struct found_page {
  std::uint32_t slot;
  page_address where;
  std::uint64_t sequence;
};

// What a page found at open must be for this tier to serve it.
struct recovery_expectation {
  std::uint64_t shape_fingerprint = 0;
  std::uint32_t codec_id = 0;
  std::size_t page_bytes = 0;
  std::size_t max_payload_bytes = 0;
};
struct recovery_counts {
  std::size_t recovered = 0;      // pages indexed
  std::size_t corrupted = 0;      // damaged headers
  std::size_t foreign = 0;        // intact pages of another shape, codec or page size
  std::uint64_t max_sequence = 0; // the newest write found: new writes continue after it
};

class slot_directory {
 public:
  slot_directory() = default;
  // Every slot free (recover() then indexes what the files hold).
  explicit slot_directory(std::size_t slots) : slots_(slots), lru_(slots) {
    for (std::uint32_t s = std::uint32_t(slots); s-- > 0;) free_.push_back(s);
  }

  std::size_t capacity() const noexcept { return slots_.size(); }
  std::size_t pages() const noexcept { return index_.size(); }
  const slot_meta& operator[](std::uint32_t s) const noexcept { return slots_[s]; }
  std::optional<std::uint32_t> find(const page_address& where) const noexcept {
    auto it = index_.find(where);
    if (it == index_.end()) return std::nullopt;
    return it->second;
  }
  bool maps(const page_address& where, std::uint32_t s) const noexcept {
    auto it = index_.find(where);
    return it != index_.end() && it->second == s;
  }

  // Restart recovery: `scan(visit)` calls visit(slot, header) for each slot ever written. Intact
  // pages this tier can serve are indexed, oldest first so that the newest copy of a page wins
  // and ends at the LRU front; damaged and foreign ones are counted; every other slot is free.
  template <class Scan>
  recovery_counts recover(Scan&& scan, const recovery_expectation& want) {
    std::vector<found_page> pages;
    recovery_counts n;
    scan([&](std::uint32_t s, const page_header& h) {
      if (!header_intact(h) || h.payload_bytes > want.max_payload_bytes) {
        ++n.corrupted;
      } else if (h.shape_fingerprint != want.shape_fingerprint || h.codec_id != want.codec_id ||
                 h.page_bytes != want.page_bytes) {
        ++n.foreign;
      } else {
        pages.push_back({s, h.address(), h.sequence});
        n.max_sequence = std::max(n.max_sequence, h.sequence);
      }
    });
    std::sort(pages.begin(), pages.end(), [](const found_page& a, const found_page& b) { return a.sequence < b.sequence; });
    for (const found_page& p : pages) {
      if (auto it = index_.find(p.where); it != index_.end()) {
        lru_.remove(it->second);
        slots_[it->second] = slot_meta{};
        it->second = p.slot;
      } else {
        index_.emplace(p.where, p.slot);
      }
      slots_[p.slot] = slot_meta{p.where, p.sequence, ++clock_, 0, slot_state::valid, false};
      lru_.insert(p.slot, slots_[p.slot].use);
    }
    free_.clear();
    for (std::uint32_t s = std::uint32_t(slots_.size()); s-- > 0;)  // lowest first: files fill in order
      if (slots_[s].state == slot_state::free) free_.push_back(s);
    n.recovered = index_.size();
    return n;
  }

  // A slot for a new page: a free one, else the least recently used idle page's (counted in
  // `evictions`). None when every slot is pinned or in flight.
  std::optional<std::uint32_t> take(std::uint64_t& evictions) noexcept {
    if (!free_.empty()) {
      const std::uint32_t s = free_.back();
      free_.pop_back();
      return s;
    }
    for (std::uint32_t s = lru_.back(); s != slot_lru::none; s = lru_.prev(s)) {
      if (slots_[s].pins != 0) continue;
      lru_.remove(s);
      index_.erase(slots_[s].where);
      ++evictions;
      return s;
    }
    return std::nullopt;
  }
  // A slot taken, now being written with `where`. Its recency is this moment's, not the
  // completion's, so the pages of one batch age in the order they were put.
  void begin_write(std::uint32_t s, const page_address& where, std::uint64_t sequence) noexcept {
    slots_[s] = slot_meta{where, sequence, ++clock_, 0, slot_state::writing, false};
  }
  // A slot taken whose write failed or never started: free again.
  void abandon(std::uint32_t s) noexcept {
    slots_[s] = slot_meta{};
    free_.push_back(s);
  }
  // The write into s completed: s now holds its page (an older copy leaves; the newer one has the
  // higher sequence, so it also wins at recovery).
  void publish(std::uint32_t s) {
    slot_meta& m = slots_[s];
    if (auto it = index_.find(m.where); it != index_.end()) {
      release(it->second);
      it->second = s;
    } else {
      index_.emplace(m.where, s);
    }
    m.state = slot_state::valid;
    lru_.insert(s, m.use);
  }
  // Forgets the free slots in [first, first + n) (a file the filesystem refused); returns how many.
  std::size_t drop_free_range(std::size_t first, std::size_t n) noexcept {
    const std::size_t before = free_.size();
    std::erase_if(free_, [&](std::uint32_t s) { return s >= first && s < first + n; });
    return before - free_.size();
  }

  // A read of s starts; returns its use stamp, for touch() once the page is served.
  std::uint64_t pin(std::uint32_t s) noexcept {
    ++slots_[s].pins;
    return ++clock_;
  }
  // A read of s ended. Frees s when it was retired meanwhile and this was its last read.
  void unpin(std::uint32_t s) noexcept {
    slot_meta& m = slots_[s];
    --m.pins;
    if (m.retired && m.pins == 0) abandon(s);
  }
  // A page served by the read stamped `use` (from pin): recently used as of that request.
  void touch(std::uint32_t s, std::uint64_t use) noexcept { lru_.insert(s, use); }

  // Takes s's page out of the index and the LRU, to be cleared on disk (no reads find it again).
  void unmap(std::uint32_t s) noexcept {
    index_.erase(slots_[s].where);
    lru_.remove(s);
    slots_[s].state = slot_state::clearing;
  }
  // The page in s leaves: s is free now, or once its last read ends.
  void release(std::uint32_t s) noexcept {
    slot_meta& m = slots_[s];
    lru_.remove(s);
    if (m.pins > 0) {
      m.retired = true;
      return;
    }
    abandon(s);
  }

 private:
  std::vector<slot_meta> slots_;
  std::vector<std::uint32_t> free_;
  slot_lru lru_;
  std::uint64_t clock_ = 0;  // use stamps: writes begun and reads started, in request order
  std::unordered_map<page_address, std::uint32_t> index_;
};

}  // namespace kvtier::detail
