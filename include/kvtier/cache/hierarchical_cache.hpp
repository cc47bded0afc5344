#pragma once
// hierarchical_cache: the prefix index, the device and host pools, the copy strategy, zero to two
// slow tiers and the write, prefetch and eviction policies, composed into the one object an engine
// calls. Build the type with cache_builder (builder.hpp); see docs/cache.md for the lifecycle.
//
// Threads: one scheduler thread calls every member (lookup, prefetch, load, commit, release,
// allocate, poll). kvtier's own threads do the slow work: one I/O thread per slow tier and a
// backup copy stream (a thread in CPU mode, a CUDA stream on a GPU). They never touch the index;
// their completions surface in poll(), which the scheduler calls once per step. Nothing the
// scheduler calls waits on I/O, except where a policy says so (prefetch_wait/timeout in load(), a
// write-back eviction that must copy a victim down before its slot can be reused).
#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvtier/cache/detail/slow_tier_worker.hpp"
#include "kvtier/cache/lease.hpp"
#include "kvtier/cache/stats.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/page_key.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/index/radix_index.hpp"
#include "kvtier/policy/eviction/concept.hpp"
#include "kvtier/policy/prefetch.hpp"
#include "kvtier/policy/write.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/request.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier {

// The resolved parts of a cache (what cache_builder produces). Slow tiers are backend types.
template <class PageSize, class DevicePool, class HostPool, class HostLayout, class Copy, class WriteToHost,
          class WriteToSlow, class Prefetch, class Eviction, class... SlowTiers>
struct cache_parts {
  using page_size_type = PageSize;
  using device_pool_type = DevicePool;
  using host_pool_type = HostPool;
  using host_layout_type = HostLayout;
  using copy_type = Copy;
  using write_to_host_type = WriteToHost;
  using write_to_slow_type = WriteToSlow;
  using prefetch_type = Prefetch;
  using eviction_type = Eviction;
  using slow_tier_types = std::tuple<SlowTiers...>;
};

template <class Parts>
class hierarchical_cache;

namespace detail {
// How the cache makes its pools: pools that take (shape, page size, pages) by default.
template <class Pool>
struct pool_factory {
  static Pool make(const kv_shape& s, page_size<> p, std::size_t pages) { return Pool(s, p, pages); }
};
// The device pool's memory as the engine's layer-first buffer.
// (A class template, so that kvtier/cache/gpu_copy.cuh can specialise it for the device pools.)
template <class Pool>
struct device_access {
  static auto view(const Pool& p) -> decltype(p.kv_view()) { return p.kv_view(); }
};
template <class Pool>
auto device_kv_view(const Pool& p) -> decltype(device_access<Pool>::view(p)) {
  return device_access<Pool>::view(p);
}
}  // namespace detail

template <class PageSize, class DevicePool, class HostPool, class HostLayout, class Copy, class WriteToHost,
          class WriteToSlow, class Prefetch, class Eviction, class... SlowTiers>
class hierarchical_cache<cache_parts<PageSize, DevicePool, HostPool, HostLayout, Copy, WriteToHost, WriteToSlow,
                                     Prefetch, Eviction, SlowTiers...>> {
 public:
  using parts = cache_parts<PageSize, DevicePool, HostPool, HostLayout, Copy, WriteToHost, WriteToSlow, Prefetch,
                            Eviction, SlowTiers...>;
  using page_size_type = PageSize;
  using device_pool_type = DevicePool;
  using host_pool_type = HostPool;
  using copy_type = Copy;
  using stream_type = typename Copy::stream_type;
  using event_type = typename Copy::event_type;
  using index_type = radix_index<Eviction, PageSize::static_tokens>;
  using lease_type = cache_lease<Copy>;
  using host_view_type = decltype(transfer::paged_view<HostLayout>(nullptr, std::declval<kv_shape>(), 1, page_size<>(1)));
  using device_view_type = std::remove_cvref_t<decltype(detail::device_kv_view(std::declval<const DevicePool&>()))>;
  static constexpr std::size_t slow_tier_count = sizeof...(SlowTiers);
  static_assert(slow_tier_count <= 2, "kvtier: at most two slow tiers (disk, then remote)");

  // Run-time configuration: shape, page size, capacities, and the policies' parameters.
  struct config {
    kv_shape shape;
    page_size_type pages;
    std::size_t device_pages = 0;   // slots of the device pool
    std::size_t host_pages = 0;     // slots of the host pool
    std::uint64_t model = 0;        // enters every page key
    WriteToHost write_to_host{};    // device → host
    WriteToSlow write_to_slow{};    // host → slow tiers
    Prefetch prefetch{};
    Eviction eviction{};
  };

  // Slow tiers fastest first, owned by the cache (its I/O threads drive them).
  explicit hierarchical_cache(config cfg, std::unique_ptr<SlowTiers>... slow)
      : cfg_(validated(std::move(cfg))),
        index_(cfg_.pages, index_options{cfg_.model, 0}, cfg_.eviction),
        device_(detail::pool_factory<DevicePool>::make(cfg_.shape, page_size<>(cfg_.pages), cfg_.device_pages)),
        host_(detail::pool_factory<HostPool>::make(cfg_.shape, page_size<>(cfg_.pages), cfg_.host_pages)),
        host_view_(transfer::paged_view<HostLayout>(host_.host_data(), cfg_.shape, cfg_.host_pages, page_size<>(cfg_.pages))),
        device_view_(detail::device_kv_view(device_)),
        device_hits_(cfg_.device_pages, 0),
        host_hits_(cfg_.host_pages, 0),
        load_event_(cfg_.device_pages),
        slow_(std::move(slow)...) {
    std::apply([](auto&... b) {
      if (((b == nullptr) || ...)) throw config_error("kvtier: hierarchical_cache given a null slow tier");
    }, slow_);
    if (host_.slot_bytes() != cfg_.shape.bytes_per_page(cfg_.pages.tokens()))
      throw config_error("kvtier: the host pool's slots are not one page of the cache's shape");
    workers_ = std::apply([](auto&... b) { return std::make_tuple(make_worker(*b)...); }, slow_);
    backup_stream_ = std::make_unique<stream_type>();
  }

  hierarchical_cache(const hierarchical_cache&) = delete;
  hierarchical_cache& operator=(const hierarchical_cache&) = delete;
  ~hierarchical_cache() {
    // Copies into or out of the pools must finish before the pools go.
    for (auto& l : pending_loads_) Copy::synchronize(*l.stream, l.done);
    workers_ = {};          // joins the I/O threads after their batches completed
    backup_stream_.reset();  // drains the backup copies
  }

  // ------------------------------------------------------------------------ lifecycle
  // The longest cached prefix of `tokens` in `ns`, locked until release(). Never waits.
  // Reuse one lease object: no allocation once its vectors have grown.
  // `priority` is the request's retention priority (priority_lru keeps higher ones longer).
  result<void> lookup(namespace_id ns, std::span<const token_id> tokens, lease_type& l, std::uint8_t priority = 0) {
    if (l.active()) return make_error(errc::invalid_argument);  // release it first
    const std::size_t P = cfg_.pages.tokens();
    l.reset(ns, tokens.size(), P);
    l.priority_ = priority;
    index_.match(ns, tokens, l.match_, match_options{true, true, priority});
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
  std::size_t prefetch(lease_type& l) {
    if (!l.active() || l.prefetched_) return 0;
    l.prefetched_ = true;
    std::array<std::vector<page_read>, 2> reads;
    std::array<std::vector<std::pair<page_id, host_slot>>, 2> pages;
    if (l.match_.storage_pages > host_.available()) (void)make_room_host(l.match_.storage_pages);
    for (std::size_t i = 0; i < l.match_.size(); ++i) {
      if (l.match_.sources[i] != page_source::storage) continue;
      const page_id p = l.match_.pages[i];
      const page_info inf = *index_.info(p);
      if (inf.residency.tiers.has(tier_id::host)) continue;  // arrived or already coming
      const int t = ready_slow_tier(inf.residency);
      if (t < 0) continue;
      const result<host_slot> hs = allocate_host_slot();
      if (!hs) break;  // host full of locked or in-flight pages: the rest is computed
      page_residency r = inf.residency;
      r.tiers.add(tier_id::host);
      r.in_flight.add(tier_id::host);
      r.host = *hs;
      (void)index_.set_residency(p, r);
      reads[t].push_back(page_read{{inf.ns, inf.key}, tokens_fingerprint(index_.tokens_of(p)), host_.host_span(*hs)});
      pages[t].push_back({p, *hs});
    }
    std::size_t started = 0;
    for_each_slow([&](auto tier_index, auto&, auto& worker) {
      constexpr std::size_t t = decltype(tier_index)::value;
      if (reads[t].empty()) return;
      started += reads[t].size();
      const std::uint64_t ticket = worker->submit_get(std::move(reads[t]));
      io_[t].emplace(ticket, pending_io{detail::slow_op::get, std::move(pages[t])});
      l.fetch_tickets_.push_back({t, ticket});
    });
    l.fetch_started_ = started;
    stats_.prefetch_requested += started;
    return started;
  }

  // The request is scheduled: waits for its prefetches as the prefetch policy allows, fixes the
  // usable prefix, gives its host pages device slots (evicting as needed) and queues the
  // host → device copies on `stream` layer by layer. wait_layer(l, i) / layer_ready(l, i) then
  // say when layer i's KV is in place. Errors: invalid_argument for an inactive lease or a second
  // load; the prefix is shortened (never an error) when pages are missing or the device is full.
  result<void> load(lease_type& l, stream_type& stream) {
    if (!l.active() || l.loaded_) return make_error(errc::invalid_argument);
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
        const auto& w = load_event_[r.device.value()];
        l.waits_.push_back(w);
      } else if (r.ready(tier_id::host)) {
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
      page_residency r = index_.info(p)->residency;
      pairs_.push_back(transfer::page_pair{r.host.value(), ds->value()});
      r.tiers.add(tier_id::device);
      r.in_flight.add(tier_id::device);
      r.device = *ds;
      set_slot_of(p, *ds);
      (void)index_.set_residency(p, r);
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
    index_.expect(ns, tokens);
  }
  void unexpect(namespace_id ns, std::span<const token_id> tokens) requires look_ahead_policy<Eviction> {
    index_.unexpect(ns, tokens);
  }

  // Layer i of the lease's KV is on the device (true at once for pages that were there already).
  bool layer_ready(const lease_type& l, std::size_t layer) const noexcept {
    for (const auto& [s, e] : l.waits_)
      if (!Copy::query(*s, e)) return false;
    return l.layer_events_.empty() || Copy::query(*l.stream_, l.layer_events_[layer]);
  }
  void wait_layer(const lease_type& l, std::size_t layer) const {
    for (const auto& [s, e] : l.waits_) Copy::synchronize(*s, e);
    if (!l.layer_events_.empty()) Copy::synchronize(*l.stream_, l.layer_events_[layer]);
  }
  // The per-layer events (empty when nothing was loaded), for engines that wait on them directly.
  std::span<const event_type> layer_events(const lease_type& l) const noexcept { return l.layer_events_; }

  // Device slots for KV the engine computes, evicting (and backing up, by policy) as needed.
  // All or nothing: capacity_exhausted when every device page is locked or in flight.
  result<void> allocate(std::span<device_slot> out) {
    (void)make_room_device(out.size());
    const result<void> r = device_.allocate(out);
    if (!r) stats_.device_full++;
    for (device_slot s : out)
      if (r) device_hits_[s.value()] = 0;
    return r;
  }
  // Gives back slots the engine holds that never entered the index (a partial last page).
  result<void> free(std::span<const device_slot> slots) { return device_.free(slots); }

  // After prefill (or decode): `tokens` is the whole sequence so far, starting with the lease's
  // prompt; `slots` hold the KV of its whole pages past cached_pages(), in order. Those pages
  // enter the index on the device, locked by the lease. A page another request committed first
  // keeps its copy; the engine's duplicate slot stays the lease's (device_slots() is unchanged)
  // and is freed at release().
  // Write-through policies queue their backups here. invalid_argument if the counts disagree.
  result<void> commit(lease_type& l, std::span<const token_id> tokens, std::span<const device_slot> slots) {
    if (!l.active()) return make_error(errc::invalid_argument);
    const std::size_t full = cfg_.pages.full_pages(tokens.size());
    const std::size_t u = l.cached_pages_;
    if (full < u || slots.size() != full - u) return make_error(errc::invalid_argument);
    for (device_slot s : slots)
      if (!device_.is_allocated(s)) return make_error(errc::invalid_argument);
    path_.clear();
    (void)index_.insert(l.ns_, tokens, [&](std::size_t i) {
      return on_device(i >= u ? slots[i - u] : l.slots_[i]);
    }, insert_options{false, l.priority_}, &path_);
    l.slots_.resize(full);
    for (std::size_t i = u; i < full; ++i) {
      const page_id p = path_[i];
      page_residency r = index_.info(p)->residency;
      const device_slot mine = slots[i - u];
      if (r.tiers.has(tier_id::device) && r.device == mine) {
        set_slot_of(p, mine);
        new_pages_.push_back(p);
      } else if (!r.tiers.has(tier_id::device)) {  // held below only: the engine's copy joins it
        r.tiers.add(tier_id::device);
        r.device = mine;
        (void)index_.set_residency(p, r);
        set_slot_of(p, mine);
        new_pages_.push_back(p);
      } else {
        l.private_.push_back(mine);  // a duplicate of a page already on the device
        l.slots_[i] = mine;
        continue;
      }
      l.slots_[i] = mine;
      device_hits_[mine.value()] = 0;
    }
    if (full > u) {
      const std::span<const page_id> added(path_.data() + u, full - u);
      (void)index_.lock(added);
      l.locked_.insert(l.locked_.end(), added.begin(), added.end());
    }
    l.cached_pages_ = full;
    l.prompt_tokens_ = tokens.size();
    if (cfg_.write_to_host.backup_on_insert()) {
      backup_queue_.insert(backup_queue_.end(), new_pages_.begin(), new_pages_.end());
    }
    new_pages_.clear();
    start_queued_backups();
    return {};
  }

  // Unlocks the lease's pages. Copies it started keep running; their pages stay in flight.
  void release(lease_type& l) {
    if (!l.active()) return;
    if (l.match_.locked && !l.match_.pages.empty()) (void)index_.unlock(l.match_.pages);
    if (!l.locked_.empty()) (void)index_.unlock(l.locked_);
    if (!l.private_.empty()) (void)device_.free(l.private_);
    l.active_ = false;
  }

  // Collects finished copies and slow-tier batches, marks their pages ready, starts the backups
  // policies asked for. Call once per scheduler step; never waits.
  void poll() {
    poll_loads();
    poll_backups();
    poll_slow();
    start_queued_backups();
    start_queued_puts();
  }

  // Waits until every copy and slow-tier batch started so far has finished (tests, shutdown).
  void drain() {
    for (int round = 0; round < 1000; ++round) {
      for (auto& l : pending_loads_) Copy::synchronize(*l.stream, l.done);
      if (!pending_backups_.empty()) Copy::synchronize(*backup_stream_, pending_backups_.back().done);
      for_each_slow([&](auto tier_index, auto&, auto& worker) {
        constexpr std::size_t t = decltype(tier_index)::value;
        for (auto& [ticket, io] : io_[t])
          (void)worker->wait_for(ticket, std::chrono::steady_clock::now() + std::chrono::seconds(30));
      });
      poll();
      if (pending_loads_.empty() && pending_backups_.empty() && io_[0].empty() && io_[1].empty() &&
          backup_queue_.empty() && put_queue_.empty())
        return;
    }
  }

  // Checks the cache's own bookkeeping against the index: every page's device slot as lookup
  // sees it, and every indexed slot allocated in its pool. For tests; O(pages).
  bool audit() const {
    for (std::size_t p = 0; p < slot_of_.size(); ++p) {
      const page_id id{std::uint32_t(p)};
      if (!index_.contains(id)) continue;
      const page_residency r = index_.info(id)->residency;
      if (r.tiers.has(tier_id::device) && (slot_of_[p] != r.device || !device_.is_allocated(r.device))) return false;
      if (r.tiers.has(tier_id::host) && !host_.is_allocated(r.host)) return false;
    }
    return true;
  }

  // ------------------------------------------------------------------------ observers
  const cache_stats& stats() const noexcept { return stats_; }
  const config& configuration() const noexcept { return cfg_; }
  const index_type& index() const noexcept { return index_; }
  const device_pool_type& device_pool() const noexcept { return device_; }
  const host_pool_type& host_pool() const noexcept { return host_; }
  const device_view_type& device_view() const noexcept { return device_view_; }
  const host_view_type& host_view() const noexcept { return host_view_; }
  template <std::size_t I>
  const auto& slow_tier() const noexcept { return *std::get<I>(slow_); }
  static constexpr tier_id slow_tier_id(std::size_t i) noexcept { return i == 0 ? tier_id::disk : tier_id::remote; }

 private:
  struct pending_load {
    stream_type* stream;
    event_type done;
    std::vector<page_id> pages;
  };
  struct pending_backup {
    event_type done;
    std::vector<page_id> pages;
  };
  struct pending_io {
    detail::slow_op op;
    std::vector<std::pair<page_id, host_slot>> pages;
  };

  static config validated(config c) {
    if (c.device_pages == 0 || c.host_pages == 0)
      throw config_error("kvtier: hierarchical_cache needs device_pages and host_pages above 0");
    if (c.device_pages > UINT32_MAX - 1 || c.host_pages > UINT32_MAX - 1)
      throw config_error("kvtier: hierarchical_cache pools hold at most 2^32 - 2 pages");
    return c;
  }
  template <class B>
  static std::unique_ptr<detail::slow_tier_worker<B>> make_worker(B& b) {
    return std::make_unique<detail::slow_tier_worker<B>>(b);
  }

  template <class F>
  void for_each_slow(F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (f(std::integral_constant<std::size_t, I>{}, *std::get<I>(slow_), std::get<I>(workers_)), ...);
    }(std::index_sequence_for<SlowTiers...>{});
  }

  // The fastest slow tier holding a ready copy (0: disk, 1: remote), or -1.
  static int ready_slow_tier(const page_residency& r) noexcept {
    for (std::size_t t = 0; t < slow_tier_count; ++t)
      if (r.ready(slow_tier_id(t))) return int(t);
    return -1;
  }
  tier_id slow_tier_of(page_id p) const {
    const int t = ready_slow_tier(index_.info(p)->residency);
    return t < 0 ? tier_id::disk : slow_tier_id(std::size_t(t));
  }

  void note_device_hit(page_id p, device_slot d) {
    if constexpr (write_policy_counts_hits<WriteToHost>) {
      std::uint32_t& h = device_hits_[d.value()];
      h += h != UINT32_MAX;
      if (cfg_.write_to_host.backup_on_hit(h)) {
        const page_residency r = index_.info(p)->residency;
        if (!r.tiers.has(tier_id::host) && r.in_flight.empty()) backup_queue_.push_back(p);
      }
    }
  }
  // The device slot of page p, kept beside the index (every device copy enters and leaves through
  // this class), so that lookup reads one array instead of asking the index page by page.
  void set_slot_of(page_id p, device_slot d) {
    if (p.value() >= slot_of_.size()) slot_of_.resize(std::max<std::size_t>(p.value() + 1, slot_of_.size() * 2));
    slot_of_[p.value()] = d;
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

  // ------------------------------------------------------------------------ eviction cascade
  // Frees device slots until `n` are available. The next victims are looked at first (without
  // dropping anything): those with no copy below are backed up to host, by policy, and once those
  // copies have landed the victims are dropped in the index's order (leaves first). Locked and
  // in-flight pages are never offered.
  bool make_room_device(std::size_t n) {
    const bool drop_all = cfg_.write_to_host.victim_without_copy() == on_evict::drop;
    for (int round = 0; round < 8 && device_.available() < n; ++round) {
      const std::size_t need = n - device_.available();
      if (!drop_all) {
        victims_.clear();
        index_.collect_victims(tier_id::device, need, victims_);
        std::erase_if(victims_, [&](page_id p) { return has_copy_below(index_.info(p)->residency, tier_id::device); });
        if (!victims_.empty()) {
          start_backups(victims_);
          if (!pending_backups_.empty()) Copy::synchronize(*backup_stream_, pending_backups_.back().done);
          poll_backups();
        }
      }
      const std::size_t dropped = index_.evict(tier_id::device, need, [&](const victim& v) {
        const bool below = has_copy_below(v.residency, tier_id::device);
        if (!below && !drop_all) return false;  // its backup did not happen (host full): keep it
        (void)device_.free(v.residency.device);
        slot_of_[v.page.value()] = device_slot{};
        stats_.evicted[std::size_t(tier_id::device)]++;
        if (!below) stats_.dropped[std::size_t(tier_id::device)]++;
        return true;
      });
      if (dropped == 0 && pending_backups_.empty()) break;  // nothing more will free up
      if (dropped == 0) {
        Copy::synchronize(*backup_stream_, pending_backups_.back().done);
        poll_backups();
      }
    }
    return device_.available() >= n;
  }

  // Frees host slots until `n` are available, the same way: victims with no slow-tier copy are
  // written down first (by policy; dropped when there is no slow tier), then dropped.
  bool make_room_host(std::size_t n) {
    const bool drop_all = slow_tier_count == 0 || cfg_.write_to_slow.victim_without_copy() == on_evict::drop;
    for (int round = 0; round < 8 && host_.available() < n; ++round) {
      const std::size_t need = n - host_.available();
      if (!drop_all) {
        victims_.clear();
        index_.collect_victims(tier_id::host, need, victims_);
        std::erase_if(victims_, [&](page_id p) { return has_copy_below(index_.info(p)->residency, tier_id::host); });
        if (!victims_.empty()) {
          std::vector<std::pair<std::size_t, std::uint64_t>> tickets;
          start_puts(victims_, &tickets);
          for_each_slow([&](auto tier_index, auto&, auto& worker) {
            constexpr std::size_t t = decltype(tier_index)::value;
            for (auto [tt, ticket] : tickets)
              if (tt == t) (void)worker->wait_for(ticket, std::chrono::steady_clock::now() + std::chrono::seconds(10));
          });
          poll_slow();
        }
      }
      const std::size_t dropped = index_.evict(tier_id::host, need, [&](const victim& v) {
        const bool below = has_copy_below(v.residency, tier_id::host);
        if (!below && !drop_all) return false;  // its write failed: keep it
        (void)host_.free(v.residency.host);
        stats_.evicted[std::size_t(tier_id::host)]++;
        if (!below && !v.residency.tiers.has(tier_id::device)) stats_.dropped[std::size_t(tier_id::host)]++;
        return true;
      });
      if (dropped == 0) {
        // Host slots may be held by backups in flight: let them land, then try again.
        if (pending_backups_.empty()) break;
        Copy::synchronize(*backup_stream_, pending_backups_.back().done);
        poll_backups();
      }
    }
    return host_.available() >= n;
  }

  // A copy in a tier below `t` (ready or being written) keeps the page in the hierarchy.
  static bool has_copy_below(const page_residency& r, tier_id t) noexcept {
    for (unsigned u = unsigned(t) + 1; u < tier_count; ++u)
      if (r.tiers.has(tier_id(u))) return true;
    return false;
  }

  // One host slot; room for `batch` was made by the caller's reserve_host (make_room_host once per
  // batch, not once per page: eviction scans are not free).
  result<host_slot> allocate_host_slot() {
    if (host_.available() == 0) (void)make_room_host(1);
    const result<host_slot> s = host_.allocate();
    if (!s) {
      stats_.host_full++;
    } else {
      host_hits_[s->value()] = 0;
    }
    return s;
  }

  // ------------------------------------------------------------------------ write paths
  // device → host copies of `pages` (those on the device, with no host copy, nothing in flight).
  void start_backups(std::span<const page_id> pages) {
    backup_pairs_.clear();
    std::vector<page_id> started;
    if (pages.size() > host_.available()) (void)make_room_host(pages.size());
    for (const page_id p : pages) {
      if (!index_.contains(p)) continue;
      page_residency r = index_.info(p)->residency;
      if (!r.ready(tier_id::device) || r.tiers.has(tier_id::host) || !r.in_flight.empty()) continue;
      const result<host_slot> hs = allocate_host_slot();
      if (!hs) break;
      if (!index_.contains(p)) {  // evicted while making room (it was not locked)
        (void)host_.free(*hs);
        continue;
      }
      r = index_.info(p)->residency;
      if (!r.ready(tier_id::device)) {
        (void)host_.free(*hs);
        continue;
      }
      r.tiers.add(tier_id::host);
      r.in_flight.add(tier_id::host);
      r.host = *hs;
      (void)index_.set_residency(p, r);
      backup_pairs_.push_back(transfer::page_pair{r.device.value(), hs->value()});
      started.push_back(p);
    }
    if (backup_pairs_.empty()) return;
    const result<event_type> e = Copy::backup(*backup_stream_, device_view_, host_view_, backup_pairs_);
    if (!e) {  // a geometry mismatch: undo, never serve the slots
      for (std::size_t k = 0; k < started.size(); ++k) {
        (void)index_.remove_tier(started[k], tier_id::host);
        (void)host_.free(host_slot{backup_pairs_[k].dst});
      }
      return;
    }
    stats_.pages_backed_up += started.size();
    stats_.bytes_backed_up += started.size() * host_.slot_bytes();
    pending_backups_.push_back(pending_backup{*e, std::move(started)});
  }
  void start_queued_backups() {
    if (backup_queue_.empty()) return;
    std::vector<page_id> q;
    q.swap(backup_queue_);
    start_backups(q);
  }

  // host → every slow tier lacking a copy, for `pages` ready on host.
  void start_puts(std::span<const page_id> pages, std::vector<std::pair<std::size_t, std::uint64_t>>* tickets = nullptr) {
    if constexpr (slow_tier_count > 0) {
      std::array<std::vector<page_write>, 2> writes;
      std::array<std::vector<std::pair<page_id, host_slot>>, 2> who;
      for (const page_id p : pages) {
        if (!index_.contains(p)) continue;
        const page_info inf = *index_.info(p);
        page_residency r = inf.residency;
        if (!r.ready(tier_id::host)) continue;
        for (std::size_t t = 0; t < slow_tier_count; ++t) {
          const tier_id tid = slow_tier_id(t);
          if (r.tiers.has(tid)) continue;
          r.tiers.add(tid);
          r.in_flight.add(tid);
          writes[t].push_back(page_write{{inf.ns, inf.key}, tokens_fingerprint(index_.tokens_of(p)), host_.host_span(r.host)});
          who[t].push_back({p, r.host});
        }
        (void)index_.set_residency(p, r);
      }
      for_each_slow([&](auto tier_index, auto&, auto& worker) {
        constexpr std::size_t t = decltype(tier_index)::value;
        if (writes[t].empty()) return;
        const std::size_t n = writes[t].size();
        const std::uint64_t ticket = worker->submit_put(std::move(writes[t]));
        io_[t].emplace(ticket, pending_io{detail::slow_op::put, std::move(who[t])});
        if (tickets) tickets->push_back({t, ticket});
        (void)n;
      });
    } else {
      (void)pages;
      (void)tickets;
    }
  }
  void start_queued_puts() {
    if (put_queue_.empty()) return;
    std::vector<page_id> q;
    q.swap(put_queue_);
    start_puts(q);
  }

  // ------------------------------------------------------------------------ completions
  void poll_loads() {
    std::erase_if(pending_loads_, [&](pending_load& l) {
      if (!Copy::query(*l.stream, l.done)) return false;
      for (const page_id p : l.pages)
        if (index_.contains(p)) (void)index_.set_in_flight(p, tier_id::device, false);
      return true;
    });
  }
  void poll_backups() {
    std::size_t done = 0;
    while (done < pending_backups_.size() && Copy::query(*backup_stream_, pending_backups_[done].done)) ++done;
    for (std::size_t k = 0; k < done; ++k)
      for (const page_id p : pending_backups_[k].pages) {
        if (!index_.contains(p)) continue;
        (void)index_.set_in_flight(p, tier_id::host, false);
        if (slow_tier_count > 0 && cfg_.write_to_slow.backup_on_insert()) put_queue_.push_back(p);
      }
    pending_backups_.erase(pending_backups_.begin(), pending_backups_.begin() + std::ptrdiff_t(done));
  }
  void poll_slow() {
    for_each_slow([&](auto tier_index, auto&, auto& worker) {
      constexpr std::size_t t = decltype(tier_index)::value;
      completions_.clear();
      worker->drain(completions_);
      for (auto& c : completions_) {
        auto it = io_[t].find(c.ticket);
        if (it == io_[t].end()) continue;
        finish_io(t, it->second, c);
        io_[t].erase(it);
      }
      // Reads a faster tier missed, asked of this (slower) one; tiers are visited fastest first.
      if (!retries_[t].empty()) {
        const std::uint64_t ticket = worker->submit_get(std::move(retries_[t]));
        io_[t].emplace(ticket, pending_io{detail::slow_op::get, std::move(retry_pages_[t])});
        retries_[t].clear();
        retry_pages_[t].clear();
      }
    });
  }
  void finish_io(std::size_t t, pending_io& io, const detail::slow_completion& c) {
    const tier_id tid = slow_tier_id(t);
    for (std::size_t k = 0; k < io.pages.size(); ++k) {
      const auto [p, hs] = io.pages[k];
      const bool ok = k < c.status.size() && c.status[k].code == errc::ok;
      if (!index_.contains(p)) continue;
      if (io.op == detail::slow_op::put) {
        if (ok) {
          (void)index_.set_in_flight(p, tid, false);
          stats_.pages_written[std::size_t(tid)]++;
          stats_.bytes_written[std::size_t(tid)] += host_.slot_bytes();
        } else {
          (void)index_.remove_tier(p, tid);
          stats_.write_failures++;
        }
      } else if (ok) {
        (void)index_.set_in_flight(p, tier_id::host, false);
        stats_.pages_fetched[std::size_t(tid)]++;
        stats_.bytes_fetched[std::size_t(tid)] += host_.slot_bytes();
        stats_.prefetch_arrived++;
      } else {
        // A miss (gone: the tier evicted it on its own; corrupted; foreign) or a failure. A page
        // the tier no longer has is forgotten there; the next slow tier holding it is asked
        // instead; otherwise the host slot is freed, never having held data.
        const errc e = k < c.status.size() ? c.status[k].code : errc::io_error;
        if (e == errc::not_found || e == errc::corrupted) (void)index_.remove_tier(p, tid);
        const page_info inf = *index_.info(p);
        const int next = ready_slow_tier(inf.residency);
        if (next > int(t)) {
          retries_[std::size_t(next)].push_back(page_read{{inf.ns, inf.key}, tokens_fingerprint(index_.tokens_of(p)), host_.host_span(hs)});
          retry_pages_[std::size_t(next)].push_back({p, hs});
          stats_.prefetch_retried++;
          continue;
        }
        (void)index_.remove_tier(p, tier_id::host);
        (void)host_.free(hs);
        stats_.prefetch_missed++;
      }
    }
  }

  // Waits for the lease's fetches as the prefetch policy allows, then collects what arrived.
  void await_fetches(lease_type& l) {
    std::size_t outstanding = 0;
    for (auto [t, ticket] : l.fetch_tickets_) {
      auto it = io_[t].find(ticket);
      if (it != io_[t].end()) outstanding += it->second.pages.size();
    }
    const std::chrono::nanoseconds budget = cfg_.prefetch.wait_budget(outstanding);
    if (outstanding > 0 && budget.count() > 0) {
      const auto now = std::chrono::steady_clock::now();
      const auto deadline = budget == wait_forever || budget > std::chrono::hours(24)
                                ? now + std::chrono::hours(24)
                                : now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(budget);
      for_each_slow([&](auto tier_index, auto&, auto& worker) {
        constexpr std::size_t t = decltype(tier_index)::value;
        for (auto [tt, ticket] : l.fetch_tickets_)
          if (tt == t) (void)worker->wait_for(ticket, deadline);
      });
    }
    poll_slow();
    std::size_t late = 0;
    for (auto [t, ticket] : l.fetch_tickets_)
      if (auto it = io_[t].find(ticket); it != io_[t].end()) late += it->second.pages.size();
    stats_.prefetch_abandoned += late;  // they land later, for the requests after this one
  }

  config cfg_;
  index_type index_;
  DevicePool device_;
  HostPool host_;
  host_view_type host_view_;
  device_view_type device_view_;
  std::vector<device_slot> slot_of_;        // per page id: its device slot (invalid: none)
  std::vector<std::uint32_t> device_hits_;  // per device slot: hits since the page arrived
  std::vector<std::uint32_t> host_hits_;
  std::vector<std::pair<stream_type*, event_type>> load_event_;  // per device slot: the load filling it
  std::tuple<std::unique_ptr<SlowTiers>...> slow_;
  // Declared after the pools and tiers they use, so they stop first.
  std::tuple<std::unique_ptr<detail::slow_tier_worker<SlowTiers>>...> workers_;
  std::unique_ptr<stream_type> backup_stream_;
  std::array<std::unordered_map<std::uint64_t, pending_io>, 2> io_;  // per slow tier: ticket → pages
  std::vector<pending_load> pending_loads_;
  std::vector<pending_backup> pending_backups_;
  std::array<std::vector<page_read>, 2> retries_;  // per slow tier: reads a faster tier missed
  std::array<std::vector<std::pair<page_id, host_slot>>, 2> retry_pages_;
  std::vector<page_id> backup_queue_;  // pages a policy asked to back up to host
  std::vector<page_id> put_queue_;     // pages a policy asked to write to the slow tiers
  cache_stats stats_;
  // Scratch, reused across calls.
  std::vector<std::size_t> to_load_;
  std::vector<transfer::page_pair> pairs_;
  std::vector<transfer::page_pair> backup_pairs_;
  std::vector<page_id> path_;
  std::vector<page_id> new_pages_;
  std::vector<page_id> victims_;
  std::vector<detail::slow_completion> completions_;
};

}  // namespace kvtier
