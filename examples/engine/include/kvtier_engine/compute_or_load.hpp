#pragma once
// Compute or load? Both (Cake): kvtier-engine's prefill of a prompt whose cached prefix lies on a
// slow tier. kvtier's compute_or_load_planner splits the slow part of the prefix; the engine
// computes chunks from its head (chunked prefill over the KV already in the pool) while a loader
// brings page ranges from its tail into their device slots, both at once, re-planning as each
// completes (observed compute time and bandwidth refine the split). Pages computed are never
// loaded, pages loaded never computed; a failed load is computed instead. Then the uncached suffix
// is prefilled over the whole prefix and its last logits start the reply.
//
// A loader (concept page_loader) owns the slow side: start(range) queues the pages [begin, end)
// of the prefix (into block_table's slots), wait() blocks until a started range finishes, poll()
// returns one without blocking. throttled_loader is one: a thread that moves the pages for real
// (a `mover` callable) and paces itself to a given bandwidth, as a slow tier of that rate would.
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/policy/compute_or_load.hpp"
#include "kvtier_engine/backend.hpp"

namespace kvtier_engine {

struct load_completion {
  kvtier::page_range range;
  double seconds = 0;  // start of its transfer to its end (the planner's bandwidth observation)
  bool ok = true;
};

// clang-format off
template <class L>
concept page_loader = requires(L& l, kvtier::page_range r) {
  l.start(r);
  { l.wait() } -> std::same_as<load_completion>;
  { l.poll() } -> std::same_as<std::optional<load_completion>>;
};
// clang-format on

// A loader thread pacing a real move of each range to `bytes_per_s` (a link of that rate: a range
// of b bytes takes b / rate after the previous one ends, or the move's own time if longer).
// mover(range) moves the pages and returns false when the read failed.
class throttled_loader {
 public:
  throttled_loader(double bytes_per_s, std::size_t page_bytes, std::function<bool(kvtier::page_range)> mover)
      : rate_(bytes_per_s), page_bytes_(page_bytes), mover_(std::move(mover)), thread_([this] { run(); }) {
    if (!(bytes_per_s > 0) || page_bytes == 0) throw kvtier::config_error("kvtier_engine: throttled_loader needs a rate and page size");
  }
  throttled_loader(const throttled_loader&) = delete;
  throttled_loader& operator=(const throttled_loader&) = delete;
  ~throttled_loader() {
    {
      std::lock_guard g(m_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void start(kvtier::page_range r) {
    {
      std::lock_guard g(m_);
      queue_.push_back(r);
    }
    cv_.notify_all();
  }
  load_completion wait() {
    std::unique_lock g(m_);
    cv_.wait(g, [&] { return !done_.empty(); });
    const load_completion c = done_.front();
    done_.pop_front();
    return c;
  }
  std::optional<load_completion> poll() {
    std::lock_guard g(m_);
    if (done_.empty()) return std::nullopt;
    const load_completion c = done_.front();
    done_.pop_front();
    return c;
  }

 private:
  void run() {
    using clock = std::chrono::steady_clock;
    clock::time_point link_free = clock::now();
    for (;;) {
      kvtier::page_range r;
      {
        std::unique_lock g(m_);
        cv_.wait(g, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        r = queue_.front();
        queue_.pop_front();
      }
      const auto t0 = std::max(clock::now(), link_free);
      const bool ok = mover_(r);
      const auto paced = t0 + std::chrono::duration_cast<clock::duration>(
                                  std::chrono::duration<double>(double(r.size() * page_bytes_) / rate_));
      std::this_thread::sleep_until(paced);
      link_free = std::max(paced, clock::now());
      const double s = std::chrono::duration<double>(link_free - t0).count();
      {
        std::lock_guard g(m_);
        done_.push_back({r, s, ok});
      }
      cv_.notify_all();
    }
  }

  double rate_;
  std::size_t page_bytes_;
  std::function<bool(kvtier::page_range)> mover_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<kvtier::page_range> queue_;
  std::deque<load_completion> done_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

// What one compute-or-load prefill did.
struct compute_or_load_result {
  std::vector<kvtier::page_range> computed, loaded, failed;  // in completion order
  std::size_t meeting_page = 0;                                // where compute stopped
  double prefix_s = 0;                                         // the slow prefix (both sides done)
  double suffix_s = 0;                                         // the suffix's prefill after it
  double predicted_compute_only_s = 0, predicted_load_only_s = 0, predicted_both_s = 0;  // the first plan
};

struct compute_or_load_options {
  std::size_t loads_in_flight = 2;      // load batches queued on the loader at once
  std::size_t suffix_chunk_tokens = 0;  // the suffix's prefill chunk (0: the plan's compute chunk)
  std::chrono::microseconds poll_interval{100};  // the planner thread's sleep when nothing moved
  std::function<void()> worker_init;  // run first on the compute worker (e.g. cudaSetDevice for device != 0)
};

// Prefills `prompt` (positions [0, N)) whose pages [0, first_slow) are already in the pool and
// whose pages [first_slow, prefix_pages) are on the slow tier behind `loader`; block_table covers
// every page of the prompt. The last token's logits land in `logits`. Errors: invalid_argument
// (a prefix that does not leave a token to compute, a short block table), or the backend's.
// The slow prefix's chunks run on a worker thread, so the planner re-issues a load the moment one
// lands, while a chunk computes: the link never waits for compute (the calling thread polls both
// sides, sleeping `poll_interval` when neither moved). The suffix runs on the calling thread.
template <compute_backend Backend, page_loader Loader>
kvtier::result<compute_or_load_result> prefill_compute_or_load(Backend& be, Loader& loader,
                                                               std::span<const kvtier::token_id> prompt,
                                                               std::span<const kvtier::device_slot> block_table,
                                                               std::size_t first_slow, std::size_t prefix_pages,
                                                               const kvtier::compute_or_load_config& cfg,
                                                               std::span<float> logits,
                                                               const compute_or_load_options& o = {}) {
  using clock = std::chrono::steady_clock;
  const std::size_t P = cfg.page_tokens, N = prompt.size();
  if (first_slow > prefix_pages || prefix_pages * P >= N || block_table.size() * P < N || o.loads_in_flight == 0)
    return kvtier::make_error(kvtier::errc::invalid_argument);
  kvtier::compute_or_load_planner plan(cfg, first_slow, prefix_pages);
  compute_or_load_result out;
  out.predicted_compute_only_s = plan.predicted_compute_only();
  out.predicted_load_only_s = plan.predicted_load_only();
  out.predicted_both_s = plan.predicted_both();
  auto compute = [&](std::size_t begin_tok, std::size_t end_tok) {
    const prefill_chunk ch{prompt.subspan(begin_tok, end_tok - begin_tok), begin_tok,
                           block_table.first((end_tok + P - 1) / P)};
    return be.prefill(ch, logits, layer_hook{});
  };
  // The compute worker: one chunk at a time, handed over and back under a mutex.
  struct chunk_job {
    std::optional<kvtier::page_range> todo, done;
    kvtier::result<void> status;
    double seconds = 0;
    bool stop = false;
  } job;
  std::mutex jm;
  std::condition_variable jcv;
  std::thread worker([&] {
    if (o.worker_init) o.worker_init();
    for (;;) {
      kvtier::page_range r;
      {
        std::unique_lock g(jm);
        jcv.wait(g, [&] { return job.stop || job.todo.has_value(); });
        if (!job.todo) return;
        r = *job.todo;
      }
      const auto c0 = clock::now();
      kvtier::result<void> e = compute(r.begin * P, r.end * P);
      const double sec = std::chrono::duration<double>(clock::now() - c0).count();
      {
        std::lock_guard g(jm);
        job.todo.reset();
        job.done = r;
        job.status = e;
        job.seconds = sec;
      }
    }
  });
  std::size_t in_flight = 0;
  bool computing = false;
  kvtier::result<void> failure;
  auto settle = [&](const load_completion& c) {
    --in_flight;
    if (c.ok) {
      plan.load_done(c.range, c.seconds);
      out.loaded.push_back(c.range);
    } else {
      plan.load_failed(c.range);
      out.failed.push_back(c.range);
    }
  };
  const auto t0 = clock::now();
  while (failure && !plan.done()) {
    bool moved = false;
    for (; in_flight < o.loads_in_flight; ++in_flight, moved = true) {
      const auto l = plan.next_load();
      if (!l) break;
      loader.start(*l);
    }
    if (!computing)
      if (const auto c = plan.next_compute()) {
        {
          std::lock_guard g(jm);
          job.todo = *c;
        }
        jcv.notify_one();
        computing = moved = true;
      }
    while (auto c = loader.poll()) settle(*c), moved = true;
    if (computing) {
      std::unique_lock g(jm);
      if (job.done) {
        const kvtier::page_range r = *job.done;
        job.done.reset();
        computing = false;
        moved = true;
        if (!job.status) failure = job.status;
        plan.compute_done(r, job.seconds);
        out.computed.push_back(r);
      }
    }
    if (!moved) {
      if (!computing && in_flight == 0) failure = kvtier::make_error(kvtier::errc::io_error);  // a planner bug
      else std::this_thread::sleep_for(o.poll_interval);
    }
  }
  {
    std::lock_guard g(jm);
    job.stop = true;
  }
  jcv.notify_one();
  worker.join();  // a chunk in flight (only after a failure) finishes first
  while (in_flight > 0) settle(loader.wait());  // the loader's pages must not land after we return
  if (!failure) return failure.err();
  out.meeting_page = plan.meeting_point();
  const auto t1 = clock::now();
  out.prefix_s = std::chrono::duration<double>(t1 - t0).count();
  const std::size_t chunk = o.suffix_chunk_tokens ? o.suffix_chunk_tokens : cfg.compute_chunk_pages * P;
  for (std::size_t s = prefix_pages * P; s < N; s += chunk)
    if (auto e = compute(s, std::min(N, s + chunk)); !e) return e.err();
  out.suffix_s = std::chrono::duration<double>(clock::now() - t1).count();
  return out;
}

// Pages [first, end) exactly once across `a` and `b` (the plan's coverage check).
inline bool covers_exactly_once(std::span<const kvtier::page_range> a, std::span<const kvtier::page_range> b,
                                std::size_t first, std::size_t end) {
  std::vector<int> seen(end - first, 0);
  for (auto s : {a, b})
    for (const auto& r : s)
      for (std::size_t p = r.begin; p < r.end; ++p) {
        if (p < first || p >= end) return false;
        ++seen[p - first];
      }
  for (int v : seen)
    if (v != 1) return false;
  return true;
}

}  // namespace kvtier_engine
