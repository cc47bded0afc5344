#pragma once
// What hierarchical_cache owns and the data paths it runs between calls: the index, the pools and
// their views, the slow-tier set and the backup path, the eviction cascade (make_room, once for
// both pooled tiers), the write paths (device → host backups, host → slow-tier puts) and the
// completions poll() collects. hierarchical_cache derives from it and adds the engine's calls.
// Scheduler thread only.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "kvtier/cache/detail/backup_path.hpp"
#include "kvtier/cache/detail/make_room.hpp"
#include "kvtier/cache/detail/remote_probe.hpp"
#include "kvtier/cache/detail/slot_owners.hpp"
#include "kvtier/cache/detail/slow_tier_set.hpp"
#include "kvtier/cache/lease.hpp"
#include "kvtier/cache/parts.hpp"
#include "kvtier/cache/stats.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/index/radix_index.hpp"
#include "kvtier/policy/prefetch.hpp"
#include "kvtier/policy/write.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/request.hpp"
#include "kvtier/transfer/rope.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::detail {

template <class HostLayout>
using host_view_t = decltype(transfer::paged_view<HostLayout>(nullptr, std::declval<kv_shape>(), 1, page_size<>(1)));
template <class DevicePool>
using device_view_t = std::remove_cvref_t<decltype(device_kv_view(std::declval<const DevicePool&>()))>;

template <class PageSize, class DevicePool, class HostPool, class HostLayout, class Copy, class WriteToHost,
          class WriteToSlow, class Prefetch, class Eviction, class... SlowTiers>
class cache_paths {
 public:
  using stream_type = typename Copy::stream_type;
  using event_type = typename Copy::event_type;
  using index_type = radix_index<Eviction, PageSize::static_tokens>;
  using lease_type = cache_lease<Copy>;
  using host_view_type = host_view_t<HostLayout>;      // (layer, kv, token, head, dim), page first
  using device_view_type = device_view_t<DevicePool>;  // (layer, kv, token, head, dim), layer first
  using slow_set = slow_tier_set<SlowTiers...>;
  static constexpr std::size_t slow_tier_count = sizeof...(SlowTiers);

  // Run-time configuration: shape, page size, capacities, and the policies' parameters.
  struct config {
    kv_shape shape;
    PageSize pages;
    std::size_t device_pages = 0;   // slots of the device pool
    std::size_t host_pages = 0;     // slots of the host pool
    std::uint64_t model = 0;        // enters every page key
    WriteToHost write_to_host{};    // device → host
    WriteToSlow write_to_slow{};    // host → slow tiers
    Prefetch prefetch{};
    Eviction eviction{};
    remote_lookup remote{};         // ask the slowest slow tier for pages past the index (off)
    transfer::k_layout k_layout{};  // how pages keep K (rotated as computed; load_at moves them): enters every page key
  };

  cache_paths(config cfg, std::unique_ptr<SlowTiers>... slow)
      : cfg_(validated(std::move(cfg))),
        index_(cfg_.pages, index_options{cfg_.model ^ cfg_.k_layout.fingerprint(), 0}, cfg_.eviction),
        device_(pool_factory<DevicePool>::make(cfg_.shape, page_size<>(cfg_.pages), cfg_.device_pages)),
        host_(pool_factory<HostPool>::make(cfg_.shape, page_size<>(cfg_.pages), cfg_.host_pages)),
        host_view_(transfer::paged_view<HostLayout>(host_.host_data(), cfg_.shape, cfg_.host_pages, page_size<>(cfg_.pages))),
        device_view_(device_kv_view(device_)),
        device_hits_(cfg_.device_pages, 0),
        host_hits_(cfg_.host_pages, 0),
        load_event_(cfg_.device_pages),
        slot_use_(cfg_.device_pages),
        slow_(std::move(slow)...) {
    if (host_.slot_bytes() != cfg_.shape.bytes_per_page(cfg_.pages.tokens()))
      throw config_error("kvtier: the host pool's slots are not one page of the cache's shape");
    slow_.for_each([&](auto, const auto& tier) {
      if constexpr (requires { tier.page_bytes(); })
        if (tier.page_bytes() != host_.slot_bytes())
          throw config_error("kvtier: a slow tier's page_bytes is not the cache's page (shape.bytes_per_page(page tokens)); "
                             "build the tier with the cache's page size");
    });
  }
  cache_paths(const cache_paths&) = delete;
  cache_paths& operator=(const cache_paths&) = delete;
  ~cache_paths() {
    // Copies into or out of the pools must finish before the pools go.
    for (auto& l : pending_loads_) Copy::synchronize(*l.stream, l.done);
    slow_.stop();     // joins the I/O threads after their batches completed
    backups_.stop();  // drains the backup copies
  }

  // Checks the cache's own bookkeeping against the index: every page's device slot as lookup
  // sees it, held by that page alone and allocated in its pool, and every host slot allocated.
  bool audit() const {
    std::vector<std::uint8_t> mapped(slot_use_.size(), 0);
    std::size_t seen = 0;
    for (std::size_t p = 0; seen < index_.pages() && p < UINT32_MAX; ++p) {
      const page_id id{std::uint32_t(p)};
      if (!index_.contains(id)) continue;
      ++seen;
      const page_residency r = index_.info(id)->residency;
      if (r.tiers.has(tier_id::device)) {
        if (!slot_use_.holds(r.device) || p >= slot_of_.size() || slot_of_[p] != r.device) return false;
        if (!device_.is_allocated(r.device)) return false;
        if (slot_use_[r.device] != slot_use::indexed || ++mapped[r.device.value()] > 1) return false;
      }
      if (r.tiers.has(tier_id::host) && !host_.is_allocated(r.host)) return false;
    }
    return true;
  }

 protected:
  // Misuse the cache cannot answer with an error value (a call from a second thread): stop with a
  // message rather than corrupt the index.
  [[noreturn]] static void misuse(const char* what) noexcept {
    std::fprintf(stderr, "kvtier: hierarchical_cache misuse: %s\n", what);
    std::abort();
  }
  void check_thread() const noexcept {
    if (std::this_thread::get_id() != owner_)
      misuse("called from a thread that does not own the cache (one scheduler thread calls every member; "
             "hand the cache over with adopt_thread() from the new thread once the old one has stopped calling it)");
  }

  struct pending_load {
    stream_type* stream;
    event_type done;
    std::vector<page_id> pages;
  };

  static config validated(config c) {
    if (c.device_pages == 0 || c.host_pages == 0)
      throw config_error("kvtier: hierarchical_cache needs device_pages and host_pages above 0");
    if (c.device_pages > UINT32_MAX - 1 || c.host_pages > UINT32_MAX - 1)
      throw config_error("kvtier: hierarchical_cache pools hold at most 2^32 - 2 pages");
    check_remote_lookup(c.remote, slow_tier_count);
    c.k_layout.check_rotated(c.shape);  // engines write RoPE'd K: the cache keeps and serves it rotated
    return c;
  }

  // The fastest slow tier holding a ready copy (0: disk, 1: remote), or -1.
  static int ready_slow_tier(const page_residency& r) noexcept {
    for (std::size_t t = 0; t < slow_tier_count; ++t)
      if (r.ready(slow_set::id(t))) return int(t);
    return -1;
  }
  tier_id slow_tier_of(page_id p) const {
    const int t = ready_slow_tier(index_.info(p)->residency);
    return t < 0 ? tier_id::disk : slow_set::id(std::size_t(t));
  }
  // The device slot of page p, kept beside the index (every device copy enters and leaves through
  // the cache), so that lookup reads one array instead of asking the index page by page.
  void set_slot_of(page_id p, device_slot d) {
    if (p.value() >= slot_of_.size()) slot_of_.resize(std::max<std::size_t>(p.value() + 1, slot_of_.size() * 2));
    slot_of_[p.value()] = d;
  }

  // ------------------------------------------------------------------------ eviction cascade
  // Device victims with no copy below are backed up to host (by policy) before they are dropped.
  bool make_room_device(std::size_t n) {
    struct ops {
      cache_paths& c;
      std::size_t available() const { return c.device_.available(); }
      void copy_down(std::span<const page_id> victims) {
        c.start_backups(victims);
        (void)c.backups_.settle();
        c.poll_backups();
      }
      void release(const victim& v) {
        (void)c.device_.free(v.residency.device);
        c.slot_use_.set(v.residency.device, slot_use::free);
        c.slot_of_[v.page.value()] = device_slot{};
        c.count_eviction(v, tier_id::device);
      }
      bool settle() { return c.settle_backups(); }
    } o{*this};
    return make_room(index_, tier_id::device, n, cfg_.write_to_host.victim_without_copy() == on_evict::drop, o, victims_);
  }
  // Host victims with no copy below are written to the slow tiers (by policy; dropped when there
  // is no slow tier) without waiting: write_back copies them out of the host pool first.
  bool make_room_host(std::size_t n) {
    struct ops {
      cache_paths& c;
      std::size_t available() const { return c.host_.available(); }
      void copy_down(std::span<const page_id> victims) { c.write_back(victims); }
      void release(const victim& v) {
        (void)c.host_.free(v.residency.host);
        c.count_eviction(v, tier_id::host);
      }
      bool settle() { return c.settle_backups(); }  // host slots may be held by backups in flight
    } o{*this};
    const bool drop_all = slow_tier_count == 0 || cfg_.write_to_slow.victim_without_copy() == on_evict::drop;
    return make_room(index_, tier_id::host, n, drop_all, o, victims_);
  }
  void count_eviction(const victim& v, tier_id t) {
    stats_.evicted[std::size_t(t)]++;
    if (!has_other_copy(v.residency, t)) stats_.dropped[std::size_t(t)]++;
  }

  // Write-back of host victims that no slow tier holds, never waiting on I/O: each page's bytes
  // are copied out of its host slot into the batch's own buffer, its slow-tier copies are marked
  // in flight (which keeps the page in the index) and its host slot is freed at once. A write
  // that fails later leaves the page with no copy: a future miss. While the slow tiers hold as
  // many bytes in flight as the host pool (stalled or slow), further victims are dropped unwritten
  // (write_back_skipped): memory stays bounded and eviction never stops.
  void write_back(std::span<const page_id> victims) {
    if constexpr (slow_tier_count > 0) {
      const std::size_t bytes = host_.slot_bytes();
      const std::size_t limit = host_.capacity() * bytes;
      std::array<std::vector<page_write>, slow_tier_count> writes;
      std::array<typename slow_set::page_slots, slow_tier_count> who;
      std::array<std::vector<std::byte>, slow_tier_count> payload;
      std::size_t held = slow_.payload_bytes();
      for (const page_id p : victims) {
        const page_info inf = *index_.info(p);
        // A page also on the device loses nothing with its host copy (the device's is backed up
        // again when it goes), and a write in flight would pin its device copy.
        if (!inf.residency.ready(tier_id::host) || has_copy_below(inf.residency, tier_id::host) ||
            inf.residency.tiers.has(tier_id::device))
          continue;
        if (held + slow_tier_count * bytes > limit) {
          stats_.write_back_skipped++;
          continue;  // dropped by make_room: a future miss
        }
        const std::span<std::byte> src = host_.host_span(inf.residency.host);
        for (std::size_t t = 0; t < slow_tier_count; ++t) {
          payload[t].insert(payload[t].end(), src.begin(), src.end());
          writes[t].push_back(page_write{{inf.ns, inf.key}, tokens_fingerprint(index_.tokens_of(p)), {}});
          who[t].push_back({p, host_slot{}});
          (void)index_.place_copy(p, slow_set::id(t), true);
          held += bytes;
        }
        (void)index_.remove_tier(p, tier_id::host);
        (void)host_.free(inf.residency.host);
        stats_.evicted[std::size_t(tier_id::host)]++;
      }
      for (std::size_t t = 0; t < slow_tier_count; ++t) {
        if (writes[t].empty()) continue;
        for (std::size_t k = 0; k < writes[t].size(); ++k)
          writes[t][k].payload = std::span<const std::byte>(payload[t].data() + k * bytes, bytes);
        (void)slow_.submit_put(t, std::move(writes[t]), std::move(who[t]), std::move(payload[t]));
      }
    } else {
      (void)victims;
    }
  }
  bool settle_backups() {
    if (!backups_.settle()) return false;
    poll_backups();
    return true;
  }

  // One host slot, making room for it when the pool is full. Callers that need many make room
  // for all of them first (make_room_host once per batch, not once per page: eviction scans are
  // not free).
  result<host_slot> allocate_host_slot() {
    if (host_.available() == 0) (void)make_room_host(1);
    const result<host_slot> s = host_.allocate();
    if (!s) stats_.host_full++;
    else host_hits_[s->value()] = 0;
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
      // Making room may have evicted it (it was not locked) or its device copy.
      if (!index_.contains(p) || !index_.info(p)->residency.ready(tier_id::device)) {
        (void)host_.free(*hs);
        continue;
      }
      (void)index_.place_copy(p, *hs, true);
      backup_pairs_.push_back(transfer::page_pair{index_.info(p)->residency.device.value(), hs->value()});
      started.push_back(p);
    }
    if (backup_pairs_.empty()) return;
    const std::size_t n = started.size();
    if (!backups_.start(device_view_, host_view_, backup_pairs_, started)) {
      // A geometry mismatch: undo, never serve the slots.
      for (std::size_t k = 0; k < n; ++k) {
        (void)index_.remove_tier(started[k], tier_id::host);
        (void)host_.free(host_slot{backup_pairs_[k].dst});
      }
      return;
    }
    stats_.pages_backed_up += n;
    stats_.bytes_backed_up += n * host_.slot_bytes();
  }
  void start_queued_backups() {
    const std::vector<page_id> q = backups_.take_queue();
    if (!q.empty()) start_backups(q);
  }

  // host → every slow tier lacking a copy, for `pages` ready on host.
  void start_puts(std::span<const page_id> pages, std::vector<std::pair<std::size_t, std::uint64_t>>* tickets = nullptr) {
    std::array<std::vector<page_write>, slow_tier_count> writes;
    std::array<typename slow_set::page_slots, slow_tier_count> who;
    for (const page_id p : pages) {
      if (!index_.contains(p)) continue;
      const page_info inf = *index_.info(p);
      if (!inf.residency.ready(tier_id::host)) continue;
      for (std::size_t t = 0; t < slow_tier_count; ++t) {
        if (inf.residency.tiers.has(slow_set::id(t))) continue;
        (void)index_.place_copy(p, slow_set::id(t), true);
        writes[t].push_back(page_write{{inf.ns, inf.key}, tokens_fingerprint(index_.tokens_of(p)), host_.host_span(inf.residency.host)});
        who[t].push_back({p, inf.residency.host});
      }
    }
    for (std::size_t t = 0; t < slow_tier_count; ++t) {
      if (writes[t].empty()) continue;
      const std::uint64_t ticket = slow_.submit_put(t, std::move(writes[t]), std::move(who[t]));
      if (tickets) tickets->push_back({t, ticket});
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
    backups_.collect([&](page_id p) {
      if (!index_.contains(p)) return;
      (void)index_.set_in_flight(p, tier_id::host, false);
      if (slow_tier_count > 0 && cfg_.write_to_slow.backup_on_insert()) put_queue_.push_back(p);
    });
  }
  void poll_slow() {
    slow_.collect([&](std::size_t t, typename slow_set::pending_io& io, const slow_completion& c) { finish_io(t, io, c); });
  }
  void finish_io(std::size_t t, typename slow_set::pending_io& io, const slow_completion& c) {
    const tier_id tid = slow_set::id(t);
    for (std::size_t k = 0; k < io.pages.size(); ++k) {
      const auto [p, hs] = io.pages[k];
      const bool ok = k < c.status.size() && c.status[k].code == errc::ok;
      if (!index_.contains(p)) continue;
      if (io.op == slow_op::put) {
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
          slow_.retry(std::size_t(next), page_read{{inf.ns, inf.key}, tokens_fingerprint(index_.tokens_of(p)), host_.host_span(hs)}, p, hs);
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
    for (auto [t, ticket] : l.fetch_tickets_) outstanding += slow_.outstanding_pages(t, ticket);
    const std::chrono::nanoseconds budget = cfg_.prefetch.wait_budget(outstanding);
    if (outstanding > 0 && budget.count() > 0) {
      const auto now = std::chrono::steady_clock::now();
      const auto deadline = budget == wait_forever || budget > std::chrono::hours(24)
                                ? now + std::chrono::hours(24)
                                : now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(budget);
      for (auto [t, ticket] : l.fetch_tickets_) (void)slow_.wait_for(t, ticket, deadline);
    }
    poll_slow();
    std::size_t late = 0;
    for (auto [t, ticket] : l.fetch_tickets_) late += slow_.outstanding_pages(t, ticket);
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
  slot_owners slot_use_;                    // per device slot: who holds it
  std::thread::id owner_ = std::this_thread::get_id();  // the scheduler thread
  // Declared after the pools they read and write, so they stop first.
  slow_set slow_;
  backup_path<Copy> backups_;
  std::vector<pending_load> pending_loads_;
  std::vector<page_id> put_queue_;  // pages a policy asked to write to the slow tiers
  cache_stats stats_;
  // Scratch, reused across calls.
  std::vector<std::size_t> to_load_;
  std::vector<transfer::page_pair> pairs_;
  std::vector<transfer::page_pair> backup_pairs_;
  std::vector<page_id> path_;
  std::vector<page_id> new_pages_;
  std::vector<page_id> victims_;
};

}  // namespace kvtier::detail
