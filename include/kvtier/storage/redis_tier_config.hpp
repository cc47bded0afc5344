#pragma once
// The configuration of a Redis tier, and the Redis key of a page (see redis_tier.hpp).
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/storage/request.hpp"

namespace kvtier {

struct redis_tier_config {
  kv_shape shape;                       // pages of another shape are foreign, not served
  std::size_t page_bytes = 0;           // bytes of one page (decoded); > 0
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string prefix = "kvtier";        // keys are <prefix>:<namespace, 16 hex>:<key, 32 hex>
  std::chrono::seconds ttl{0};          // 0: pages do not expire
  std::string user;                     // ACL user; empty: the default user
  std::string password;                 // empty: no AUTH
  std::chrono::milliseconds connect_timeout{500};    // connect and handshake
  std::chrono::milliseconds io_timeout{2000};        // no reply progress for this long: timeout
  std::chrono::milliseconds reconnect_min{20};       // first backoff after a failure
  std::chrono::milliseconds reconnect_max{2000};     // backoff doubles up to this
};

// cfg itself, or config_error for a value out of range.
inline redis_tier_config validated(redis_tier_config cfg) {
  if (cfg.page_bytes == 0) throw config_error("kvtier: redis_tier with page_bytes 0");
  if (cfg.port <= 0 || cfg.port > 65535) throw config_error("kvtier: redis_tier port out of range");
  if (cfg.prefix.empty() || cfg.prefix.size() > 128) throw config_error("kvtier: redis_tier key prefix must have 1 to 128 characters");
  if (!cfg.user.empty() && cfg.password.empty()) throw config_error("kvtier: redis_tier ACL user without a password");
  if (cfg.io_timeout.count() <= 0 || cfg.connect_timeout.count() <= 0)
    throw config_error("kvtier: redis_tier timeouts must be positive");
  if (cfg.reconnect_min.count() <= 0 || cfg.reconnect_max < cfg.reconnect_min)
    throw config_error("kvtier: redis_tier reconnect backoff must satisfy 0 < min <= max");
  return cfg;
}

namespace detail {
// The Redis key of a page into `out`, without allocating (the prefix is cut at 128 characters, as
// validated() bounds it); returns its length. The one key format of redis_tier and redis_cluster_tier.
inline std::size_t format_page_key(std::string_view prefix, const page_address& a, char (&out)[192]) noexcept {
  const std::size_t p = std::min(prefix.size(), std::size_t(128));
  std::memcpy(out, prefix.data(), p);
  const int t = std::snprintf(out + p, sizeof out - p, ":%016llx:%016llx%016llx", (unsigned long long)a.ns.raw,
                              (unsigned long long)a.key.hi, (unsigned long long)a.key.lo);
  return p + std::size_t(t);
}
}  // namespace detail

// The Redis key of a page: <prefix>:<namespace as 16 hex digits>:<key as 32 hex digits>.
inline std::string redis_key(std::string_view prefix, const page_address& a) {
  char key[192];
  return std::string(key, detail::format_page_key(prefix, a, key));
}

}  // namespace kvtier
