#pragma once
// What redis_tier and redis_cluster_tier share around their different I/O (CRTP: the tier derives
// from redis_tier_base<Tier, Config, Codec> and provides progress(timeout, target)): poll() and
// wait() over progress, the configuration (validated) and its geometry, the codec checked against
// it, the page key, what a page read back must be, the counters, and the accounting of a completed
// request.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "kvtier/codec/concepts.hpp"
#include "kvtier/codec/kv_page.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/detail/redis_reply.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/redis_tier_config.hpp"
#include "kvtier/storage/request.hpp"
#include "kvtier/storage/stats.hpp"

namespace kvtier::detail {

template <class Tier, class Config, page_codec Codec>
class redis_tier_base {
 public:
  using codec_type = Codec;
  using clock = std::chrono::steady_clock;

  // Completes what has arrived, without waiting.
  std::size_t poll() noexcept { return tier().progress(std::chrono::milliseconds(0), nullptr); }
  // Waits until `batch` is done or `timeout` passes (errc::timeout; the batch is still running).
  result<void> wait(storage_batch& batch, std::chrono::milliseconds timeout) noexcept {
    const auto deadline = clock::now() + timeout;
    while (!batch.done()) {
      const auto now = clock::now();
      if (now >= deadline) return make_error(errc::timeout);
      tier().progress(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) + std::chrono::milliseconds(1), &batch);
    }
    return {};
  }

  kv_shape shape() const noexcept { return cfg_.shape; }
  std::size_t page_bytes() const noexcept { return cfg_.page_bytes; }
  // Redis holds pages for every engine sharing it: the tier does not know their number.
  storage_usage usage() const noexcept { return {}; }
  storage_stats stats() const noexcept { return stats_; }
  const Config& config() const noexcept { return cfg_; }
  // The Redis key of a page: <prefix>:<namespace as 16 hex digits>:<key as 32 hex digits>.
  std::string key_of(const page_address& a) const { return redis_key(cfg_.prefix, a); }

 protected:
  // Throws config_error for a value out of range or a codec not built for the tier's pages.
  redis_tier_base(Config cfg, Codec codec)
      : cfg_(kvtier::validated(std::move(cfg))),
        codec_(checked_tier_codec(std::move(codec), cfg_.shape, cfg_.page_bytes)),
        max_payload_(codec_.max_encoded_bytes(cfg_.page_bytes)) {}

  // What a page read back under `where` must be to be served.
  page_expectation expectation(const page_address& where, std::uint64_t tokens_fp) const noexcept {
    return {cfg_.shape.fingerprint(), where, tokens_fp, Codec::id, cfg_.page_bytes, max_payload_};
  }

  // Counts request `index` of `batch` (a GET's hit or miss and its page's bytes, a SET's page
  // bytes, any failure that is not a miss) and completes it with `e`.
  void complete(storage_batch& batch, std::size_t index, redis_command op, std::size_t page_bytes, error e) noexcept {
    if (op == redis_command::get) {
      if (e.code == errc::ok) {
        ++stats_.hits;
        stats_.bytes_read += page_bytes;
      } else {
        ++stats_.misses;
      }
    } else if (op == redis_command::set && e.code == errc::ok) {
      ++stats_.puts;
      stats_.bytes_written += page_bytes;
    }
    if (e.code != errc::ok && e.code != errc::not_found && e.code != errc::corrupted) ++stats_.errors;
    batch.complete(index, e);
  }

  Config cfg_;
  [[no_unique_address]] Codec codec_{};
  std::size_t max_payload_ = 0;  // the codec's bound on a page's stored bytes
  storage_stats stats_{};

 private:
  Tier& tier() noexcept { return static_cast<Tier&>(*this); }
};

}  // namespace kvtier::detail
