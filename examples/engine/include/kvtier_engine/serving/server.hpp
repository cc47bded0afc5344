#pragma once
// server: continuous batching over kvtier's lifecycle, one step at a time (what vLLM and SGLang
// schedulers do), on any compute_backend and any hierarchical cache.
//
// Each step:
//   1. arrivals (and chat follow-ups whose think time passed) join the queue;
//   2. admission, in the scheduling policy's order, while fewer than max_batch run: lookup (the
//      cached prefix, locked) → prefetch (slow tier → host); the next step (or at once when nothing
//      was fetched) load (host → device, layer by layer) and allocate device slots for the rest of
//      the prompt and every decode position (reserved up front: a running request never runs out).
//      A request that does not fit waits in the queue;
//   3. one batch under the token budget: a decode token for every request past its prefill (run
//      first, so that the loads admission just issued move while it computes), then chunked
//      prefills (whole pages, but the prompt's last chunk) in admission order with what is left. A
//      first chunk over a loaded prefix waits for layer l just before reading it (the stall the
//      metrics count); with server_options::load_aware (default) a chunk whose prefix has not fully
//      landed is left for a later step when this step has other work (decodes, or a chunk whose
//      prefix is in), so the GPU computes instead of waiting (run_counters::load_deferrals); a
//      finished prefill commits its whole pages and samples the first token.
//      With a backend that has prefill_batch (batched_prefill_backend) the step's chunks run as ONE
//      call (one pass over the weights for all of them, as vLLM and SGLang batch a step's prefills):
//      before layer l it waits for layer l of every chunk whose prefix is still loading (each wait
//      counted for the request that waited), so a loading prefix that load-aware steps let in (or
//      load_aware off) delays the whole batch's layer l. Without it, or with
//      server_options::batch_prefill off, one prefill call per chunk;
//   4. decode pages are committed as they fill; a finished request frees its uncommitted slots and
//      releases its lease; cache.poll().
// With caching off (the no-prefix-caching mode) the same steps run with no lookup and no commit.
// Time is the wall clock; with nothing to do the server sleeps until the next arrival.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/index/residency.hpp"
#include "kvtier_engine/backend.hpp"
#include "kvtier_engine/sampler.hpp"
#include "kvtier_engine/serving/cost_model.hpp"
#include "kvtier_engine/serving/metrics.hpp"
#include "kvtier_engine/serving/policy.hpp"
#include "kvtier_engine/serving/request.hpp"

namespace kvtier_engine::serving {

struct server_options {
  std::size_t token_budget = 512;   // tokens computed per step (decodes + prefill chunks)
  std::size_t chunk_tokens = 256;   // longest prefill chunk; a multiple of the page size
  std::size_t max_batch = 32;       // requests admitted at once
  std::size_t policy_window = 64;   // queued requests a policy ranks per admission round
  bool caching = true;              // false: no lookup, no commit
  bool batch_prefill = true;        // a backend with prefill_batch: one call per step for all prefill chunks
  bool load_aware = true;           // a chunk whose prefix is still loading waits for a step with nothing else to run
};

// What a run returns.
struct run_result {
  std::vector<request_record> records;  // by request id
  run_counters counters;
  cost_samples samples;
};

template <compute_backend Backend, class Cache, scheduling_policy Policy>
class server {
 public:
  static constexpr std::size_t page_tokens = Cache::page_size_type::static_tokens;
  using lease_type = typename Cache::lease_type;

  // `m` is the model as the backend runs it (its seq_len bounds every request). Throws config_error.
  template <class... Slow>
  server(const model_config& m, const model_weights& w, typename Cache::config cfg, backend_options bo, server_options so,
         Policy policy, std::unique_ptr<Slow>... slow)
      : cfg_(m),
        so_(so),
        policy_(std::move(policy)),
        cache_(cfg, std::move(slow)...),
        backend_(cfg_, w, kv_pool{cache_.device_view(), page_tokens, cfg.device_pages}, bo),
        device_pages_(cfg.device_pages),
        logits_(cfg_.vocab) {
    if (so_.chunk_tokens == 0 || so_.chunk_tokens % page_tokens != 0)
      throw kvtier::config_error("kvtier-serve: the prefill chunk must be a whole number of pages");
    if (so_.token_budget < page_tokens || so_.max_batch == 0)
      throw kvtier::config_error("kvtier-serve: the token budget must hold a page, and max-batch must be at least 1");
  }

  Cache& cache() noexcept { return cache_; }
  Backend& backend() noexcept { return backend_; }
  const Policy& policy() const noexcept { return policy_; }

  // Serves every request of `w` once. Errors: what the backend or the cache reports;
  // capacity_exhausted when a request cannot fit the device pool even with nothing else running.
  kvtier::result<run_result> run(const workload& w) {
    run_result out;
    out.records.resize(w.requests.size());
    out.counters.page_bytes = cache_.configuration().shape.bytes_per_page(page_tokens);
    const auto before = cache_.stats();
    children_.assign(w.requests.size(), no_parent);
    for (const auto& r : w.requests) {
      if (r.parent != no_parent) children_[r.parent] = r.id;
      if (r.max_new_tokens == 0) return kvtier::make_error(kvtier::errc::invalid_argument);
    }
    // Arrivals in time order (follow-ups join when their parent finishes).
    std::vector<std::size_t> order;
    for (const auto& r : w.requests)
      if (r.parent == no_parent) order.push_back(r.id);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return w.requests[a].arrival_s < w.requests[b].arrival_s; });
    std::deque<std::size_t> arrivals(order.begin(), order.end());
    std::vector<pending_child> follow_ups;
    queue_.clear();
    active_.clear();
    t0_ = clock::now();
    std::size_t finished = 0;
    double first_arrival = -1, last_finish = 0;

    while (finished < w.requests.size()) {
      const double now = elapsed();
      while (!arrivals.empty() && w.requests[arrivals.front()].arrival_s <= now) {
        const auto& r = w.requests[arrivals.front()];
        queue_.push_back(queued{r.id, r.arrival_s, r.ns, r.prompt, r.max_new_tokens});
        arrivals.pop_front();
      }
      for (auto it = follow_ups.begin(); it != follow_ups.end();) {
        if (it->arrival_s <= now) {
          queue_.push_back(std::move(it->q));
          it = follow_ups.erase(it);
        } else {
          ++it;
        }
      }
      if (queue_.empty() && active_.empty()) {  // idle: sleep until the next arrival
        double next = arrivals.empty() ? 1e300 : w.requests[arrivals.front()].arrival_s;
        for (const auto& f : follow_ups) next = std::min(next, f.arrival_s);
        if (next > now && next < 1e300) std::this_thread::sleep_for(std::chrono::duration<double>(next - now));
        continue;
      }
      const auto s0 = clock::now();
      if (auto e = admit(out, w); !e) return e.err();
      step_wait_ = 0;
      step_stalled_ = false;
      step_calls_s_ = 0;
      step_sequences_ = 0;
      std::vector<std::size_t> done;
      if (auto e = step(out, done); !e) return e.err();
      cache_.poll();
      const double step_s = std::chrono::duration<double>(clock::now() - s0).count();
      if (step_sequences_ > 0)  // the host's share of the step, outside the backend's calls
        out.samples.step.push_back({step_sequences_, step_loaded_, std::max(0.0, step_s - step_calls_s_)});
      step_loaded_ = 0;
      out.counters.steps++;
      out.counters.step_s += step_s;
      out.counters.load_wait_s += step_wait_;
      out.counters.stall_steps += step_stalled_;
      for (std::size_t id : done) {
        request_record& rec = out.records[id];
        ++finished;
        last_finish = std::max(last_finish, rec.finish_s);
        if (first_arrival < 0 || rec.arrival_s < first_arrival) first_arrival = rec.arrival_s;
        if (const std::size_t c = children_[id]; c != no_parent) {  // the session's next turn
          const auto& cr = w.requests[c];
          pending_child p{rec.finish_s + cr.arrival_s, queued{c, rec.finish_s + cr.arrival_s, cr.ns, histories_[id], cr.max_new_tokens}};
          p.q.prompt.insert(p.q.prompt.end(), cr.prompt.begin(), cr.prompt.end());
          follow_ups.push_back(std::move(p));
        }
        histories_.erase(id);
      }
    }
    cache_.drain();
    out.samples.batched_prefill = batching();
    out.samples.load_aware = so_.load_aware;
    for (const auto& r : w.requests) out.records[r.id].warmup = r.warmup;
    const auto& after = cache_.stats();
    auto& c = out.counters;
    c.duration_s = last_finish - std::max(0.0, first_arrival);
    c.bytes_loaded = after.bytes_loaded - before.bytes_loaded;
    c.pages_loaded = after.pages_loaded - before.pages_loaded;
    c.bytes_backed_up = after.bytes_backed_up - before.bytes_backed_up;
    c.pages_backed_up = after.pages_backed_up - before.pages_backed_up;
    for (std::size_t t = 0; t < kvtier::tier_count; ++t) {
      c.bytes_written[t] = after.bytes_written[t] - before.bytes_written[t];
      c.bytes_fetched[t] = after.bytes_fetched[t] - before.bytes_fetched[t];
      c.pages_fetched[t] = after.pages_fetched[t] - before.pages_fetched[t];
    }
    return out;
  }

 private:
  using clock = std::chrono::steady_clock;
  enum class phase : std::uint8_t { fetching, prefill, decode };

  struct queued {
    std::size_t id = 0;
    double arrival_s = 0;
    kvtier::namespace_id ns{};
    std::vector<kvtier::token_id> prompt;
    std::size_t max_new = 0;
  };
  struct pending_child {
    double arrival_s = 0;
    queued q;
  };
  struct active_request {
    queued q;
    phase ph = phase::prefill;
    std::uint64_t missing_prefix = 0;        // its first missing page's key until the prompt is committed
    lease_type lease;
    std::vector<kvtier::device_slot> table;  // the cached prefix's slots, then the reserved ones
    std::size_t cached_pages = 0;            // usable prefix after load
    std::size_t next = 0;                    // next prompt position to prefill
    std::size_t committed = 0;               // pages whose slots the index owns (or the lease holds)
    bool hook_pending = false;               // the first chunk waits for loaded layers
    std::vector<kvtier::token_id> seq;       // the prompt, then every token fed to decode
    kvtier::token_id last{};                 // the last sampled token (fed next)
    sampler smp{sampling{}};
  };

  double elapsed() const { return std::chrono::duration<double>(clock::now() - t0_).count(); }
  // Whether a step's prefill chunks run as one prefill_batch call.
  bool batching() const noexcept {
    if constexpr (batched_prefill_backend<Backend>) return so_.batch_prefill;
    else return false;
  }
  std::size_t pages_for(const queued& q) const {  // positions [0, prompt + max_new - 1) hold KV
    return (q.prompt.size() + q.max_new - 1 + page_tokens - 1) / page_tokens;
  }

  in_flight flight() const {
    in_flight f;
    f.now_s = elapsed();
    f.running = active_.size();
    for (const auto& a : active_) {
      f.prefilling += a->ph == phase::prefill;
      f.decoding += a->ph == phase::decode;
      if (a->ph == phase::fetching) ++f.fetching, f.fetch_pages += a->lease.fetches_started();
      if (a->hook_pending && !cache_.layer_ready(a->lease, cfg_.layers - 1)) f.load_pages += a->cached_pages;
    }
    f.token_budget = so_.token_budget;
    f.free_device_pages = cache_.device_pool().available();
    pending_.clear();
    for (const auto& a : active_)
      if (a->ph != phase::decode && a->missing_prefix != 0) pending_.push_back(a->missing_prefix);
    f.pending_prefixes = pending_;
    return f;
  }

  // Admission: loads of requests whose prefetch started last step, then new requests in policy order.
  kvtier::result<void> admit(run_result& out, const workload& w) {
    for (auto it = active_.begin(); it != active_.end();) {
      active_request& a = **it;
      if (a.ph != phase::fetching) {
        ++it;
        continue;
      }
      auto r = load_and_reserve(a, out);
      if (!r) return r.err();
      if (!*r) {  // no room: back to the queue's front
        out.counters.deferred_admissions++;
        queue_.insert(queue_.begin(), std::move(a.q));
        it = active_.erase(it);
      } else {
        ++it;
      }
    }
    if (queue_.empty() || active_.size() >= so_.max_batch) return {};
    // Rank the first policy_window queued requests (arrival order) by the policy's priority.
    const std::size_t n = std::min(queue_.size(), so_.policy_window);
    in_flight f = flight();
    ranked_.clear();
    for (std::size_t i = 0; i < n; ++i) {
      queued_request v{queue_[i].id, queue_[i].arrival_s, queue_[i].prompt.size(), {}};
      if constexpr (Policy::uses_cached_prefix) {
        if (so_.caching) peek(queue_[i], v);
      }
      ranked_.push_back({policy_.priority(v, f), queue_[i].arrival_s, i, v});
    }
    std::stable_sort(ranked_.begin(), ranked_.end(), [](const rank& a, const rank& b) {
      return a.priority != b.priority ? a.priority < b.priority : a.arrival < b.arrival;
    });
    std::vector<std::size_t> taken;
    for (const rank& rk : ranked_) {
      if (active_.size() >= so_.max_batch) break;
      // Asked again with what this round admitted: not_now leaves the request queued.
      f.pending_prefixes = pending_;
      if (policy_.priority(rk.view, f) == not_now) {
        out.counters.policy_deferrals++;
        continue;
      }
      auto a = std::make_unique<active_request>();
      a->q = std::move(queue_[rk.index]);
      request_record& rec = out.records[a->q.id];
      rec = request_record{};
      rec.id = a->q.id;
      rec.session = w.requests[a->q.id].session;
      rec.turn = w.requests[a->q.id].turn;
      rec.arrival_s = a->q.arrival_s;
      rec.admitted_s = elapsed();
      rec.prompt_tokens = a->q.prompt.size();
      if (a->q.prompt.empty() || a->q.prompt.size() + a->q.max_new > cfg_.seq_len + 1)
        return kvtier::make_error(kvtier::errc::invalid_argument);
      std::size_t fetches = 0;
      if (so_.caching) {
        const auto hits0 = cache_.stats().hit_tokens;
        const std::span<const kvtier::token_id> p(a->q.prompt);
        if (auto e = cache_.lookup(a->q.ns, p.first(p.size() - 1), a->lease); !e) return e.err();
        for (std::size_t t = 0; t < kvtier::tier_count; ++t) rec.hit_tokens[t] = cache_.stats().hit_tokens[t] - hits0[t];
        a->missing_prefix = missing_key(a->q, a->lease.sources());
        if (a->missing_prefix != 0) pending_.push_back(a->missing_prefix);
        fetches = cache_.prefetch(a->lease);
      }
      if (fetches > 0) {  // load on the next step: the reads run meanwhile
        a->ph = phase::fetching;
        active_.push_back(std::move(a));
        taken.push_back(rk.index);
        continue;
      }
      auto r = load_and_reserve(*a, out);
      if (!r) return r.err();
      if (!*r) {  // no room now: stays queued (the slots it was refused are others' until they finish)
        out.counters.deferred_admissions++;
        queue_[rk.index] = std::move(a->q);
        break;
      }
      active_.push_back(std::move(a));
      taken.push_back(rk.index);
    }
    std::sort(taken.begin(), taken.end());
    for (auto it = taken.rbegin(); it != taken.rend(); ++it) queue_.erase(queue_.begin() + std::ptrdiff_t(*it));
    return {};
  }

  // The cached prefix of a queued request by tier, as lookup finds it now (locks nothing after).
  void peek(const queued& q, queued_request& v) {
    const std::span<const kvtier::token_id> p(q.prompt);
    if (!cache_.lookup(q.ns, p.first(p.size() - 1), peek_lease_)) return;
    const auto src = peek_lease_.sources();
    for (const auto s : src) {
      const std::size_t t = s == kvtier::page_source::device ? 0 : s == kvtier::page_source::host ? 1 : 2;
      v.cached_tokens[t] += page_tokens;
    }
    v.missing_prefix = missing_key(q, src);
    (void)cache_.release(peek_lease_);
  }

  // The content key of the first page (of those a lookup may find) not ready on device or host:
  // a chained hash of the namespace and the tokens up to that page's end; 0 when none is missing.
  template <class Sources>
  static std::uint64_t missing_key(const queued& q, const Sources& src) {
    std::size_t k = 0;
    while (k < src.size() && src[k] != kvtier::page_source::storage) ++k;
    if (k >= (q.prompt.size() - 1) / page_tokens) return 0;
    auto mix = [](std::uint64_t h, std::uint64_t v) {
      h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
      h ^= h >> 33;
      h *= 0xff51afd7ed558ccdull;
      return h ^ (h >> 29);
    };
    std::uint64_t h = mix(0x5157ull, q.ns.value());
    for (std::size_t i = 0; i < (k + 1) * page_tokens; ++i) h = mix(h, std::uint32_t(q.prompt[i].value()));
    return h ? h : 1;
  }

  // load() and slots for the rest: true when admitted, false when the device has no room now.
  kvtier::result<bool> load_and_reserve(active_request& a, run_result& out) {
    request_record& rec = out.records[a.q.id];
    const std::size_t total = pages_for(a.q);
    std::size_t cached = 0;
    if (so_.caching) {
      const auto loaded0 = cache_.stats().pages_loaded;
      if (auto e = cache_.load(a.lease, stream_); !e) {
        (void)cache_.release(a.lease);
        return e.err();
      }
      cached = a.lease.cached_pages();
      rec.loaded_pages = cache_.stats().pages_loaded - loaded0;
      step_loaded_ += rec.loaded_pages;
    }
    a.table.assign(a.lease.device_slots().begin(), a.lease.device_slots().begin() + std::ptrdiff_t(cached));
    fresh_.assign(total - cached, kvtier::device_slot{});
    if (!cache_.allocate(fresh_)) {
      (void)cache_.release(a.lease);
      a.table.clear();
      if (active_.empty() || (active_.size() == 1 && active_.front().get() == &a))
        return kvtier::make_error(kvtier::errc::capacity_exhausted);  // it can never fit
      return false;
    }
    a.table.insert(a.table.end(), fresh_.begin(), fresh_.end());
    a.cached_pages = cached;
    a.committed = cached;
    a.next = cached * page_tokens;
    a.hook_pending = so_.caching && cached > 0;  // its own loads, or pages another lease is loading
    rec.reused_tokens = a.next;
    rec.computed_tokens = a.q.prompt.size() - a.next;
    a.seq = a.q.prompt;
    a.ph = phase::prefill;
    return true;
  }

  kvtier::result<void> step(run_result& out, std::vector<std::size_t>& done) {
    constexpr std::size_t P = page_tokens;
    std::size_t budget = so_.token_budget;
    batch_.clear();
    decoding_.clear();
    for (auto& a : active_)
      if (a->ph == phase::decode && budget > 0) decoding_.push_back(a.get()), --budget;
    // ---- one decode step for the batch
    if (!decoding_.empty()) {
      std::size_t ctx = 0;
      for (active_request* a : decoding_) {
        const std::size_t pos = a->seq.size();
        a->seq.push_back(a->last);
        batch_.push_back(decode_entry{a->last, pos, a->table});
        ctx += pos + 1;
      }
      // Every request greedy and the backend samples where it computes: only the tokens come back.
      bool on_device = false;
      if constexpr (greedy_decode_backend<Backend>)
        on_device = std::all_of(decoding_.begin(), decoding_.end(), [](const active_request* a) { return a->smp.greedy(); });
      const auto d0 = clock::now();
      if (on_device) {
        if constexpr (greedy_decode_backend<Backend>) {
          next_.resize(batch_.size());
          if (auto e = backend_.decode_greedy(batch_, next_); !e) return e.err();
        }
      } else {
        batch_logits_.resize(batch_.size() * cfg_.vocab);
        if (auto e = backend_.decode(batch_, batch_logits_); !e) return e.err();
      }
      const double call_s = std::chrono::duration<double>(clock::now() - d0).count();
      out.samples.decode.push_back({batch_.size(), ctx, call_s});
      step_calls_s_ += call_s;
      step_sequences_ += batch_.size();
      for (std::size_t b = 0; b < decoding_.size(); ++b) {
        active_request& a = *decoding_[b];
        request_record& rec = out.records[a.q.id];
        const std::size_t pos = batch_[b].position;
        if (so_.caching && (pos + 1) % P == 0) {
          if (auto e = cache_.commit(a.lease, a.seq, std::span(a.table).subspan(a.committed, 1)); !e) return e.err();
          ++a.committed;
        }
        a.last = on_device ? next_[b] : a.smp.next(std::span(batch_logits_).subspan(b * cfg_.vocab, cfg_.vocab));
        rec.output.push_back(a.last);
        if (rec.output.size() >= a.q.max_new) finish(a, rec, done);
      }
    }
    // ---- chunked prefills with what the decodes left; a chunk whose prefix is still loading waits
    // for a step with nothing else to run (load_aware)
    const auto loading = [&](const active_request& a) { return a.hook_pending && !cache_.layer_ready(a.lease, cfg_.layers - 1); };
    bool other_work = !decoding_.empty();
    if (so_.load_aware && !other_work)
      for (const auto& up : active_) other_work |= up->ph == phase::prefill && !loading(*up);
    for (auto& up : active_) {
      active_request& a = *up;
      if (a.ph != phase::prefill || budget == 0) continue;
      if (so_.load_aware && other_work && loading(a)) {
        out.counters.load_deferrals++;
        continue;
      }
      const std::size_t N = a.q.prompt.size();
      std::size_t n = std::min({N - a.next, so_.chunk_tokens, budget});
      if (a.next + n < N) n = n / P * P;  // chunks start on page boundaries
      if (n == 0) break;
      if (batching()) {  // run below, with the step's other chunks
        picked_.push_back({&a, n});
        budget -= n;
        continue;
      }
      request_record& rec = out.records[a.q.id];
      const prefill_chunk c{std::span(a.q.prompt).subspan(a.next, n), a.next, std::span(a.table).first((a.next + n + P - 1) / P)};
      layer_hook hook;
      if (a.hook_pending) hook = [&](std::size_t l) { (void)wait_for_layer(a, l, rec); };
      const double wait0 = rec.load_wait_s;
      const auto c0 = clock::now();
      if (auto e = backend_.prefill(c, logits_, hook); !e) return e.err();
      const double call_s = std::chrono::duration<double>(clock::now() - c0).count();
      out.samples.prefill.push_back({n, a.next, call_s - (rec.load_wait_s - wait0)});
      step_calls_s_ += call_s;
      ++step_sequences_;
      budget -= n;
      if (auto e = prefilled(a, n, logits_, out, done); !e) return e;
    }
    if constexpr (batched_prefill_backend<Backend>) {
      if (!picked_.empty())
        if (auto e = prefill_batch(out, done); !e) return e;
    }
    std::erase_if(active_, [](const std::unique_ptr<active_request>& a) { return a->q.max_new == 0; });
    return {};
  }

  // The step's chunks (picked_) in one prefill_batch call; before layer l it waits for every chunk
  // whose prefix is still loading. One cost sample for the call: sum of new tokens, of cached
  // positions, the chunk count and sum n (s + n/2) (cost_model.hpp's batched prefill fit).
  kvtier::result<void> prefill_batch(run_result& out, std::vector<std::size_t>& done) {
    constexpr std::size_t P = page_tokens;
    chunks_.clear();
    bool loading = false;
    prefill_sample sample{0, 0, 0, picked_.size(), 0};
    for (const auto& [a, n] : picked_) {
      chunks_.push_back(prefill_chunk{std::span(a->q.prompt).subspan(a->next, n), a->next,
                                      std::span(a->table).first((a->next + n + P - 1) / P)});
      loading |= a->hook_pending;
      sample.new_tokens += n;
      sample.cached_tokens += a->next;
      sample.pairs += double(n) * (double(a->next) + double(n) / 2);
    }
    double waited = 0;
    layer_hook hook;
    if (loading)
      hook = [&](std::size_t l) {
        for (const auto& [a, n] : picked_)
          if (a->hook_pending) waited += wait_for_layer(*a, l, out.records[a->q.id]);
      };
    batch_prefill_logits_.resize(picked_.size() * cfg_.vocab);
    const auto c0 = clock::now();
    if (auto e = backend_.prefill_batch(chunks_, batch_prefill_logits_, hook); !e) return e.err();
    const double call_s = std::chrono::duration<double>(clock::now() - c0).count();
    sample.seconds = call_s - waited;
    out.samples.prefill.push_back(sample);
    step_calls_s_ += call_s;
    step_sequences_ += picked_.size();
    for (std::size_t i = 0; i < picked_.size(); ++i) {
      const std::span<float> logits = std::span(batch_prefill_logits_).subspan(i * cfg_.vocab, cfg_.vocab);
      if (auto e = prefilled(*picked_[i].first, picked_[i].second, logits, out, done); !e) return e;
    }
    picked_.clear();
    return {};
  }

  // Waits until layer l of a's loading prefix is on the device, counting the wait for a (rec) and the
  // step; the seconds waited (0 when it was there).
  double wait_for_layer(active_request& a, std::size_t l, request_record& rec) {
    if (cache_.layer_ready(a.lease, l)) return 0;
    const auto w0 = clock::now();
    (void)cache_.wait_layer(a.lease, l);
    const double ws = std::chrono::duration<double>(clock::now() - w0).count();
    rec.load_wait_s += ws;
    step_wait_ += ws;
    step_stalled_ = true;
    return ws;
  }

  // After a's chunk of n tokens is in the pool (its last token's logits): a finished prompt commits
  // its whole pages and samples the first token.
  kvtier::result<void> prefilled(active_request& a, std::size_t n, std::span<float> logits, run_result& out,
                                 std::vector<std::size_t>& done) {
    constexpr std::size_t P = page_tokens;
    request_record& rec = out.records[a.q.id];
    const std::size_t N = a.q.prompt.size();
    a.hook_pending = false;
    a.next += n;
    rec.prefill_chunks++;
    if (a.next < N) return {};
    // ---- the prompt is in: commit its whole pages, sample the first token
    a.missing_prefix = 0;
    if (so_.caching) {
      const std::size_t full = N / P;
      if (auto e = cache_.commit(a.lease, a.seq, std::span(a.table).subspan(a.committed, full - a.committed)); !e) return e.err();
      a.committed = full;
    }
    a.last = a.smp.next(logits);
    rec.output.push_back(a.last);
    rec.first_token_s = elapsed();
    a.ph = phase::decode;
    if (rec.output.size() >= a.q.max_new) finish(a, rec, done);
    return {};
  }

  // Frees what the index does not own, releases the lease, records; marks the entry for removal.
  void finish(active_request& a, request_record& rec, std::vector<std::size_t>& done) {
    if (a.table.size() > a.committed) (void)cache_.free(std::span(a.table).subspan(a.committed));
    if (so_.caching) (void)cache_.release(a.lease);
    rec.finish_s = elapsed();
    rec.output_tokens = rec.output.size();
    if (children_[a.q.id] != no_parent) {  // the history the next turn extends: prompt and reply
      auto& h = histories_[a.q.id];
      h = std::move(a.q.prompt);
      h.insert(h.end(), rec.output.begin(), rec.output.end());
    }
    done.push_back(a.q.id);
    a.q.max_new = 0;  // removal mark
  }

  struct rank {
    double priority, arrival;
    std::size_t index;
    queued_request view;
  };

  model_config cfg_;
  server_options so_;
  Policy policy_;
  Cache cache_;
  Backend backend_;
  std::size_t device_pages_;
  typename Cache::stream_type stream_;
  lease_type peek_lease_;
  std::vector<float> logits_, batch_logits_, batch_prefill_logits_;
  std::vector<std::pair<active_request*, std::size_t>> picked_;  // this step's prefill chunks (batched): request, tokens
  std::vector<prefill_chunk> chunks_;
  std::vector<kvtier::token_id> next_;  // decode_greedy's tokens
  std::vector<kvtier::device_slot> fresh_;
  std::vector<decode_entry> batch_;
  std::vector<active_request*> decoding_;
  std::vector<rank> ranked_;
  mutable std::vector<std::uint64_t> pending_;  // missing prefixes in flight (see flight())
  std::deque<queued> queue_;
  std::vector<std::unique_ptr<active_request>> active_;
  std::vector<std::size_t> children_;
  std::unordered_map<std::size_t, std::vector<kvtier::token_id>> histories_;
  clock::time_point t0_;
  double step_wait_ = 0;
  bool step_stalled_ = false;
  double step_calls_s_ = 0;           // this step's prefill and decode calls (cost_model's step overhead)
  std::size_t step_sequences_ = 0, step_loaded_ = 0;
};

}  // namespace kvtier_engine::serving
