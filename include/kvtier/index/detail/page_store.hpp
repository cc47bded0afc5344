#pragma once
// The prefix index's pages, indexed by page id: tokens (one array), a 16-byte record (a 4-byte
// state: tiers, in-flight tiers, lock count; device slot; host slot; the node holding the page)
// in a second array, and the page key once someone asked for it in a third. Ids are handed out lowest first (a free bitmap), so the tail
// above the highest live page can be given back when eviction shrinks the tree. 16 bytes of
// bookkeeping a page (+ 16 for a key once keys are asked for); tokens apart.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <unordered_map>

#include "kvtier/core/page_key.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/index/detail/mapped_array.hpp"
#include "kvtier/index/residency.hpp"

namespace kvtier::detail {

// Tiers (bits 0-7), in-flight tiers (8-15) and the lock count (16-31) in one 32-bit word: eviction
// judges a page by one load, and every write is a whole-word store, which (unlike a byte store)
// cannot alias the index's own pointers, so the compiler keeps them in registers across it.
// Lock counts of 0xFFFF and more keep the excess in page_store's overflow map.
struct page_state {
  static constexpr std::uint32_t lock_one = 1u << 16;
  std::uint32_t word = 0;

  static constexpr page_state of(std::uint8_t tiers, std::uint8_t in_flight) noexcept {
    return {std::uint32_t(tiers) | std::uint32_t(in_flight & tiers) << 8};
  }
  constexpr std::uint8_t tiers() const noexcept { return std::uint8_t(word); }
  constexpr std::uint8_t in_flight() const noexcept { return std::uint8_t(word >> 8); }
  constexpr std::uint8_t ready() const noexcept { return std::uint8_t(word & ~(word >> 8)); }
  constexpr std::uint32_t locks() const noexcept { return word >> 16; }
  // No copy anywhere and no lock: the page may leave the tree.
  constexpr bool unused() const noexcept { return (word & 0xFFFF00FFu) == 0; }
  // Holds tier bit t ready, nothing else in flight, no lock: evictable from t when a leaf of t.
  constexpr bool free_to_drop(std::uint32_t bit) const noexcept { return (word & bit) != 0 && (word >> 8) == 0; }
  // Drops tier bit t (its in-flight bit too).
  constexpr void drop(std::uint32_t bit) noexcept { word &= ~(bit | bit << 8); }
  constexpr void set_tiers(std::uint8_t tiers, std::uint8_t in_flight) noexcept {
    word = (word & 0xFFFF0000u) | of(tiers, in_flight).word;
  }
};
static_assert(sizeof(page_state) == 4);

// insert()'s residency when every page gets the same one: append_pages then sets the run's pages
// from one precomputed state word and slot pair.
struct same_residency {
  page_residency residency;
  page_residency operator()(std::size_t) const noexcept { return residency; }
};

// One page's bookkeeping, 16 bytes in one place: a new page is one store, its state one load.
struct page_record {
  page_state state{};
  device_slot device{};
  host_slot host{};
  std::uint32_t owner = UINT32_MAX;  // the node holding the page; none (UINT32_MAX) when free
};
static_assert(sizeof(page_record) == 16);

template <class PageSize>
class page_store {
 public:
  static constexpr std::uint32_t none = UINT32_MAX;
  static constexpr std::size_t page_limit = std::size_t(UINT32_MAX) - 1;

  explicit page_store(PageSize ps) : ps_(ps) {}

  std::size_t tokens_per_page() const noexcept { return ps_.tokens(); }
  token_id* tokens(std::uint32_t p) noexcept { return tokens_.data() + std::size_t(p) * ps_.tokens(); }
  const token_id* tokens(std::uint32_t p) const noexcept { return tokens_.data() + std::size_t(p) * ps_.tokens(); }
  page_state& state(std::uint32_t p) noexcept { return rec_[p].state; }
  const page_record* records() const noexcept { return rec_.data(); }
  const page_state& state(std::uint32_t p) const noexcept { return rec_[p].state; }
  device_slot& device(std::uint32_t p) noexcept { return rec_[p].device; }
  host_slot& host(std::uint32_t p) noexcept { return rec_[p].host; }
  std::uint32_t& owner(std::uint32_t p) noexcept { return rec_[p].owner; }
  std::uint32_t owner(std::uint32_t p) const noexcept { return rec_[p].owner; }
  bool live(std::uint32_t p) const noexcept { return p < rec_.size() && rec_[p].owner != none; }

  page_residency residency(std::uint32_t p) const noexcept {
    return page_residency{tier_set{rec_[p].state.tiers()}, tier_set{rec_[p].state.in_flight()}, rec_[p].device, rec_[p].host};
  }
  // Stores r (normalized: in_flight within tiers, slots of absent tiers cleared).
  void set_residency(std::uint32_t p, const page_residency& r) noexcept {
    rec_[p].state.set_tiers(r.tiers.bits, r.in_flight.bits);
    rec_[p].device = r.tiers.has(tier_id::device) ? r.device : device_slot{};
    rec_[p].host = r.tiers.has(tier_id::host) ? r.host : host_slot{};
  }

  std::uint32_t locks(std::uint32_t p) const {
    const std::uint32_t small = rec_[p].state.locks();
    if (small < 0xFFFF) return small;
    const auto it = lock_overflow_.find(p);
    return small + (it == lock_overflow_.end() ? 0 : it->second);
  }
  void add_lock(std::uint32_t p) {
    if (rec_[p].state.locks() < 0xFFFF) rec_[p].state.word += page_state::lock_one;
    else ++lock_overflow_[p];
  }
  void remove_lock(std::uint32_t p) {  // the page holds a lock
    if (rec_[p].state.locks() == 0xFFFF) {
      if (auto it = lock_overflow_.find(p); it != lock_overflow_.end()) {
        if (--it->second == 0) lock_overflow_.erase(it);
        return;
      }
    }
    rec_[p].state.word -= page_state::lock_one;
  }

  // The memoized page key; zero (root_page_key) while unknown. `keys_` exists once asked for.
  page_key known_key(std::uint32_t p) const noexcept { return p < keys_.size() ? keys_[p] : page_key{}; }
  void remember_key(std::uint32_t p, page_key k) const {
    if (keys_.size() < rec_.size()) keys_.resize(rec_.size());
    keys_[p] = k;
  }

  // Hands out the k lowest free ids, ascending, into out[0..k); each is then set up by init().
  // A word whose free bits form one run is written as one ascending sequence.
  void take_ids(std::size_t k, std::uint32_t* out) {
    std::size_t w = lowest_free_word_;
    while (k > 0) {
      // Full words are skipped eight at a time (after an eviction the lowest free word can lie
      // hundreds of full words below the next free id).
      const std::uint64_t* const f = free_.data();
      const std::size_t words = free_.size();
      while (w + 8 <= words && (f[w] | f[w + 1] | f[w + 2] | f[w + 3] | f[w + 4] | f[w + 5] | f[w + 6] | f[w + 7]) == 0)
        w += 8;
      while (w < words && f[w] == 0) ++w;
      if (w == words) w = add_free_ids();
      std::uint64_t bits = free_[w];
      const std::uint32_t base = std::uint32_t(w * 64);
      const unsigned at = unsigned(std::countr_zero(bits));
      const std::uint64_t run = bits >> at;
      if ((run & (run + 1)) == 0) {  // one run of free ids (a fresh word, a freed node tail)
        const std::size_t len = std::min<std::size_t>(std::size_t(std::countr_one(run)), k);
        for (std::size_t i = 0; i < len; ++i) out[i] = base + at + std::uint32_t(i);
        out += len;
        k -= len;
        bits = len == 64 ? 0 : bits & ~(((std::uint64_t{1} << len) - 1) << at);
      } else {
        for (; bits != 0 && k > 0; --k) {
          *out++ = base + std::uint32_t(std::countr_zero(bits));
          bits &= bits - 1;
        }
      }
      free_[w] = bits;
    }
    lowest_free_word_ = w;
  }
  // A page id from take_ids() becomes a page of `node` with residency r and no lock; its tokens
  // are copied from `tokens`.
  void init(std::uint32_t p, std::uint32_t node, const page_residency& r, const token_id* tokens) noexcept {
    rec_[p] = page_record{page_state::of(r.tiers.bits, r.in_flight.bits),
                          r.tiers.has(tier_id::device) ? r.device : device_slot{},
                          r.tiers.has(tier_id::host) ? r.host : host_slot{}, node};
    if (p < keys_.size()) keys_[p] = page_key{};
    std::memcpy(this->tokens(p), tokens, ps_.tokens() * sizeof(token_id));
    ++live_;
  }

  // Pages ids[0..k) from take_ids() become pages of `node`, all with residency r and no lock;
  // page i's tokens are tokens[i * tokens per page ...].
  void init_run(const std::uint32_t* ids, std::size_t k, std::uint32_t node, const page_residency& r,
                const token_id* tokens) noexcept {
    const page_state s = page_state::of(r.tiers.bits, r.in_flight.bits);
    const device_slot d = r.tiers.has(tier_id::device) ? r.device : device_slot{};
    const host_slot h = r.tiers.has(tier_id::host) ? r.host : host_slot{};
    const page_record rec{s, d, h, node};
    page_record* const rs = rec_.data();
    token_id* const tk = tokens_.data();
    const std::size_t t = ps_.tokens();
    for (std::size_t i = 0; i < k; ++i) {
      const std::uint32_t p = ids[i];
      rs[p] = rec;
      std::memcpy(tk + std::size_t(p) * t, tokens + i * t, t * sizeof(token_id));
    }
    if (!keys_.empty())
      for (std::size_t i = 0; i < k; ++i)
        if (ids[i] < keys_.size()) keys_[ids[i]] = page_key{};
    live_ += k;
  }

  // Page p, whose one copy is dropped and which holds no lock, leaves: every field is cleared
  // and its id freed. The victim cursor frees a run of them, then calls ids_freed(lowest id)
  // once (before the next take_ids).
  void drop_last_copy(std::uint32_t p) noexcept {
    rec_[p] = page_record{};
    free_[p / 64] |= std::uint64_t{1} << (p % 64);
    --live_;
  }
  void ids_freed(std::uint32_t lowest) noexcept {
    lowest_free_word_ = std::min<std::size_t>(lowest_free_word_, lowest / 64);
  }

  void free(std::uint32_t p) noexcept {
    rec_[p].owner = none;
    free_id(p);
  }

 private:
  void free_id(std::uint32_t p) noexcept {
    free_[p / 64] |= std::uint64_t{1} << (p % 64);
    lowest_free_word_ = std::min<std::size_t>(lowest_free_word_, p / 64);
    --live_;
  }

 public:
  std::size_t live() const noexcept { return live_; }
  std::size_t high_water() const noexcept { return rec_.size(); }

  // Gives back the storage above the highest live page once it exceeds that page by a quarter:
  // the page arrays keep a quarter above it as growth room (hysteresis: a tree that shrinks and
  // regrows by a request's worth does not map and fault in the same memory every time), and
  // are cut only when their capacity is half again above the highest live page.
  void trim() {
    std::size_t n = rec_.size();
    if (n <= live_ + live_ / 8 + 64) return;
    while (n > 0 && rec_[n - 1].owner == none) {
      const std::size_t w = (n - 1) / 64;
      if (n % 64 == 0 && free_[w] == ~std::uint64_t{0}) n -= 64;  // a whole free word at once
      else --n;
    }
    if (n == rec_.size()) return;
    resize_all(n);
    free_.resize((n + 63) / 64);
    if (n % 64) free_.back() &= (std::uint64_t{1} << (n % 64)) - 1;
    lowest_free_word_ = std::min(lowest_free_word_, free_.size());
    if (rec_.capacity() > n + n / 2 + 256) shrink_all(n + n / 4);
  }

  void reserve(std::size_t n) {
    if (n <= rec_.capacity()) return;
    tokens_.reserve(n * ps_.tokens());
    rec_.reserve(n);
  }

  std::size_t memory_bytes() const noexcept {
    return rec_.memory_bytes() +
           keys_.memory_bytes() + free_.capacity() * sizeof(std::uint64_t) +
           lock_overflow_.size() * 32 + lock_overflow_.bucket_count() * sizeof(void*);
  }
  std::size_t token_bytes() const noexcept { return tokens_.memory_bytes(); }

 private:
  // Every id in use: the arrays grow to the next multiple of 64 pages, the new ids all free (one
  // bitmap word). Returns that word.
  [[gnu::noinline]] std::size_t add_free_ids() {
    const std::size_t n = rec_.size(), k = 64 - n % 64;
    if (n + k > page_limit) throw std::length_error("kvtier: radix_index page count above 2^32-2");
    if (n + k > rec_.capacity()) reserve(n + k + (n + k) / 4 + 64);  // 25% steps: mremap, no copy
    (void)tokens_.extend(k * ps_.tokens());
    page_record* o = rec_.extend(k);
    for (std::size_t i = 0; i < k; ++i) o[i] = page_record{};
    const std::size_t w = n / 64;
    if (free_.size() == w) free_.push_back(0);
    free_[w] |= ~std::uint64_t{0} << (n % 64);
    return w;
  }
  void resize_all(std::size_t n) {
    tokens_.resize(n * ps_.tokens());
    rec_.resize(n);
    if (keys_.size() > n) keys_.resize(n);
  }
  void shrink_all(std::size_t keep) {
    // The tokens (not bookkeeping: 4 B a token) are cut only at twice their size.
    if (tokens_.capacity() > 2 * tokens_.size() + 4096) tokens_.shrink_to(keep * ps_.tokens());
    rec_.shrink_to(keep);
    keys_.shrink_to(keep);
    free_.shrink_to_fit();
  }

  PageSize ps_;
  mapped_array<token_id> tokens_;  // (page, token)
  mapped_array<page_record> rec_;  // per page: state, slots, owner node
  mutable mapped_array<page_key> keys_;  // memoized page keys (zero: not computed yet)
  std::vector<std::uint64_t> free_;    // one bit a page id below high_water(): 1 = free
  std::size_t lowest_free_word_ = 0;   // no free bit in the words before it
  std::size_t live_ = 0;
  std::unordered_map<std::uint32_t, std::uint32_t> lock_overflow_;
};

}  // namespace kvtier::detail
