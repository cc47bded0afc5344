#pragma once
// load_at: hierarchical_cache's load() of a lease whose pages are served at other positions than the
// ones they were computed at (CachedAttention's truncation: the oldest turns dropped, the rest moved
// forward), with RoPE applied on load. The cache keeps K rotated at the position each page was
// computed at (page i of a prefix: i × P); page i served at positions.first[i] is loaded from its
// host copy with K rotated by first[i] − i × P (the copy strategy's load_rotated: transfer::cpu on
// the CPU path, the fused kernel on the GPU path), into a slot private to the lease: the index keeps
// pointing at the unmoved copies, so no other lease is ever served a moved page. Pages that do not
// move are served as load() serves them (in place on the device, or loaded and indexed). A page
// marked page_positions::skip is not needed (not loaded; device_slots()[i] is then not to be read).
//
//   cache.lookup(ns, old_tokens, lease);
//   load_at(cache, lease, stream, page_positions{first});   // first[i]: where page i's first token goes
//   ... the engine's block table: the lease's slots of the pages it keeps, in their new order ...
//
// Errors: invalid_argument (an inactive or foreign lease, a second load, fewer positions than the
// lease's pages, a move with no rope_spec in the cache's k_layout), unsupported (a copy strategy
// without load_rotated). The usable prefix ends at the first page that can be served neither in
// place nor from a host copy (as load()'s does at a miss); a full device shortens it too.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvtier/cache/hierarchical_cache.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/transfer/rope.hpp"

namespace kvtier {
namespace detail {

struct positioned_load {
  template <class Cache>
  static result<void> run(Cache& c, typename Cache::lease_type& l, typename Cache::stream_type& stream,
                          transfer::page_positions at) {
    using copy = typename Cache::copy_type;
    c.check_thread();
    if (!c.owns(l) || l.loaded_ || at.first.size() < l.match_.size()) return make_error(errc::invalid_argument);
    const std::size_t n = l.match_.size(), P = c.cfg_.pages.tokens();
    auto skipped = [&](std::size_t i) { return at.first[i] == transfer::page_positions::skip; };
    auto shift = [&](std::size_t i) { return skipped(i) ? 0L : at.first[i] - long(i * P); };
    bool moves = false;
    for (std::size_t i = 0; i < n; ++i) moves |= shift(i) != 0 || (at.first[i] < 0 && !skipped(i));
    if (!moves) {
      bool skips = false;
      for (std::size_t i = 0; i < n; ++i) skips |= skipped(i);
      if (!skips) return c.load(l, stream);  // nothing moves: the ordinary load
    }
    for (std::size_t i = 0; i < n; ++i)
      if (at.first[i] < 0 && !skipped(i)) return make_error(errc::invalid_argument);
    if (moves && !c.cfg_.k_layout.rope) return make_error(errc::invalid_argument);
    if constexpr (!requires { &copy::template load_rotated<typename Cache::host_view_type, typename Cache::device_view_type>; }) {
      if (moves) return make_error(errc::unsupported);
    }
    l.loaded_ = true;
    l.stream_ = &stream;
    if (!l.fetch_tickets_.empty()) c.await_fetches(l);
    // Pages served in place (not moved, on the device) or from their host copy (moved or not).
    std::size_t usable = 0;
    c.to_load_.clear();
    for (; usable < n; ++usable) {
      if (skipped(usable)) {
        if (!(usable < l.cached_pages_)) l.slots_[usable] = device_slot{};
        continue;
      }
      const page_id p = l.match_.pages[usable];
      const page_residency r = c.index_.info(p)->residency;
      if (shift(usable) == 0 && r.ready(tier_id::device)) {
        l.slots_[usable] = r.device;
      } else if (shift(usable) == 0 && r.tiers.has(tier_id::device)) {  // another lease is loading it
        l.slots_[usable] = r.device;
        l.waits_.push_back(c.load_event_[r.device.value()]);
      } else if (r.ready(tier_id::host) && r.in_flight.empty()) {
        c.to_load_.push_back(usable);
      } else {
        break;  // a miss, or a moved page with no host copy: compute from here
      }
    }
    (void)c.make_room_device(c.to_load_.size());
    c.pairs_.clear();
    std::vector<long> deltas;
    std::vector<page_id> indexed;     // unmoved pages loaded into indexed slots (as load())
    std::vector<std::uint8_t> moved;  // per pair
    for (std::size_t k = 0; k < c.to_load_.size(); ++k) {
      const std::size_t i = c.to_load_[k];
      const result<device_slot> ds = c.device_.allocate();
      if (!ds) {
        usable = i;
        c.stats_.device_full++;
        break;
      }
      const page_id p = l.match_.pages[i];
      c.pairs_.push_back(transfer::page_pair{c.index_.info(p)->residency.host.value(), ds->value()});
      deltas.push_back(shift(i));
      moved.push_back(shift(i) != 0);
      if (shift(i) == 0) {
        (void)c.index_.place_copy(p, *ds, true);
        c.slot_use_.set(*ds, Cache::slot_use::indexed);
        c.set_slot_of(p, *ds);
        c.device_hits_[ds->value()] = 0;
        indexed.push_back(p);
      } else {
        c.slot_use_.set(*ds, Cache::slot_use::lease_private);  // freed at release, never indexed
        l.private_.push_back(*ds);
      }
      l.slots_[i] = *ds;
    }
    if (!c.pairs_.empty()) {
      l.layer_events_.resize(c.cfg_.shape.layers());
      result<void> e;
      if constexpr (requires { &copy::template load_rotated<typename Cache::host_view_type, typename Cache::device_view_type>; }) {
        const transfer::rope_on_load rl{c.cfg_.k_layout.rope.value_or(transfer::rope_spec{}), transfer::k_storage::rotated, deltas};
        e = moves ? copy::load_rotated(stream, c.host_view_, c.device_view_, c.pairs_, rl, c.cfg_.shape.element_type(),
                                       std::span(l.layer_events_))
                  : copy::load(stream, c.host_view_, c.device_view_, c.pairs_, std::span(l.layer_events_));
      } else {
        e = copy::load(stream, c.host_view_, c.device_view_, c.pairs_, std::span(l.layer_events_));
      }
      if (!e) {  // refused before anything moved: serve nothing loaded
        std::size_t next_indexed = 0;
        for (std::size_t k = 0; k < c.pairs_.size(); ++k) {
          const device_slot d{c.pairs_[k].dst};
          if (!moved[k]) {
            const page_id p = indexed[next_indexed++];
            (void)c.index_.remove_tier(p, tier_id::device);
            c.slot_of_[p.value()] = device_slot{};
          } else {
            std::erase(l.private_, d);
          }
          c.slot_use_.set(d, Cache::slot_use::free);
          (void)c.device_.free(d);
        }
        l.layer_events_.clear();
        l.cached_pages_ = std::min(usable, c.to_load_.front());
        return e.err();
      }
      const auto last = l.layer_events_.back();
      for (const auto& pr : c.pairs_) c.load_event_[pr.dst] = {&stream, last};
      c.pending_loads_.push_back(typename Cache::pending_load{&stream, last, std::move(indexed)});
      c.stats_.pages_loaded += c.pairs_.size();
      c.stats_.bytes_loaded += c.pairs_.size() * c.host_.slot_bytes();
    }
    l.cached_pages_ = usable;
    c.stats_.served_tokens += usable * P;
    c.stats_.computed_tokens += l.prompt_tokens_ - std::min(l.prompt_tokens_, usable * P);
    return {};
  }
};

}  // namespace detail

// See the top of this file. `positions.first` holds one entry per page of the lease (at least).
template <class Cache>
result<void> load_at(Cache& cache, typename Cache::lease_type& lease, typename Cache::stream_type& stream,
                     transfer::page_positions positions) {
  return detail::positioned_load::run(cache, lease, stream, positions);
}

}  // namespace kvtier
