#pragma once
// IO-aware request scheduling (Strata) over the serving loop's scheduling_policy concept.
//
// io_aware<Base> ranks queued requests as Base does (serving::fcfs or serving::longest_prefix) and
// adds any subset of Strata's three remedies:
//  - delay_hit: a request whose first missing page (the first page of its prompt not ready on the
//    device or host) is also the first missing page of a request already admitted (its KV still
//    being computed or fetched) or of one chosen earlier this round is deferred: once the first
//    one commits, the later one finds those pages cached (a hit, not duplicate compute);
//  - balance: requests are taken greedily so that the host → device load time queued on the link
//    and the prefill compute admitted stay close (cost model), looking at most `lookahead`
//    requests past the base order's head (bounded unfairness);
//  - bubble: when the loads admitted outrun the compute to hide them, requests with no load are
//    taken first, and in a step the prefill chunks whose layers are ready run before a chunk that
//    would wait (the simulator and any loop that orders chunks read fill_bubbles()).
// Scheduler-aware prefetch and eviction (CachedAttention) is a property of the loop and the cache
// (queued requests' slow-tier pages fetched ahead, their prefixes protected with look_ahead); the
// simulator switches it with its own option so that it composes with every policy here.
//
// Two entry points:
//  - select(candidates, state, out): the batch-level choice (every remedy), which needs what
//    serving::queued_request does not carry: each request's first missing page and the groups of
//    the requests already admitted. The simulator calls it.
//  - priority(q, f): serving's scheduling_policy (one number per request, lower first), what the
//    real server calls: balance and bubble from the cached prefix by tier and the pages loading
//    (in_flight::load_pages); delay_hit answers serving::not_now when the request's missing prefix
//    (queued_request::missing_prefix) is pending (in_flight::pending_prefixes: admitted, not yet
//    committed, or admitted earlier this round), so the server leaves it queued.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier_engine/scheduling/cost_model.hpp"
#include "kvtier_engine/serving/policy.hpp"

namespace kvtier_engine::scheduling {

// A queued request as the batch-level choice sees it.
struct candidate {
  serving::queued_request q;    // arrival, prompt tokens, cached tokens by tier (device, host, disk, remote)
  std::uint64_t group = 0;      // content key of its first missing page; 0: nothing missing (or no whole page)
  double load_s = 0;            // host → device load of its host-only prefix (cost model)
  double fetch_s = 0;           // slow tier → host of its slow-only prefix
  double compute_s = 0;         // prefill of its uncached part (cost model)
};

// What is admitted and not yet run when a round chooses.
struct batch_state {
  serving::in_flight f;
  std::span<const std::uint64_t> pending_groups;  // first missing pages of admitted requests not yet committed
  double load_ahead_s = 0;      // host → device link time queued and not finished
  double compute_ahead_s = 0;   // prefill compute admitted and not yet run
  std::size_t slots = 0;        // requests this round may admit
};

struct features {
  bool delay_hit = false;
  bool balance = false;
  bool bubble = false;
};

template <serving::scheduling_policy Base = serving::fcfs>
class io_aware {
 public:
  using kvtier_serving_policy = serving::policy_tag;
  static constexpr bool uses_cached_prefix = true;

  io_aware(features use, cost_model cost, Base base = {}, std::size_t lookahead = 8)
      : use_(use), cost_(std::move(cost)), base_(std::move(base)), lookahead_(std::max<std::size_t>(1, lookahead)) {
    name_ = std::string(base_.name());
    if (use_.delay_hit) name_ += "+delay-hit";
    if (use_.balance) name_ += "+balance";
    if (use_.bubble) name_ += "+bubble";
  }

  std::string_view name() const noexcept { return name_; }
  const features& uses() const noexcept { return use_; }
  bool fill_bubbles() const noexcept { return use_.bubble; }

  // serving's per-request form: Base's priority, after a class offset for balance and bubble.
  double priority(const serving::queued_request& q, const serving::in_flight& f) const noexcept {
    if (use_.delay_hit && f.pending(q.missing_prefix)) return serving::not_now;
    const double base = base_.priority(q, f);
    const double load = load_of(q);
    const double compute = compute_of(q);
    const bool link_busy = f.load_pages > 0;
    double cls = 0;
    if (use_.bubble && link_busy && load > 0) cls += 2;  // loads queued: no-load prefills fill the bubble first
    if (use_.balance) {
      // Loads queued: prefer compute-heavy requests (their compute hides the link); link idle:
      // prefer load-heavy ones (their loads hide under the prefills running).
      const bool load_heavy = load > compute;
      if (link_busy == load_heavy) cls += 1;
    }
    return cls * class_gap + base;
  }

  // The batch-level choice: indexes into `c` (in admission order) appended to `out`, at most
  // s.slots of them. `c` is in arrival order; the requests left out stay queued.
  void select(std::span<const candidate> c, const batch_state& s, std::vector<std::size_t>& out) const {
    order_.resize(c.size());
    for (std::size_t i = 0; i < c.size(); ++i) order_[i] = i;
    std::stable_sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) {
      const double pa = base_.priority(c[a].q, s.f), pb = base_.priority(c[b].q, s.f);
      return pa != pb ? pa < pb : c[a].q.arrival_s < c[b].q.arrival_s;
    });
    chosen_groups_.clear();
    eligible_.clear();
    for (std::size_t i : order_) {
      const std::uint64_t g = c[i].group;
      if (use_.delay_hit && g != 0) {
        const bool pending = std::find(s.pending_groups.begin(), s.pending_groups.end(), g) != s.pending_groups.end();
        if (pending || std::find(chosen_groups_.begin(), chosen_groups_.end(), g) != chosen_groups_.end()) continue;
        chosen_groups_.push_back(g);  // the first of its group in base order claims it
      }
      eligible_.push_back(i);
    }
    double load = s.load_ahead_s, compute = s.compute_ahead_s;
    const std::size_t first = out.size();
    while (out.size() - first < s.slots && !eligible_.empty()) {
      std::size_t pick = 0;
      const std::size_t window = std::min(eligible_.size(), lookahead_);
      if (use_.bubble && load > compute) {  // a stall is coming: the first no-load request in the window
        for (std::size_t k = 0; k < window; ++k)
          if (c[eligible_[k]].load_s == 0 && c[eligible_[k]].fetch_s == 0) {
            pick = k;
            break;
          }
      } else if (use_.balance) {  // the request that leaves load and compute closest
        double best = 0;
        for (std::size_t k = 0; k < window; ++k) {
          const candidate& x = c[eligible_[k]];
          const double gap = std::fabs((load + x.load_s) - (compute + x.compute_s));
          if (k == 0 || gap < best) best = gap, pick = k;
        }
      }
      const candidate& x = c[eligible_[pick]];
      load += x.load_s;
      compute += x.compute_s;
      out.push_back(eligible_[pick]);
      eligible_.erase(eligible_.begin() + std::ptrdiff_t(pick));
    }
  }

 private:
  static constexpr double class_gap = 1e12;  // above any arrival time or cached-token count
  double load_of(const serving::queued_request& q) const noexcept {
    return cost_.load_s((q.cached_tokens[1] + q.cached_tokens[2] + q.cached_tokens[3]) / cost_.page_tokens);
  }
  double compute_of(const serving::queued_request& q) const noexcept {
    const std::size_t cached = std::min(q.cached_total(), q.prompt_tokens);
    return cost_.prefill_s(q.prompt_tokens - cached, cached);
  }

  features use_;
  cost_model cost_;
  Base base_;
  std::size_t lookahead_;
  std::string name_;
  mutable std::vector<std::size_t> order_, eligible_;
  mutable std::vector<std::uint64_t> chosen_groups_;
};

static_assert(serving::scheduling_policy<io_aware<serving::fcfs>>);
static_assert(serving::scheduling_policy<io_aware<serving::longest_prefix>>);

// A policy as serving::server runs it: only scheduling_policy's priority (and not_now), no
// batch-level select and no chunk reordering, so that the simulator runs what the engine runs
// (kvtier-simulate --policy-form priority; scripts/scheduling-validate uses it).
template <serving::scheduling_policy P>
struct server_form {
  using kvtier_serving_policy = serving::policy_tag;
  static constexpr bool uses_cached_prefix = P::uses_cached_prefix;
  P p;
  std::string_view name() const noexcept { return p.name(); }
  double priority(const serving::queued_request& q, const serving::in_flight& f) const { return p.priority(q, f); }
};

}  // namespace kvtier_engine::scheduling
