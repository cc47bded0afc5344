#pragma once
// The cache's slow tiers, fastest first (0: disk, 1: remote), each with its I/O thread: the batches
// in flight per tier (ticket → the pages they fill or write), and the reads a faster tier missed,
// queued for the next one. Arrays are sized by the number of tiers. Scheduler thread only; the
// I/O threads touch nothing here but their own queues.
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvtier/cache/detail/slow_tier_worker.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/storage/request.hpp"

namespace kvtier::detail {

template <storage_backend... Tiers>
class slow_tier_set {
 public:
  static constexpr std::size_t count = sizeof...(Tiers);
  static_assert(count <= 2, "kvtier: at most two slow tiers (disk, then remote)");
  using page_slots = std::vector<std::pair<page_id, host_slot>>;
  // One batch in flight: the pages it reads into or writes from (with their host slots), and the
  // bytes it writes when they were copied out of the host pool (write-back victims).
  struct pending_io {
    slow_op op;
    page_slots pages;
    std::vector<std::byte> payload;
  };

  // Throws config_error for a null tier.
  explicit slow_tier_set(std::unique_ptr<Tiers>... tiers) : tiers_(std::move(tiers)...) {
    std::apply([](auto&... t) {
      if (((t == nullptr) || ...)) throw config_error("kvtier: hierarchical_cache given a null slow tier");
    }, tiers_);
    workers_ = std::apply([](auto&... t) { return std::make_tuple(make_worker(*t)...); }, tiers_);
  }
  slow_tier_set(const slow_tier_set&) = delete;
  slow_tier_set& operator=(const slow_tier_set&) = delete;
  ~slow_tier_set() { stop(); }
  // Joins the I/O threads once the batches they hold have completed.
  void stop() { workers_ = {}; }

  static constexpr tier_id id(std::size_t t) noexcept { return t == 0 ? tier_id::disk : tier_id::remote; }
  template <std::size_t I>
  auto& tier() const noexcept { return *std::get<I>(tiers_); }

  // f(std::integral_constant<std::size_t, I>, Backend&) for every tier, fastest first.
  template <class F>
  void for_each(F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (f(std::integral_constant<std::size_t, I>{}, *std::get<I>(tiers_)), ...);
    }(std::index_sequence_for<Tiers...>{});
  }

  // Hands tier t a batch; the spans in the requests must stay valid until it is collected.
  std::uint64_t submit_get(std::size_t t, std::vector<page_read> reads, page_slots pages) {
    const auto ticket = with_worker<std::uint64_t>(t, [&](auto& w) { return w.submit_get(std::move(reads)); });
    io_[t].emplace(ticket, pending_io{slow_op::get, std::move(pages), {}});
    return ticket;
  }
  std::uint64_t submit_put(std::size_t t, std::vector<page_write> writes, page_slots pages,
                           std::vector<std::byte> payload = {}) {
    const auto ticket = with_worker<std::uint64_t>(t, [&](auto& w) { return w.submit_put(std::move(writes)); });
    payload_bytes_ += payload.size();
    io_[t].emplace(ticket, pending_io{slow_op::put, std::move(pages), std::move(payload)});
    return ticket;
  }
  // Queues a read a faster tier missed for tier t; it is submitted at the end of collect().
  void retry(std::size_t t, page_read r, page_id p, host_slot hs) {
    retries_[t].push_back(r);
    retry_pages_[t].push_back({p, hs});
  }

  // Asks tier t which of `where` it holds, waiting until `deadline` at most: one status a page
  // (ok: held), or nullopt when no answer came in time. At most one probe per tier is in flight:
  // while a late one is still out, the next returns nullopt at once (a stalled tier costs one
  // timeout, not one per lookup).
  std::optional<std::vector<error>> probe(std::size_t t, std::vector<page_address> where,
                                          std::chrono::steady_clock::time_point deadline) {
    slow_completion c;
    if (probe_[t] != 0 && !with_worker<bool>(t, [&](auto& w) { return w.take(probe_[t], c); })) return std::nullopt;
    probe_[t] = with_worker<std::uint64_t>(t, [&](auto& w) { return w.submit_contains(std::move(where)); });
    c.status.clear();
    if (!with_worker<bool>(t, [&](auto& w) { return w.wait_for(probe_[t], deadline) && w.take(probe_[t], c); }))
      return std::nullopt;
    probe_[t] = 0;
    return std::move(c.status);
  }

  // Blocks until tier t's batch is finished or the deadline passes; true when finished.
  bool wait_for(std::size_t t, std::uint64_t ticket, std::chrono::steady_clock::time_point deadline) {
    return with_worker<bool>(t, [&](auto& w) { return w.wait_for(ticket, deadline); });
  }
  // Waits for every batch in flight, up to `deadline` each (tests and shutdown).
  void wait_all(std::chrono::steady_clock::time_point deadline) {
    for (std::size_t t = 0; t < count; ++t)
      for (auto& [ticket, io] : io_[t]) (void)wait_for(t, ticket, deadline);
  }
  // Pages of tier t's batch not collected yet (0 once collected).
  std::size_t outstanding_pages(std::size_t t, std::uint64_t ticket) const {
    const auto it = io_[t].find(ticket);
    return it == io_[t].end() ? 0 : it->second.pages.size();
  }
  bool idle() const noexcept {
    for (std::size_t t = 0; t < count; ++t)
      if (!io_[t].empty() || !retries_[t].empty()) return false;
    return true;
  }
  // Bytes held by write-back payloads in flight.
  std::size_t payload_bytes() const noexcept { return payload_bytes_; }

  // Finished batches, tier by tier, fastest first: finish(t, pending_io&, const slow_completion&).
  // A read missed by tier t may be retried on a slower tier from finish; those go out here.
  template <class Finish>
  void collect(Finish&& finish) {
    for (std::size_t t = 0; t < count; ++t) {
      completions_.clear();
      (void)with_worker<bool>(t, [&](auto& w) { w.drain(completions_); return true; });
      for (auto& c : completions_) {
        auto it = io_[t].find(c.ticket);
        if (it == io_[t].end()) continue;
        finish(t, it->second, c);
        payload_bytes_ -= it->second.payload.size();
        io_[t].erase(it);
      }
      if (!retries_[t].empty()) {
        (void)submit_get(t, std::move(retries_[t]), std::move(retry_pages_[t]));
        retries_[t].clear();
        retry_pages_[t].clear();
      }
    }
  }

 private:
  template <class B>
  static std::unique_ptr<slow_tier_worker<B>> make_worker(B& b) {
    return std::make_unique<slow_tier_worker<B>>(b);
  }
  // f(worker of tier t), for a tier chosen at run time.
  template <class R, class F>
  R with_worker(std::size_t t, F&& f) {
    R r{};
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((I == t ? (void)(r = f(*std::get<I>(workers_))) : void()), ...);
    }(std::index_sequence_for<Tiers...>{});
    return r;
  }

  std::tuple<std::unique_ptr<Tiers>...> tiers_;
  // Declared after the tiers they drive, so they stop first.
  std::tuple<std::unique_ptr<slow_tier_worker<Tiers>>...> workers_;
  std::array<std::unordered_map<std::uint64_t, pending_io>, count> io_;  // per tier: ticket → pages
  std::array<std::vector<page_read>, count> retries_;                   // per tier: reads a faster tier missed
  std::array<page_slots, count> retry_pages_;
  std::vector<slow_completion> completions_;
  std::array<std::uint64_t, count> probe_{};  // per tier: the probe still out (0: none)
  std::size_t payload_bytes_ = 0;
};

}  // namespace kvtier::detail
