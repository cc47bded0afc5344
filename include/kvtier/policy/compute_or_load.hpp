#pragma once
// Compute or load? Both (Cake, Jin et al. 2024). A cached prefix whose pages lie on a slow tier can
// be loaded (time Tl) or recomputed (time Tc); doing both at once — the engine computes chunks from
// the head while kvtier loads pages from the tail — finishes near Tc·Tl / (Tc + Tl) when the two
// meet. This planner hands out the work: compute chunks upward from the first slow page, load
// batches downward from the last, never the same page twice and never a gap. It re-plans as work
// completes: each side's observed rate refines the model, and near the meeting point the last gap
// goes to whichever side is predicted to finish it first.
//
// Use (single-threaded, like the cache):
//   compute_or_load_planner p(cfg, first_slow_page, pages);
//   while (!p.done()) {
//     if (auto c = p.next_compute()) ... engine prefill of pages [c->begin, c->end) ...;  p.compute_done(*c, seconds);
//     if (auto l = p.next_load())    ... kvtier loads pages [l->begin, l->end) ...;     p.load_done(*l, seconds);
//   }
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <vector>

#include "kvtier/core/error.hpp"

namespace kvtier {

// Seconds to prefill tokens [begin, end) when [0, begin) is already in the KV cache: a per-chunk
// overhead, a per-token part (the linear layers) and a per token-pair part (causal attention).
struct prefill_cost_model {
  double fixed_s = 0;
  double per_token_s = 0;
  double per_token_pair_s = 0;

  constexpr double seconds(std::size_t begin, std::size_t end) const noexcept {
    if (end <= begin) return 0;
    const double n = double(end - begin);
    return fixed_s + per_token_s * n + per_token_pair_s * n * (double(begin) + (n + 1) / 2);
  }
};

struct page_range {
  std::size_t begin = 0, end = 0;  // pages [begin, end)
  constexpr std::size_t size() const noexcept { return end - begin; }
  friend constexpr bool operator==(page_range, page_range) = default;
};

struct compute_or_load_config {
  std::size_t page_tokens = 16;
  std::size_t compute_chunk_pages = 32;  // the engine's prefill chunk (pages)
  std::size_t load_batch_pages = 8;      // one slow-tier read batch (pages)
  std::size_t page_bytes = 0;            // bytes of one page on the slow tier
  prefill_cost_model compute;            // the engine's measured cost model
  double load_bytes_per_s = 0;           // the slow tier's measured bandwidth
  double learning_rate = 0.5;            // weight of a new observation in the rate estimates

  constexpr void check() const {
    if (page_tokens == 0 || compute_chunk_pages == 0 || load_batch_pages == 0 || page_bytes == 0)
      throw config_error("kvtier: compute_or_load_config needs non-zero page_tokens, chunk, batch and page_bytes");
    if (!(load_bytes_per_s > 0) || !(learning_rate > 0 && learning_rate <= 1))
      throw config_error("kvtier: compute_or_load_config needs load_bytes_per_s > 0 and 0 < learning_rate <= 1");
    if (compute.fixed_s < 0 || compute.per_token_s < 0 || compute.per_token_pair_s < 0 ||
        compute.seconds(0, page_tokens) <= 0)
      throw config_error("kvtier: compute_or_load_config needs a non-negative, non-zero compute cost model");
  }
};

class compute_or_load_planner {
 public:
  // Pages [first_slow, pages) of the prefix lie on the slow tier; [0, first_slow) are on device or
  // host and are not planned here (the engine's ordinary load brings them).
  compute_or_load_planner(compute_or_load_config cfg, std::size_t first_slow, std::size_t pages)
      : cfg_(cfg), begin_(first_slow), end_(pages), compute_next_(first_slow), load_next_(pages) {
    cfg_.check();
    if (first_slow > pages) throw config_error("kvtier: compute_or_load_planner with first_slow > pages");
  }

  // The next chunk the engine should compute, or nothing (compute has reached the load side, or
  // the planner predicts the load side finishes the remaining gap sooner).
  std::optional<page_range> next_compute() noexcept {
    if (compute_next_ >= load_next_) {
      if (failed_.empty() || compute_outstanding_ > 0 || load_outstanding_ > 0) return std::nullopt;
      const page_range r = failed_.front();
      failed_.erase(failed_.begin());
      ++compute_outstanding_;
      computed_pages_ += r.size();
      return r;
    }
    // Never past the predicted meeting point of what is still unclaimed: the load side, working
    // down from load_next_, is predicted to finish the rest sooner.
    const std::size_t end = std::min(compute_next_ + cfg_.compute_chunk_pages, split_point(compute_next_, load_next_));
    if (end == compute_next_) return std::nullopt;
    const page_range r{compute_next_, end};
    compute_next_ = end;
    ++compute_outstanding_;
    computed_pages_ += r.size();
    return r;
  }

  // The next batch kvtier should load (highest pages first), or nothing.
  std::optional<page_range> next_load() noexcept {
    if (load_next_ <= compute_next_) return std::nullopt;
    const std::size_t begin = load_next_ - std::min(cfg_.load_batch_pages, load_next_ - compute_next_);
    const page_range r{begin, load_next_};
    load_next_ = begin;
    ++load_outstanding_;
    loaded_pages_ += r.size();
    return r;
  }

  // Completions refine the rate estimates: the ratio of observed to predicted time.
  void compute_done(page_range r, double seconds) noexcept {
    if (compute_outstanding_ > 0) --compute_outstanding_;
    const double predicted = cfg_.compute.seconds(r.begin * cfg_.page_tokens, r.end * cfg_.page_tokens);
    if (predicted > 0 && seconds > 0) compute_scale_ += cfg_.learning_rate * (seconds / predicted - compute_scale_);
  }
  void load_done(page_range r, double seconds) noexcept {
    if (load_outstanding_ > 0) --load_outstanding_;
    if (seconds > 0 && r.size() > 0) {
      const double rate = double(r.size() * cfg_.page_bytes) / seconds;
      load_rate_ += cfg_.learning_rate * (rate - load_rate_);
    }
  }
  // A failed load (the pages are a miss): they are computed instead, once everything below them is
  // in the cache (computing a chunk needs all earlier KV), lowest first, one at a time.
  void load_failed(page_range r) {
    if (load_outstanding_ > 0) --load_outstanding_;
    loaded_pages_ -= std::min(loaded_pages_, r.size());
    failed_.insert(std::upper_bound(failed_.begin(), failed_.end(), r,
                                    [](page_range a, page_range b) { return a.begin < b.begin; }),
                   r);
  }

  // Every page is handed out and nothing is in flight.
  bool done() const noexcept {
    return compute_next_ >= load_next_ && compute_outstanding_ == 0 && load_outstanding_ == 0 && failed_.empty();
  }
  // Pages [first_slow, meeting) are computed, [meeting, pages) loaded, but for failed loads.
  std::size_t meeting_point() const noexcept { return compute_next_; }
  std::size_t computed_pages() const noexcept { return computed_pages_; }
  std::size_t loaded_pages() const noexcept { return loaded_pages_; }

  // Predicted time of compute-only, load-only and both, for the whole slow range (current model).
  double predicted_compute_only() const noexcept { return compute_seconds(begin_, end_); }
  double predicted_load_only() const noexcept { return load_seconds(end_ - begin_); }
  double predicted_both() const noexcept {
    const std::size_t m = split_point(begin_, end_);
    return std::max(compute_seconds(begin_, m), load_seconds(end_ - m));
  }
  std::size_t predicted_meeting_point() const noexcept { return split_point(begin_, end_); }

 private:
  double compute_seconds(std::size_t b, std::size_t e) const noexcept {
    return compute_scale_ * cfg_.compute.seconds(b * cfg_.page_tokens, e * cfg_.page_tokens);
  }
  double load_seconds(std::size_t pages) const noexcept { return double(pages * cfg_.page_bytes) / load_rate_; }
  // The page m in [b, e] where computing [b, m) and loading [m, e) take about equally long: compute
  // time grows with m and load time falls, so bisect on their difference.
  std::size_t split_point(std::size_t b, std::size_t e) const noexcept {
    std::size_t lo = b, hi = e;
    while (lo < hi) {
      const std::size_t m = lo + (hi - lo + 1) / 2;
      if (compute_seconds(b, m) <= load_seconds(e - m)) lo = m;
      else hi = m - 1;
    }
    return lo;
  }

  compute_or_load_config cfg_;
  std::size_t begin_, end_;
  std::size_t compute_next_, load_next_;  // compute owns [begin_, compute_next_), load [load_next_, end_)
  std::size_t compute_outstanding_ = 0, load_outstanding_ = 0;
  std::size_t computed_pages_ = 0, loaded_pages_ = 0;
  double compute_scale_ = 1.0;  // observed / modelled compute time
  double load_rate_ = cfg_.load_bytes_per_s;
  std::vector<page_range> failed_;  // failed loads still to compute, by begin
};

}  // namespace kvtier
