#pragma once
// hierarchical_cache: the prefix index, the device and host pools, the copy strategy, zero to two
// slow tiers and the write, prefetch and eviction policies, composed into the one object an engine
// calls (build the type with cache_builder; docs/cache.md). It orchestrates parts of cache/detail/:
// the slow-tier set, the backup path, the eviction cascade, the device slots' owners.
//
// Threads: one scheduler thread calls every member: the one that built the cache or called
// adopt_thread(); a call from another thread aborts with a message. kvtier's own threads (one I/O
// thread per slow tier, a backup copy stream) never touch the index; their completions surface in
// poll(). Nothing the scheduler calls waits on slow-tier I/O but load() (as the prefetch policy says)
// and a remote lookup (bounded); a device eviction waits for its victims' device → host copies.
// Misuse is an error value, checked in every build (a lease of another cache, slots the engine does
// not hold, tokens that do not extend the leased prompt, a layer out of range): O(pages) checks.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <thread>
#include <utility>

#include "kvtier/cache/detail/cache_paths.hpp"
#include "kvtier/cache/lease.hpp"
#include "kvtier/cache/parts.hpp"
#include "kvtier/cache/stats.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/page_key.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/memory/concepts.hpp"
#include "kvtier/policy/eviction/concept.hpp"
#include "kvtier/policy/prefetch.hpp"
#include "kvtier/policy/write.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/transfer/copy_strategy.hpp"

namespace kvtier {

template <class Parts>
class hierarchical_cache;

namespace detail {
// The copy strategy reaches both pools: kernels (needs_device_memory) need device memory and a
// host pool mapped into the GPU's address space; a CPU copy needs host-accessible memory.
template <class Copy, class DevicePool, class HostPool>
concept copy_reaches_pools =
    (bool(Copy::needs_device_memory) && memory::device_accessible_pool<DevicePool> && memory::mapped_host_pool<HostPool>) ||
    (!bool(Copy::needs_device_memory) && memory::has_property<DevicePool, memory::host_accessible>);
}  // namespace detail

template <class PageSize, class DevicePool, class HostPool, class HostLayout, class Copy, class WriteToHost,
          class WriteToSlow, class Prefetch, class Eviction, class... SlowTiers>
  requires memory::pool<DevicePool> && memory::host_accessible_pool<HostPool> &&
           transfer::copy_strategy_for<Copy, detail::host_view_t<HostLayout>, detail::device_view_t<DevicePool>> &&
           detail::copy_reaches_pools<Copy, DevicePool, HostPool> && write_policy<WriteToHost> &&
           write_policy<WriteToSlow> && prefetch_policy<Prefetch> && eviction_policy<Eviction> &&
           (storage_backend<SlowTiers> && ...)
class hierarchical_cache<cache_parts<PageSize, DevicePool, HostPool, HostLayout, Copy, WriteToHost, WriteToSlow,
                                     Prefetch, Eviction, SlowTiers...>>
    : private detail::cache_paths<PageSize, DevicePool, HostPool, HostLayout, Copy, WriteToHost, WriteToSlow, Prefetch,
                                  Eviction, SlowTiers...> {
  using base = detail::cache_paths<PageSize, DevicePool, HostPool, HostLayout, Copy, WriteToHost, WriteToSlow, Prefetch,
                                   Eviction, SlowTiers...>;
  using typename base::pending_load;
  using typename base::slow_set;
  using base::cfg_, base::index_, base::device_, base::host_, base::host_view_, base::device_view_, base::slot_of_,
      base::device_hits_, base::host_hits_, base::load_event_, base::slow_, base::backups_, base::pending_loads_,
      base::put_queue_, base::stats_, base::to_load_, base::pairs_, base::path_, base::new_pages_;
  using slot_use = detail::slot_use;
  using base::slot_use_, base::owner_;
  using base::check_thread, base::ready_slow_tier, base::slow_tier_of, base::set_slot_of, base::make_room_device, base::make_room_host,
      base::allocate_host_slot, base::start_queued_backups, base::start_queued_puts, base::poll_loads,
      base::poll_backups, base::poll_slow, base::await_fetches;

 public:
  using parts = cache_parts<PageSize, DevicePool, HostPool, HostLayout, Copy, WriteToHost, WriteToSlow, Prefetch,
                            Eviction, SlowTiers...>;
  using page_size_type = PageSize;
  using device_pool_type = DevicePool;
  using host_pool_type = HostPool;
  using copy_type = Copy;
  using typename base::stream_type;
  using typename base::event_type;
  using typename base::index_type;
  using typename base::lease_type;
  using typename base::host_view_type;    // (layer, kv, token, head, dim), page first
  using typename base::device_view_type;  // (layer, kv, token, head, dim), layer first
  using typename base::config;            // shape, page size, capacities, the policies' parameters
  static constexpr std::size_t slow_tier_count = sizeof...(SlowTiers);

  // Slow tiers fastest first, owned by the cache (its I/O threads drive them).
  explicit hierarchical_cache(config cfg, std::unique_ptr<SlowTiers>... slow) : base(std::move(cfg), std::move(slow)...) {}
  hierarchical_cache(const hierarchical_cache&) = delete;
  hierarchical_cache& operator=(const hierarchical_cache&) = delete;

  // Makes the calling thread the cache's scheduler thread (after the previous one has stopped
  // calling it, with the hand-over synchronised by the caller).
  void adopt_thread() noexcept { owner_ = std::this_thread::get_id(); }

  // ------------------------------------------------------------------------ lifecycle
  // The longest cached prefix of `tokens` in `ns`, locked until release(). Never waits (config.remote: see remote_lookup.hpp).
  // Reuse one lease object: no allocation once its vectors have grown.
  // `priority` is the request's retention priority (priority_lru keeps higher ones longer).
  result<void> lookup(namespace_id ns, std::span<const token_id> tokens, lease_type& l, std::uint8_t priority = 0) {
    check_thread();
    if (l.active()) return make_error(errc::invalid_argument);  // release it first
    const std::size_t P = cfg_.pages.tokens();
    l.reset(ns, tokens.size(), P);
    l.owner_ = this;
    l.priority_ = priority;
    index_.match(ns, tokens, l.match_, match_options{true, true, priority});
    if constexpr (slow_tier_count > 0) (void)detail::remote_probe(index_, slow_, cfg_.remote, ns, tokens, l.match_, priority, stats_);
    const std::size_t n = l.match_.size();
    l.slots_.resize(n);
    std::size_t lead = 0;
    bool leading = true;
    for (std::size_t i = 0; i < n; ++i) {
      const page_source src = l.match_.sources[i];
      if (src == page_source::device) {
        // Field by field: copying the whole residency out of info()'s fresh result defeats
        // store-to-load forwarding and costs ~10 ns a page.
        const std::uint32_t id = l.match_.pages[i].value();
        const device_slot d = id < slot_of_.size() ? slot_of_[id] : index_.info(l.match_.pages[i])->residency.device;
        l.slots_[i] = d;
        lead += leading;
        note_device_hit(l.match_.pages[i], d);
      } else {
        leading = false;
        if (src == page_source::host) note_host_hit(l.match_.pages[i]);
        else stats_.hit_tokens[std::size_t(slow_tier_of(l.match_.pages[i]))] += P;
      }
    }
    l.cached_pages_ = lead;
    stats_.lookups++;
    stats_.prompt_tokens += tokens.size();
    stats_.cacheable_tokens += cfg_.pages.whole_tokens(tokens.size());
    stats_.hit_tokens[std::size_t(tier_id::device)] += l.match_.device_pages * P;
    stats_.hit_tokens[std::size_t(tier_id::host)] += l.match_.host_pages * P;
    return {};
  }
  lease_type lookup(namespace_id ns, std::span<const token_id> tokens) {
    lease_type l;
    (void)lookup(ns, tokens, l);
    return l;
  }

  // Starts slow tier → host reads for the lease's storage pages, on the I/O threads. Returns the
  // number of pages requested. Pages another lease is already fetching are not asked for twice.
  // An inactive lease, one of another cache or a second call starts nothing (0).
  std::size_t prefetch(lease_type& l) {
    check_thread();
    if (!owns(l) || l.prefetched_) return 0;
    l.prefetched_ = true;
    std::array<std::vector<page_read>, slow_tier_count> reads;
    std::array<typename slow_set::page_slots, slow_tier_count> pages;
    if (l.match_.storage_pages > host_.available()) (void)make_room_host(l.match_.storage_pages);
    for (std::size_t i = 0; i < l.match_.size(); ++i) {
      if (l.match_.sources[i] != page_source::storage) continue;
      const page_id p = l.match_.pages[i];
      const page_info inf = *index_.info(p);
      // Arrived or already coming; or on the device since lookup (a read would pin that copy).
      if (inf.residency.tiers.has(tier_id::host) || inf.residency.tiers.has(tier_id::device)) continue;
      const int t = ready_slow_tier(inf.residency);
      if (t < 0) continue;
      const result<host_slot> hs = allocate_host_slot();
      if (!hs) break;  // host full of locked or in-flight pages: the rest is computed
      (void)index_.place_copy(p, *hs, true);
      reads[std::size_t(t)].push_back(page_read{{inf.ns, inf.key}, tokens_fingerprint(index_.tokens_of(p)), host_.host_span(*hs)});
      pages[std::size_t(t)].push_back({p, *hs});
    }
    std::size_t started = 0;
    for (std::size_t t = 0; t < slow_tier_count; ++t) {
      if (reads[t].empty()) continue;
      started += reads[t].size();
      l.fetch_tickets_.push_back({t, slow_.submit_get(t, std::move(reads[t]), std::move(pages[t]))});
    }
    l.fetch_started_ = started;
    stats_.prefetch_requested += started;
    return started;
  }

  // The request is scheduled: waits for its prefetches as the prefetch policy allows, fixes the
  // usable prefix, gives its host pages device slots (evicting as needed) and queues the
  // host → device copies on `stream` layer by layer. wait_layer(l, i) / layer_ready(l, i) then
  // say when layer i's KV is in place. Errors: invalid_argument for an inactive lease, one of
  // another cache, or a second load; the prefix is shortened (never an error) when pages are
  // missing or the device is full.
  result<void> load(lease_type& l, stream_type& stream) {
    check_thread();
    if (!owns(l) || l.loaded_) return make_error(errc::invalid_argument);
    l.loaded_ = true;
    l.stream_ = &stream;
    if (!l.fetch_tickets_.empty()) await_fetches(l);
    const std::size_t n = l.match_.size();
    // The leading device pages were planned by lookup and stay put (locked, ready).
    std::size_t usable = l.cached_pages_;
    to_load_.clear();
    for (; usable < n; ++usable) {
      const page_id p = l.match_.pages[usable];
      const page_residency r = index_.info(p)->residency;
      if (r.ready(tier_id::device)) {
        l.slots_[usable] = r.device;
      } else if (r.tiers.has(tier_id::device)) {  // another lease is loading it: wait for that copy
        l.slots_[usable] = r.device;
        l.waits_.push_back(load_event_[r.device.value()]);
      } else if (r.ready(tier_id::host) && r.in_flight.empty()) {  // (a write in flight would pin it on the device)
        to_load_.push_back(usable);
      } else {
        break;  // not fetched (best effort, a miss) or lost: compute from here
      }
    }
    // Device slots for the pages to load; a full device shortens the prefix.
    (void)make_room_device(to_load_.size());
    pairs_.clear();
    std::vector<page_id> loading;
    for (std::size_t k = 0; k < to_load_.size(); ++k) {
      const std::size_t i = to_load_[k];
      const result<device_slot> ds = device_.allocate();
      if (!ds) {
        usable = i;
        stats_.device_full++;
        break;
      }
      const page_id p = l.match_.pages[i];
      pairs_.push_back(transfer::page_pair{index_.info(p)->residency.host.value(), ds->value()});
      (void)index_.place_copy(p, *ds, true);
      slot_use_.set(*ds, slot_use::indexed);
      set_slot_of(p, *ds);
      device_hits_[ds->value()] = 0;
      l.slots_[i] = *ds;
      loading.push_back(p);
    }
    if (!pairs_.empty()) {
      l.layer_events_.resize(cfg_.shape.layers());
      if (const result<void> e = Copy::load(stream, host_view_, device_view_, pairs_, l.layer_events_); !e) {
        // Refused before anything moved (a geometry or reachability mismatch): serve nothing loaded.
        for (std::size_t k = 0; k < loading.size(); ++k) {
          (void)index_.remove_tier(loading[k], tier_id::device);
          slot_of_[loading[k].value()] = device_slot{};
          slot_use_.set(device_slot{pairs_[k].dst}, slot_use::free);
          (void)device_.free(device_slot{pairs_[k].dst});
        }
        l.layer_events_.clear();
        l.cached_pages_ = to_load_.empty() ? usable : std::min(usable, to_load_.front());
        return e.err();
      }
      const event_type last = l.layer_events_.back();
      for (const auto& pr : pairs_) load_event_[pr.dst] = {&stream, last};
      pending_loads_.push_back(pending_load{&stream, last, std::move(loading)});
      stats_.pages_loaded += pairs_.size();
      stats_.bytes_loaded += pairs_.size() * host_.slot_bytes();
    }
    l.cached_pages_ = usable;
    stats_.served_tokens += usable * cfg_.pages.tokens();
    stats_.computed_tokens += l.prompt_tokens_ - usable * cfg_.pages.tokens();
    return {};
  }

  // The scheduler's look-ahead hook (with a look_ahead<P> eviction policy): the cached prefix of a
  // queued prompt is evicted after everything else until unexpect() with the same prompt.
  void expect(namespace_id ns, std::span<const token_id> tokens) requires look_ahead_policy<Eviction> {
    check_thread();
    index_.expect(ns, tokens);
  }
  void unexpect(namespace_id ns, std::span<const token_id> tokens) requires look_ahead_policy<Eviction> {
    check_thread();
    index_.unexpect(ns, tokens);
  }

  // Layer i of the lease's KV is on the device (true at once for pages that were there already;
  // false for a layer out of range or a lease that is not this cache's).
  bool layer_ready(const lease_type& l, std::size_t layer) const noexcept {
    if (!owns(l) || layer >= cfg_.shape.layers()) return false;
    for (const auto& [s, e] : l.waits_)
      if (!Copy::query(*s, e)) return false;
    return l.layer_events_.empty() || Copy::query(*l.stream_, l.layer_events_[layer]);
  }
  // Waits until layer i is on the device. invalid_argument for a layer out of range or a lease
  // that is not an active lease of this cache.
  result<void> wait_layer(const lease_type& l, std::size_t layer) const {
    check_thread();
    if (!owns(l) || layer >= cfg_.shape.layers()) return make_error(errc::invalid_argument);
    for (const auto& [s, e] : l.waits_) Copy::synchronize(*s, e);
    if (!l.layer_events_.empty()) Copy::synchronize(*l.stream_, l.layer_events_[layer]);
    return {};
  }
  // The per-layer events (empty when nothing was loaded), for engines that wait on them directly.
  std::span<const event_type> layer_events(const lease_type& l) const noexcept { return l.layer_events_; }

  // Device slots for KV the engine computes, evicting (and backing up, by policy) as needed.
  // All or nothing: capacity_exhausted when every device page is locked or in flight.
  result<void> allocate(std::span<device_slot> out) {
    check_thread();
    (void)make_room_device(out.size());
    const result<void> r = device_.allocate(out);
    if (!r) stats_.device_full++;
    for (device_slot s : out)
      if (r) device_hits_[s.value()] = 0, slot_use_.set(s, slot_use::engine);
    return r;
  }
  // Gives back slots the engine holds that never entered the index (a partial last page). All or
  // nothing: invalid_argument when a slot is not the engine's (committed, a lease's, free, repeated).
  result<void> free(std::span<const device_slot> slots) {
    check_thread();
    if (!slot_use_.all_engine(slots)) return make_error(errc::invalid_argument);
    slot_use_.set(slots, slot_use::free);
    return device_.free(slots);
  }

  // After prefill (or decode): `tokens` is the whole sequence so far, starting with the lease's
  // prompt; `slots` hold the KV of its whole pages past cached_pages(), in order. Those pages
  // enter the index on the device, locked by the lease. A page another request committed first
  // keeps its copy; the engine's duplicate slot stays the lease's (device_slots() is unchanged)
  // and is freed at release().
  // Write-through policies queue their backups here. invalid_argument (and nothing changes) if
  // the counts disagree, a slot is not one allocate() handed out and nothing committed since (or
  // appears twice), `tokens` do not start with the lease's prefix, or the lease is not this cache's.
  result<void> commit(lease_type& l, std::span<const token_id> tokens, std::span<const device_slot> slots) {
    check_thread();
    if (!owns(l)) return make_error(errc::invalid_argument);
    const std::size_t full = cfg_.pages.full_pages(tokens.size());
    const std::size_t u = l.cached_pages_;
    if (full < u || slots.size() != full - u) return make_error(errc::invalid_argument);
    if (!l.starts(index_, tokens)) return make_error(errc::invalid_argument);
    if (!slot_use_.all_engine(slots)) return make_error(errc::invalid_argument);
    path_.clear();
    (void)index_.insert(l.ns_, tokens, [&](std::size_t i) {
      return on_device(i >= u ? slots[i - u] : l.slots_[i]);
    }, insert_options{false, l.priority_}, &path_);
    l.slots_.resize(full);
    // A page of the held prefix that lost every copy while leased (its writes below failed) was
    // given the lease's duplicate by insert: that slot is now the page's copy.
    for (std::size_t i = 0; i < u; ++i) {
      const device_slot d = l.slots_[i];
      if (slot_use_[d] != slot_use::lease_private || index_.info(path_[i])->residency.device != d) continue;
      std::erase(l.private_, d);
      slot_use_.set(d, slot_use::indexed);
      set_slot_of(path_[i], d);
    }
    for (std::size_t i = u; i < full; ++i) {
      const page_id p = path_[i];
      const page_residency r = index_.info(p)->residency;
      const device_slot mine = slots[i - u];
      l.slots_[i] = mine;
      // A duplicate of a page already on the device, or of one being written below (a device copy
      // joining it would be pinned until the write lands): the lease keeps its slot until release.
      if ((r.tiers.has(tier_id::device) && r.device != mine) || (!r.tiers.has(tier_id::device) && !r.in_flight.empty())) {
        l.private_.push_back(mine);
        slot_use_.set(mine, slot_use::lease_private);
        continue;
      }
      slot_use_.set(mine, slot_use::indexed);
      if (!r.tiers.has(tier_id::device)) (void)index_.place_copy(p, mine, false);  // held below only: joins it
      set_slot_of(p, mine);
      new_pages_.push_back(p);
      device_hits_[mine.value()] = 0;
    }
    if (full > u) {
      const std::span<const page_id> added(path_.data() + u, full - u);
      (void)index_.lock(added);
      l.locked_.insert(l.locked_.end(), added.begin(), added.end());
    }
    l.cached_pages_ = full;
    l.prompt_tokens_ = tokens.size();
    l.prefix_.assign(path_.begin(), path_.begin() + std::ptrdiff_t(full));
    if (cfg_.write_to_host.backup_on_insert()) backups_.queue(new_pages_);
    new_pages_.clear();
    start_queued_backups();
    return {};
  }

  // Unlocks the lease's pages. Copies it started keep running; their pages stay in flight.
  // Releasing an inactive lease does nothing; a lease of another cache is invalid_argument.
  result<void> release(lease_type& l) {
    check_thread();
    if (!l.active()) return {};
    if (l.owner_ != this) return make_error(errc::invalid_argument);
    if (l.match_.locked && !l.match_.pages.empty()) (void)index_.unlock(l.match_.pages);
    if (!l.locked_.empty()) (void)index_.unlock(l.locked_);
    slot_use_.set(l.private_, slot_use::free);
    if (!l.private_.empty()) (void)device_.free(l.private_);
    l.active_ = false;
    return {};
  }

  // Collects finished copies and slow-tier batches, marks their pages ready, starts the backups
  // policies asked for. Call once per scheduler step; never waits.
  void poll() {
    check_thread();
    poll_loads();
    poll_backups();
    poll_slow();
    start_queued_backups();
    start_queued_puts();
  }

  // Waits until every copy and slow-tier batch started so far has finished (tests, shutdown).
  void drain() {
    check_thread();
    for (int round = 0; round < 1000; ++round) {
      for (auto& l : pending_loads_) Copy::synchronize(*l.stream, l.done);
      (void)backups_.settle();
      slow_.wait_all(std::chrono::steady_clock::now() + std::chrono::seconds(30));
      poll();
      if (pending_loads_.empty() && backups_.idle() && slow_.idle() && put_queue_.empty()) return;
    }
  }

  // Checks the cache's own bookkeeping against the index (tests; O(pages)).
  using base::audit;

  // ------------------------------------------------------------------------ observers
  const cache_stats& stats() const noexcept { return stats_; }
  const config& configuration() const noexcept { return cfg_; }
  const index_type& index() const noexcept { return index_; }
  const device_pool_type& device_pool() const noexcept { return device_; }
  const host_pool_type& host_pool() const noexcept { return host_; }
  const device_view_type& device_view() const noexcept { return device_view_; }
  const host_view_type& host_view() const noexcept { return host_view_; }
  template <std::size_t I>
  const auto& slow_tier() const noexcept { return slow_.template tier<I>(); }
  static constexpr tier_id slow_tier_id(std::size_t i) noexcept { return slow_set::id(i); }

 private:
  friend struct detail::positioned_load;  // load_at (cache/positioned_load.hpp)
  bool owns(const lease_type& l) const noexcept { return l.active() && l.owner_ == this; }

  void note_device_hit(page_id p, device_slot d) {
    if constexpr (write_policy_counts_hits<WriteToHost>) {
      std::uint32_t& h = device_hits_[d.value()];
      h += h != UINT32_MAX;
      if (cfg_.write_to_host.backup_on_hit(h)) {
        const page_residency r = index_.info(p)->residency;
        if (!r.tiers.has(tier_id::host) && r.in_flight.empty()) backups_.queue(p);
      }
    }
  }
  void note_host_hit(page_id p) {
    if constexpr (slow_tier_count > 0 && write_policy_counts_hits<WriteToSlow>) {
      const page_residency r = index_.info(p)->residency;
      std::uint32_t& h = host_hits_[r.host.value()];
      h += h != UINT32_MAX;
      if (cfg_.write_to_slow.backup_on_hit(h) && ready_slow_tier(r) < 0 && r.in_flight.empty())
        put_queue_.push_back(p);
    }
  }
};

}  // namespace kvtier
