#pragma once
// simulator: a discrete-event model of serving::server's loop (same admission, same steps), with
// time from a cost_model instead of the GPU, and kvtier's real prefix index and eviction policies
// (sim_cache). Each step, as the server does:
//   1. arrivals and chat follow-ups whose time passed join the queue; copies that landed are marked;
//   2. admission while fewer than max_batch run: requests that fetched go on to load; then queued
//      ones in the policy's order (serving's priority, or io_aware::select): lookup (locks the
//      cached prefix), slow → host fetch (load on a later step), else load host → device on the
//      one H2D link (layers land in order) and device slots for the rest and every decode position;
//   3. one batch under the token budget: a decode token for each request past its prefill, then
//      chunked prefills; a first chunk over a loading prefix waits for layer l before computing it
//      (the stall); a finished prefill commits its pages (write-through to host). When the cost
//      model says the engine batches (cost_model::batched_prefill) the step's chunks are ONE call,
//      charged cost_model::prefill_call_s, whose layer l starts once every chunk's layer l is loaded
//      (each wait counted for the chunk that waited), as serving::server runs prefill_batch; with a
//      policy that fills bubbles, the chunks whose loads landed run as one call and those that would
//      wait as a second call after it (a chunk that would wait still runs after the ready ones).
//      When the engine's steps are load-aware (cost_model::load_aware, server_options::load_aware)
//      the decode call runs first, and a chunk whose prefix has not fully landed by then waits for a
//      later step while the step has other work (counted in load_deferrals);
//   4. a finished request commits its decode pages, frees what it reserved, unlocks;
//   5. the host's share of the step (cost_model::step_overhead_s, when the engine measured it).
// Scheduler-aware prefetch and eviction (CachedAttention), option prefetch_aware: queued requests'
// slow-tier pages are fetched to host ahead of admission while the slow link is idle, and the
// cached prefixes of the first queued requests are protected with look_ahead's expect(); because
// expect() only marks nodes that exist when it is called, the protection is refreshed after every
// step that committed pages (a queued request asking about a document being computed gets it).
// Checked on the way: every read page's content is the reader's own prefix; time never goes back;
// every request finishes once.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <queue>
#include <span>
#include <unordered_map>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier_engine/scheduling/cost_model.hpp"
#include "kvtier_engine/scheduling/policies.hpp"
#include "kvtier_engine/scheduling/sim_cache.hpp"
#include "kvtier_engine/serving/policy.hpp"
#include "kvtier_engine/serving/request.hpp"

namespace kvtier_engine::scheduling {

struct sim_options {
  std::size_t token_budget = 8192;  // tokens computed per step
  std::size_t chunk_tokens = 2048;  // longest prefill chunk (whole pages)
  std::size_t max_batch = 32;
  std::size_t policy_window = 64;   // queued requests ranked per admission round
  bool prefetch_aware = false;      // CachedAttention: fetch ahead, protect queued prefixes
  std::size_t prefetch_depth = 16;  // queued requests fetched ahead and protected
};

struct sim_record {
  std::size_t id = 0;
  double arrival_s = 0, admitted_s = 0, first_token_s = 0, finish_s = 0;
  std::size_t prompt_tokens = 0, output_tokens = 0, reused_tokens = 0, computed_tokens = 0;
  std::size_t loaded_pages = 0, fetched_pages = 0;
  double load_wait_s = 0;
  std::uint32_t served = 0;  // times it finished (1)
  bool warmup = false;       // its request_spec's warmup: not in the summary
  double ttft_s() const noexcept { return first_token_s - arrival_s; }
};

struct sim_counters {
  std::uint64_t steps = 0, stall_steps = 0;
  double step_s = 0, load_wait_s = 0, duration_s = 0, overhead_s = 0;  // overhead: step_overhead_s's share
  std::uint64_t pages_loaded = 0, pages_fetched = 0, pages_prefetched = 0, pages_backed_up = 0, pages_written_disk = 0;
  std::uint64_t pages_computed = 0, duplicate_pages = 0;  // duplicate: computed, but committed meanwhile by another
  std::uint64_t pages_read = 0, content_mismatches = 0, time_regressions = 0, deferred_admissions = 0, delay_hit_deferrals = 0;
  std::uint64_t load_deferrals = 0;  // chunks left for a later step while their prefix loaded (load-aware engine)
  bool deadlock = false;
};

struct sim_result {
  std::vector<sim_record> records;
  sim_counters counters;
  double wall_s = 0;  // host seconds the simulation took
};

namespace detail {
inline std::uint64_t mix(std::uint64_t h, std::uint64_t v) noexcept {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 31);
}
template <class P>
concept batch_selecting = requires(const P& p, std::span<const candidate> c, const batch_state& s, std::vector<std::size_t>& o) {
  p.select(c, s, o);
  { p.fill_bubbles() } -> std::convertible_to<bool>;
};
}  // namespace detail

template <serving::scheduling_policy Policy>
class simulator {
 public:
  simulator(cost_model cost, sim_cache_config cache, sim_options o, Policy policy)
      : cost_(std::move(cost)), cache_(cache), o_(o), policy_(std::move(policy)) {
    if (cache.page_tokens != cost_.page_tokens) throw kvtier::config_error("kvtier-simulate: cache and cost model page sizes differ");
    if (o_.chunk_tokens == 0 || o_.chunk_tokens % P() != 0 || o_.token_budget < P() || o_.max_batch == 0)
      throw kvtier::config_error("kvtier-simulate: chunk a whole number of pages, budget >= a page, max-batch >= 1");
  }

  sim_cache& cache() noexcept { return cache_; }

  sim_result run(const serving::workload& w) {
    const auto wall0 = std::chrono::steady_clock::now();
    sim_result out;
    out.records.resize(w.requests.size());
    vocab_ = w.vocab ? w.vocab : 32000;
    children_.assign(w.requests.size(), serving::no_parent);
    for (const auto& r : w.requests)
      if (r.parent != serving::no_parent) children_[r.parent] = r.id;
    std::vector<std::size_t> order;
    for (const auto& r : w.requests)
      if (r.parent == serving::no_parent) order.push_back(r.id);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return w.requests[a].arrival_s < w.requests[b].arrival_s; });
    std::size_t next_arrival = 0, finished = 0;
    double now = 0, first_arrival = -1, last_finish = 0, last_end = 0;
    std::size_t stuck = 0;
    while (finished < w.requests.size()) {
      while (next_arrival < order.size() && w.requests[order[next_arrival]].arrival_s <= now) {
        const auto& r = w.requests[order[next_arrival++]];
        enqueue(r.id, r.arrival_s, r.ns, r.prompt, r.max_new_tokens);
      }
      while (!follow_ups_.empty() && follow_ups_.top().arrival_s <= now) {
        const auto& f = follow_ups_.top();
        enqueue(f.id, f.arrival_s, w.requests[f.id].ns, f.prompt, w.requests[f.id].max_new_tokens);
        follow_ups_.pop();
      }
      land(now);
      if (now < last_end) ++out.counters.time_regressions;
      admit(now, out);
      double elapsed = step(now, out, w);
      if (elapsed > 0) {
        out.counters.steps++;
        out.counters.step_s += elapsed;
        now += elapsed;
        last_end = now;
        stuck = 0;
      } else {  // nothing ran: jump to the next event
        double next = 1e300;
        if (next_arrival < order.size()) next = std::min(next, w.requests[order[next_arrival]].arrival_s);
        if (!follow_ups_.empty()) next = std::min(next, follow_ups_.top().arrival_s);
        if (!landings_.empty()) next = std::min(next, landings_.top().at);
        for (const auto& a : active_)
          if (a->ph == phase::fetching) next = std::min(next, a->ready_at);
        // No event ahead, or none that moves time (a request ready now that still cannot run):
        // after a bounded number of such rounds, the run is stuck.
        if (next >= 1e300 || next <= now) {
          if (done_.empty() && ++stuck > 1000) {
            out.counters.deadlock = true;
            break;
          }
        } else {
          now = next;
          stuck = 0;
        }
      }
      for (std::size_t id : done_) {
        ++finished;
        const sim_record& rec = out.records[id];
        last_finish = std::max(last_finish, rec.finish_s);
        if (first_arrival < 0 || rec.arrival_s < first_arrival) first_arrival = rec.arrival_s;
      }
      done_.clear();
    }
    out.counters.duration_s = last_finish - std::max(0.0, first_arrival);
    for (const auto& r : w.requests) out.records[r.id].warmup = r.warmup;
    out.counters.pages_backed_up = cache_.backups();
    out.counters.pages_written_disk = cache_.disk_writes();
    out.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
    return out;
  }

 private:
  enum class phase : std::uint8_t { fetching, prefill, decode };
  struct queued {
    std::size_t id = 0;
    double arrival_s = 0;
    kvtier::namespace_id ns{};
    std::vector<kvtier::token_id> prompt;
    std::vector<std::uint64_t> hashes;  // content of each whole page of the prompt (chained)
    std::size_t max_new = 0;
    bool expected = false, prefetched = false;
    std::uint64_t peeked_at = UINT64_MAX, refused_at = UINT64_MAX;  // cache versions
    candidate peek;                     // as of peeked_at
  };
  struct follow_up {
    double arrival_s;
    std::size_t id;
    std::vector<kvtier::token_id> prompt;
    friend bool operator>(const follow_up& a, const follow_up& b) noexcept { return a.arrival_s > b.arrival_s; }
  };
  struct landing {
    double at;
    kvtier::page_id page;
    kvtier::tier_id tier;
    friend bool operator>(const landing& a, const landing& b) noexcept { return a.at > b.at; }
  };
  struct active_request {
    queued q;
    phase ph = phase::prefill;
    kvtier::match_result m;             // the locked cached prefix
    std::vector<kvtier::page_id> committed_path;  // pages locked by commit
    std::vector<std::uint32_t> table;   // device slot per page (cached prefix, then reserved)
    std::vector<bool> owned;            // table[i] belongs to the index
    std::size_t cached = 0, next = 0, out_tokens = 0, committed = 0;
    double ready_at = 0;                // fetching: when the slow-tier pages land
    double load_start = 0, load_dur = 0, other_ready = 0;
    bool load_pending = false;
    std::uint64_t group = 0;
  };

  std::size_t P() const noexcept { return cost_.page_tokens; }
  std::size_t pages_for(const queued& q) const noexcept { return (q.prompt.size() + q.max_new - 1 + P() - 1) / P(); }

  void hash_pages(queued& q) const {
    q.hashes.clear();
    std::uint64_t h = detail::mix(0x5157ull, q.ns.value());
    const std::size_t full = q.prompt.size() / P();
    for (std::size_t i = 0; i < full; ++i) {
      for (std::size_t k = 0; k < P(); ++k) h = detail::mix(h, std::uint32_t(q.prompt[i * P() + k].value()));
      q.hashes.push_back(h ? h : 1);
    }
  }

  void enqueue(std::size_t id, double arrival, kvtier::namespace_id ns, const std::vector<kvtier::token_id>& prompt, std::size_t max_new) {
    queued q{id, arrival, ns, prompt, {}, std::max<std::size_t>(1, max_new)};
    hash_pages(q);
    queue_.push_back(std::move(q));
    dirty_ = true;
  }

  std::span<const kvtier::token_id> looked_up(const queued& q) const { return std::span(q.prompt).first(q.prompt.size() - 1); }

  void land(double now) {
    while (!landings_.empty() && landings_.top().at <= now) {
      const landing l = landings_.top();
      landings_.pop();
      cache_.land(l.page, l.tier);
      in_flight_at_.erase(flight_key(l.page, l.tier));
    }
  }
  static std::uint64_t flight_key(kvtier::page_id p, kvtier::tier_id t) noexcept { return (std::uint64_t(p.value()) << 2) | std::uint64_t(t); }

  // Leading pages ready on device or host; the first missing page's content is the delay-hit group.
  std::uint64_t group_of(const queued& q, const kvtier::match_result& m) const {
    std::size_t k = 0;
    while (k < m.sources.size() && m.sources[k] != kvtier::page_source::storage) ++k;
    const std::size_t full = looked_up(q).size() / P();
    return k < full ? q.hashes[k] : 0;
  }

  // Slow tier → host fetch of m's storage pages (host copies in flight); returns when they land.
  double fetch(const kvtier::match_result& m, double now, std::size_t& pages, const queued& q, sim_counters& c) {
    double ready = now;
    std::size_t issued = 0;
    for (std::size_t i = 0; i < m.size(); ++i) {
      if (m.sources[i] != kvtier::page_source::storage) continue;
      const kvtier::page_id p = m.pages[i];
      const auto r = cache_.index().residency(p);
      if (r && r->in_flight.has(kvtier::tier_id::host)) {
        ready = std::max(ready, in_flight_at_[flight_key(p, kvtier::tier_id::host)]);
        continue;
      }
      const std::uint64_t content = cache_.disk_content(p);
      if (content != q.hashes[i]) ++c.content_mismatches;
      ++c.pages_read;
      if (!cache_.backup_to_host(p, content, true)) break;  // no host room: the rest is computed
      fetch_pages_.push_back(p);
      ++issued;
    }
    if (issued) {
      const double start = std::max(now, fetch_free_);
      fetch_free_ = start + cost_.fetch_s(issued);
      ready = std::max(ready, fetch_free_);
      for (kvtier::page_id p : fetch_pages_) {
        landings_.push({fetch_free_, p, kvtier::tier_id::host});
        in_flight_at_[flight_key(p, kvtier::tier_id::host)] = fetch_free_;
      }
    }
    fetch_pages_.clear();
    pages += issued;
    return ready;
  }

  // CachedAttention: protect the first queued prefixes, fetch their slow pages while the link is idle.
  void look_ahead(double now, sim_counters& c) {
    if (!o_.prefetch_aware || !cache_.caching()) return;
    if (dirty_) {
      for (auto& q : queue_)
        if (q.expected) cache_.index().unexpect(q.ns, looked_up(q)), q.expected = false;
      for (std::size_t i = 0; i < std::min(queue_.size(), o_.prefetch_depth); ++i)
        cache_.index().expect(queue_[i].ns, looked_up(queue_[i])), queue_[i].expected = true;
      dirty_ = false;
    }
    if (!cache_.has_disk() || fetch_free_ > now) return;
    for (std::size_t i = 0; i < std::min(queue_.size(), o_.prefetch_depth) && fetch_free_ <= now; ++i) {
      queued& q = queue_[i];
      if (q.prefetched) continue;
      q.prefetched = true;
      cache_.index().match(q.ns, looked_up(q), peek_, kvtier::match_options{false, false, 0});
      if (peek_.storage_pages == 0) continue;
      std::size_t pages = 0;
      (void)fetch(peek_, now, pages, q, c);
      c.pages_prefetched += pages;
    }
  }

  void admit(double now, sim_result& out) {
    auto& c = out.counters;
    // Requests whose fetch landed go on to load.
    bool refused = false;
    for (std::size_t i = 0; i < active_.size();) {
      active_request& a = *active_[i];
      if (a.ph != phase::fetching || a.ready_at > now) {
        ++i;
        continue;
      }
      if (!load_and_reserve(a, now, out)) {
        ++c.deferred_admissions;
        refused = true;
        back_to_queue(i);
        continue;
      }
      ++i;
    }
    // Only fetching requests left, and one of them found no room: their locked prefixes fill the
    // device and nothing running will free it. All go back to the queue (their fetched pages stay
    // on host), so that the next round places them one at a time.
    // This round then admits one request only (the others would lock the device again).
    std::size_t room = o_.max_batch;
    if (refused && std::all_of(active_.begin(), active_.end(), [](const auto& a) { return a->ph == phase::fetching; })) {
      while (!active_.empty()) back_to_queue(active_.size() - 1);
      room = 1;
    }
    look_ahead(now, c);
    if (queue_.empty() || active_.size() >= o_.max_batch) return;
    const std::size_t n = std::min(queue_.size(), o_.policy_window);
    serving::in_flight f;
    f.now_s = now;
    f.running = active_.size();
    for (const auto& a : active_) {
      f.prefilling += a->ph == phase::prefill;
      f.decoding += a->ph == phase::decode;
      f.fetching += a->ph == phase::fetching;
      // Loads not landed yet (the server: a request whose last layer is not ready).
      if (a->load_pending && std::max(a->load_start + a->load_dur, a->other_ready) > now) f.load_pages += a->m.size() - a->m.device_pages;
    }
    f.token_budget = o_.token_budget;
    f.free_device_pages = cache_.device_free();
    picks_.clear();
    cands_.clear();
    for (std::size_t i = 0; i < n; ++i) {
      queued& qi = queue_[i];
      if (qi.peeked_at != cache_.version()) {  // the cache changed since this request was last looked at
        candidate& x = qi.peek;
        x = candidate{};
        x.q = serving::queued_request{qi.id, qi.arrival_s, qi.prompt.size(), {}};
        if (Policy::uses_cached_prefix && cache_.caching()) {
          cache_.index().match(qi.ns, looked_up(qi), peek_, kvtier::match_options{false, false, 0});
          x.q.cached_tokens[0] = peek_.device_pages * P();
          x.q.cached_tokens[1] = peek_.host_pages * P();
          x.q.cached_tokens[2] = peek_.storage_pages * P();
          x.group = group_of(qi, peek_);
          x.q.missing_prefix = x.group;
          x.load_s = cost_.load_s(peek_.host_pages + peek_.storage_pages);
          x.fetch_s = cost_.fetch_s(peek_.storage_pages);
          const std::size_t cached = peek_.size() * P();
          x.compute_s = cost_.prefill_s(x.q.prompt_tokens - cached, cached);
        }
        qi.peeked_at = cache_.version();
      }
      cands_.push_back(qi.peek);
    }
    if constexpr (detail::batch_selecting<Policy>) {
      pending_.clear();
      double compute_ahead = 0;
      for (const auto& a : active_) {
        if (a->ph == phase::decode) continue;
        if (a->group) pending_.push_back(a->group);
        compute_ahead += cost_.prefill_s(a->q.prompt.size() - a->next, a->next);
      }
      batch_state s{f, pending_, std::max(0.0, h2d_free_ - now), compute_ahead, o_.max_batch - active_.size()};
      policy_.select(cands_, s, picks_);
      for (std::size_t i = 0; i < n; ++i) {  // left out although a slot was free: deferred as a delay hit
        if (cands_[i].group == 0 || picks_.size() >= s.slots) continue;
        if (std::find(picks_.begin(), picks_.end(), i) == picks_.end()) ++c.delay_hit_deferrals;
      }
    } else {  // serving::server's form: one priority per request, asked again before each admission
      pending_.clear();
      for (const auto& a : active_)
        if (a->ph != phase::decode && a->group) pending_.push_back(a->group);
      f.pending_prefixes = pending_;
      ranks_.clear();
      for (std::size_t i = 0; i < n; ++i) ranks_.push_back({policy_.priority(cands_[i].q, f), queue_[i].arrival_s, i});
      std::stable_sort(ranks_.begin(), ranks_.end(), [](const rank& a, const rank& b) {
        return a.priority != b.priority ? a.priority < b.priority : a.arrival < b.arrival;
      });
      for (const rank& r : ranks_) picks_.push_back(r.index);
    }
    taken_.clear();
    for (std::size_t i : picks_) {
      if (active_.size() >= room) break;
      if constexpr (!detail::batch_selecting<Policy>) {  // not_now with what this round admitted: stays queued
        f.pending_prefixes = pending_;
        if (policy_.priority(cands_[i].q, f) == serving::not_now) {
          ++c.delay_hit_deferrals;
          continue;
        }
      }
      if (queue_[i].refused_at == cache_.version()) {  // refused with the cache as it is: still no room
        ++c.deferred_admissions;
        break;
      }
      auto a = std::make_unique<active_request>();
      a->q = std::move(queue_[i]);
      if (a->q.expected) cache_.index().unexpect(a->q.ns, looked_up(a->q)), a->q.expected = false;
      sim_record& rec = out.records[a->q.id];
      rec = sim_record{};
      rec.id = a->q.id;
      rec.arrival_s = a->q.arrival_s;
      rec.admitted_s = now;
      rec.prompt_tokens = a->q.prompt.size();
      if (cache_.caching()) {
        cache_.index().match(a->q.ns, looked_up(a->q), a->m, kvtier::match_options{true, true, 0});
        a->group = group_of(a->q, a->m);
        if constexpr (!detail::batch_selecting<Policy>)
          if (a->group) pending_.push_back(a->group);
        if (a->m.storage_pages > 0) {
          std::size_t pages = 0;
          a->ready_at = fetch(a->m, now, pages, a->q, out.counters);
          rec.fetched_pages = pages;
          out.counters.pages_fetched += pages;
          a->ph = phase::fetching;
          active_.push_back(std::move(a));
          taken_.push_back(i);
          continue;
        }
      }
      if (!load_and_reserve(*a, now, out)) {
        ++c.deferred_admissions;
        release_lookup(*a);
        queue_[i] = std::move(a->q);
        queue_[i].refused_at = cache_.version();
        break;
      }
      active_.push_back(std::move(a));
      taken_.push_back(i);
    }
    std::sort(taken_.begin(), taken_.end());
    for (auto it = taken_.rbegin(); it != taken_.rend(); ++it) queue_.erase(queue_.begin() + std::ptrdiff_t(*it));
    if (!taken_.empty()) dirty_ = true;
  }

  void back_to_queue(std::size_t i) {
    active_request& a = *active_[i];
    release_lookup(a);
    a.q.prefetched = false;
    queue_.push_front(std::move(a.q));
    dirty_ = true;
    active_.erase(active_.begin() + std::ptrdiff_t(i));
  }

  void release_lookup(active_request& a) {
    cache_.unlocked();  // what it held may be evicted now
    if (a.m.locked) (void)cache_.index().unlock(a.m.pages);
    a.m.clear();
  }

  // Device slots for the whole request; loads of the host-held prefix on the H2D link.
  bool load_and_reserve(active_request& a, double now, sim_result& out) {
    auto& c = out.counters;
    sim_record& rec = out.records[a.q.id];
    // The usable prefix: pages with a device or host copy (a fetch cut short leaves the rest).
    std::size_t usable = 0, on_device = 0;
    for (; usable < a.m.size(); ++usable) {
      const auto r = cache_.index().residency(a.m.pages[usable]);
      if (!r || !(r->tiers.has(kvtier::tier_id::device) || r->ready(kvtier::tier_id::host))) break;
      on_device += r->tiers.has(kvtier::tier_id::device);
    }
    if (usable < a.m.size()) {
      if (a.m.locked) (void)cache_.index().unlock(std::span(a.m.pages).subspan(usable));
      a.m.pages.resize(usable);
      a.m.sources.resize(usable);
    }
    const std::size_t total = pages_for(a.q), cached = usable;
    a.table.clear();
    slots_.clear();
    if (!cache_.allocate_device(total - on_device, slots_)) return false;
    a.table.resize(total);
    a.owned.assign(total, false);
    std::size_t s = 0, issued = 0;
    a.other_ready = now;
    for (std::size_t i = 0; i < cached; ++i) {
      const kvtier::page_id p = a.m.pages[i];
      const auto r = cache_.index().residency(p);
      ++c.pages_read;
      if (r->tiers.has(kvtier::tier_id::device)) {  // ready, or being loaded by another request
        a.table[i] = r->device.value();
        a.owned[i] = true;
        if (r->in_flight.has(kvtier::tier_id::device)) a.other_ready = std::max(a.other_ready, in_flight_at_[flight_key(p, kvtier::tier_id::device)]);
        if (cache_.device_content(r->device.value()) != a.q.hashes[i]) ++c.content_mismatches;
        continue;
      }
      const std::uint32_t d = slots_[s++];
      const std::uint64_t content = cache_.host_content(r->host.value());
      if (content != a.q.hashes[i]) ++c.content_mismatches;
      cache_.device_content(d) = content;
      (void)cache_.index().place_copy(p, kvtier::device_slot{d}, true);
      a.table[i] = d;
      a.owned[i] = true;
      load_list_.push_back(p);
      ++issued;
    }
    for (std::size_t i = cached; i < total; ++i) a.table[i] = slots_[s++];
    while (s < slots_.size()) cache_.free_device(slots_[s++]);  // pages another request is loading
    if (issued) {
      cache_.changed();
      a.load_start = std::max(now, h2d_free_);
      a.load_dur = cost_.load_s(issued);
      h2d_free_ = a.load_start + a.load_dur;
      for (kvtier::page_id p : load_list_) {
        landings_.push({h2d_free_, p, kvtier::tier_id::device});
        in_flight_at_[flight_key(p, kvtier::tier_id::device)] = h2d_free_;
      }
      c.pages_loaded += issued;
      step_loaded_ += issued;
    } else {
      a.load_start = now, a.load_dur = 0;
    }
    load_list_.clear();
    rec.loaded_pages = issued;
    a.load_pending = issued > 0 || a.other_ready > now;
    a.cached = cached;
    a.committed = cached;
    a.next = cached * P();
    rec.reused_tokens = a.next;
    rec.computed_tokens = a.q.prompt.size() - a.next;
    a.ph = phase::prefill;
    return true;
  }

  // Commits pages [from, to) of seq (whole pages) from the request's table; write-through to host.
  void commit(active_request& a, const std::vector<kvtier::token_id>& seq, const std::vector<std::uint64_t>& hashes, std::size_t to, sim_counters& c) {
    const std::size_t from = a.committed;
    if (!cache_.caching() || to <= from) return;
    a.committed = to;
    for (std::size_t i = from; i < to; ++i)
      if (!a.owned[i]) cache_.device_content(a.table[i]) = hashes[i];
    path_.clear();
    cache_.changed();
    (void)cache_.index().insert(a.q.ns, std::span(seq).first(to * P()),
                                [&](std::size_t i) { return kvtier::on_device(kvtier::device_slot{a.table[i]}); },
                                kvtier::insert_options{true, 0}, &path_);
    std::size_t backups = 0;
    for (std::size_t i = from; i < to; ++i) {
      if (a.owned[i]) continue;
      const auto r = cache_.index().residency(path_[i]);
      if (r->tiers.has(kvtier::tier_id::device) && r->device.value() == a.table[i]) {
        a.owned[i] = true;
        ++c.pages_computed;
        if (!r->tiers.has(kvtier::tier_id::host) && cache_.backup_to_host(path_[i], hashes[i])) ++backups;
      } else {  // computed meanwhile by another request: ours is a duplicate
        ++c.duplicate_pages;
        ++c.pages_computed;
      }
    }
    a.committed_path.insert(a.committed_path.end(), path_.begin(), path_.end());
    if (backups) d2h_free_ = std::max(d2h_free_, commit_time_) + cost_.backup_s(backups);
  }

  void finish(active_request& a, sim_record& rec, double t, const serving::workload& w, sim_counters& c) {
    // The decode positions' whole pages, then the history a follow-up extends.
    std::vector<kvtier::token_id> seq = a.q.prompt;
    for (std::size_t j = 0; j < a.out_tokens; ++j) seq.push_back(output_token(a.q.id, j));
    if (cache_.caching()) {
      const std::size_t kv = a.q.prompt.size() + a.out_tokens - 1;  // positions holding KV
      const std::size_t full = std::min(kv / P(), a.table.size());
      if (full > a.q.prompt.size() / P()) {
        queued tmp{a.q.id, 0, a.q.ns, std::vector<kvtier::token_id>(seq.begin(), seq.begin() + std::ptrdiff_t(full * P())), {}, 1};
        hash_pages(tmp);
        commit(a, tmp.prompt, tmp.hashes, full, c);
      }
      (void)cache_.index().unlock(a.committed_path);
      release_lookup(a);
    }
    for (std::size_t i = 0; i < a.table.size(); ++i)
      if (!a.owned[i]) cache_.free_device(a.table[i]);
    rec.finish_s = t;
    rec.output_tokens = a.out_tokens;
    rec.served++;
    if (const std::size_t ch = children_[a.q.id]; ch != serving::no_parent) {
      follow_up f{t + w.requests[ch].arrival_s, ch, std::move(seq)};
      f.prompt.insert(f.prompt.end(), w.requests[ch].prompt.begin(), w.requests[ch].prompt.end());
      follow_ups_.push(std::move(f));
    }
    done_.push_back(a.q.id);
    a.q.max_new = 0;
  }

  kvtier::token_id output_token(std::size_t id, std::size_t j) const noexcept {
    return kvtier::token_id{std::int32_t(1 + detail::mix(id * 0x100000001b3ull, j) % (vocab_ - 1))};
  }

  // Whether a's prefix is on the device by `now` (nothing loading, or its loads landed).
  static bool is_ready(const active_request& a, double now) noexcept {
    return !a.load_pending || std::max(a.load_start + a.load_dur, a.other_ready) <= now;
  }

  // One step from `now`; returns its duration (0: nothing to run).
  double step(double now, sim_result& out, const serving::workload& w) {
    auto& c = out.counters;
    std::size_t budget = o_.token_budget;
    decoding_.clear();
    prefilling_.clear();
    for (auto& a : active_) {
      if (a->ph == phase::decode && budget > 0) decoding_.push_back(a.get()), --budget;
      if (a->ph == phase::prefill) prefilling_.push_back(a.get());
    }
    bool bubble = false;
    if constexpr (detail::batch_selecting<Policy>) bubble = policy_.fill_bubbles();
    if (bubble)  // chunks whose layers are ready first; a chunk that would wait runs after them
      std::stable_partition(prefilling_.begin(), prefilling_.end(), [&](const active_request* a) { return is_ready(*a, now); });
    double t = now;
    bool stalled = false;
    std::size_t sequences = 0;
    // The decode call: after the prefills, or first when the engine's steps are load-aware.
    auto run_decode = [&] {
      if (decoding_.empty()) return;
      std::size_t ctx = 0;
      for (active_request* a : decoding_) ctx += a->q.prompt.size() + a->out_tokens;
      t += cost_.decode_s(decoding_.size(), ctx);
      sequences += decoding_.size();
      for (active_request* a : decoding_) {
        ++a->out_tokens;
        if (a->out_tokens >= a->q.max_new) finish(*a, out.records[a->q.id], t, w, c);
      }
    };
    const bool load_aware = cost_.load_aware;
    if (load_aware) run_decode();
    // Load-aware: a chunk whose prefix has not landed by t waits while the step has other work.
    bool other_work = !decoding_.empty();
    if (load_aware && !other_work)
      for (const active_request* a : prefilling_) other_work |= is_ready(*a, t);
    picked_chunks_.clear();
    for (active_request* ap : prefilling_) {  // the chunks under the budget, in order
      active_request& a = *ap;
      if (budget == 0) break;
      if (load_aware && other_work && !is_ready(a, t)) {
        ++c.load_deferrals;
        continue;
      }
      const std::size_t N = a.q.prompt.size();
      std::size_t n = std::min({N - a.next, o_.chunk_tokens, budget});
      if (a.next + n < N) n = n / P() * P();
      if (n == 0) {
        if (bubble) continue;
        break;
      }
      budget -= n;
      picked_chunks_.push_back({&a, n});
    }
    // Calls of chunks [b, e) from t: layer l of the call starts once each loading chunk's layer l
    // landed (waits counted per chunk, in order); one call per chunk unless the engine batches.
    auto run_call = [&](std::size_t b, std::size_t e) {
      std::size_t new_tokens = 0;
      double pairs = 0;
      bool loading = false;
      for (std::size_t i = b; i < e; ++i) {
        const auto [a, n] = picked_chunks_[i];
        new_tokens += n;
        pairs += double(n) * (double(a->next) + double(n) / 2);
        loading |= a->load_pending;
      }
      // One chunk: its own fit (the same formula); several: one call. Layer l starts once each
      // loading chunk's layer l landed (the server's hook: each loading chunk in turn).
      const double compute = e - b == 1 ? cost_.prefill_s(new_tokens, picked_chunks_[b].first->next)
                                        : cost_.prefill_call_s(new_tokens, pairs);
      double end = t + compute;
      if (loading) {
        const double per = compute / double(cost_.layers);
        double x = t;
        for (std::size_t l = 0; l < cost_.layers; ++l) {
          for (std::size_t i = b; i < e; ++i) {
            const active_request& a = *picked_chunks_[i].first;
            if (!a.load_pending) continue;
            const double ready = std::max(a.load_start + a.load_dur * double(l + 1) / double(cost_.layers), a.other_ready);
            if (ready <= x) continue;
            out.records[a.q.id].load_wait_s += ready - x;
            c.load_wait_s += ready - x;
            stalled = true;
            x = ready;
          }
          x += per;
        }
        end = x;
      }
      t = end;
      for (std::size_t i = b; i < e; ++i) {
        auto [ap, n] = picked_chunks_[i];
        active_request& a = *ap;
        sim_record& rec = out.records[a.q.id];
        a.load_pending = false;
        a.next += n;
        ++sequences;
        if (a.next < a.q.prompt.size()) continue;
        commit_time_ = t;
        commit(a, a.q.prompt, a.q.hashes, a.q.prompt.size() / P(), c);
        dirty_ = true;
        a.group = 0;
        a.out_tokens = 1;
        rec.first_token_s = t;
        a.ph = phase::decode;
        if (a.out_tokens >= a.q.max_new) finish(a, rec, t, w, c);
      }
    };
    if (!cost_.batched_prefill) {
      for (std::size_t i = 0; i < picked_chunks_.size(); ++i) run_call(i, i + 1);
    } else if (!picked_chunks_.empty()) {
      std::size_t ready = picked_chunks_.size();
      if (bubble) {  // the chunks in front (stable_partition above) whose loads landed by now
        ready = 0;
        while (ready < picked_chunks_.size() && is_ready(*picked_chunks_[ready].first, now)) ++ready;
      }
      if (ready > 0) run_call(0, ready);
      if (ready < picked_chunks_.size()) run_call(ready, picked_chunks_.size());
    }
    if (!load_aware) run_decode();
    std::erase_if(active_, [](const std::unique_ptr<active_request>& a) { return a->q.max_new == 0; });
    c.stall_steps += stalled;
    if (sequences > 0) {  // the host's work around the calls (sampling, commits, admission), after them
      const double o = cost_.step_overhead_s(sequences, step_loaded_);
      t += o;
      c.overhead_s += o;
      step_loaded_ = 0;
    }
    return t - now;
  }

  struct rank {
    double priority, arrival;
    std::size_t index;
  };

  cost_model cost_;
  sim_cache cache_;
  sim_options o_;
  Policy policy_;
  std::size_t vocab_ = 32000;
  std::deque<queued> queue_;
  std::vector<std::unique_ptr<active_request>> active_;
  std::priority_queue<follow_up, std::vector<follow_up>, std::greater<>> follow_ups_;
  std::priority_queue<landing, std::vector<landing>, std::greater<>> landings_;
  std::unordered_map<std::uint64_t, double> in_flight_at_;
  std::vector<std::size_t> children_, picks_, taken_, done_;
  std::vector<candidate> cands_;
  std::vector<rank> ranks_;
  std::vector<std::uint64_t> pending_;
  std::vector<std::uint32_t> slots_;
  std::vector<kvtier::page_id> load_list_, fetch_pages_, path_;
  std::vector<active_request*> decoding_, prefilling_;
  std::vector<std::pair<active_request*, std::size_t>> picked_chunks_;  // this step's prefill chunks: request, tokens
  kvtier::match_result peek_;
  double h2d_free_ = 0, d2h_free_ = 0, fetch_free_ = 0, commit_time_ = 0;
  std::size_t step_loaded_ = 0;  // pages whose load this step's admission issued
  bool dirty_ = false;
};

}  // namespace kvtier_engine::scheduling
