#pragma once
// Configuration and counters of redis_cluster_tier (kvtier/storage/redis_cluster_tier.hpp).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"

namespace kvtier {

// A node of the cluster: as given in seeds, announced by the cluster, or named by a redirection.
struct cluster_node_address {
  std::string host;
  int port = 0;
  friend bool operator==(const cluster_node_address&, const cluster_node_address&) = default;
};

struct redis_cluster_tier_config {
  kv_shape shape;                              // pages of another shape are foreign, not served
  std::size_t page_bytes = 0;                  // bytes of one page (decoded); > 0
  std::vector<cluster_node_address> seeds;     // any nodes of the cluster; at least one
  std::string prefix = "kvtier";               // keys are <prefix>:<namespace, 16 hex>:<key, 32 hex>
  std::chrono::seconds ttl{0};                 // 0: pages do not expire
  std::string user;                            // ACL user; empty: the default user
  std::string password;                        // empty: no AUTH
  std::chrono::milliseconds connect_timeout{500};
  std::chrono::milliseconds io_timeout{2000};  // a node with replies due and no progress this long: timeout
  std::chrono::milliseconds reconnect_min{20}; // per node: first backoff after a failure
  std::chrono::milliseconds reconnect_max{2000};
  std::chrono::milliseconds refresh_min{100};  // topology refreshes at most this often
  unsigned max_redirects = 5;                  // MOVED/ASK followed per request before io_error
  // GET and EXISTS go to a replica of the slot's master (READONLY), writes to the master. A replica
  // may lag: a page written a moment ago can be a miss there (never wrong data). A replica that
  // cannot be reached leaves its reads to the master.
  bool read_from_replicas = false;
};

// Cluster-specific counters, beside storage_stats.
struct redis_cluster_stats {
  std::uint64_t moved = 0;        // MOVED redirections followed
  std::uint64_t asked = 0;        // ASK redirections followed
  std::uint64_t refreshes = 0;    // slot maps loaded from the cluster
  std::uint64_t node_failures = 0;  // connections lost or timed out with requests on them
};

// cfg itself, or config_error for a value out of range.
inline redis_cluster_tier_config validated(redis_cluster_tier_config cfg) {
  if (cfg.page_bytes == 0) throw config_error("kvtier: redis_cluster_tier with page_bytes 0");
  if (cfg.seeds.empty()) throw config_error("kvtier: redis_cluster_tier needs at least one seed node");
  for (const auto& s : cfg.seeds)
    if (s.host.empty() || s.port <= 0 || s.port > 65535) throw config_error("kvtier: redis_cluster_tier seed out of range");
  if (cfg.prefix.empty() || cfg.prefix.size() > 128) throw config_error("kvtier: redis_cluster_tier key prefix must have 1 to 128 characters");
  if (!cfg.user.empty() && cfg.password.empty()) throw config_error("kvtier: redis_cluster_tier ACL user without a password");
  if (cfg.io_timeout.count() <= 0 || cfg.connect_timeout.count() <= 0)
    throw config_error("kvtier: redis_cluster_tier timeouts must be positive");
  if (cfg.reconnect_min.count() <= 0 || cfg.reconnect_max < cfg.reconnect_min)
    throw config_error("kvtier: redis_cluster_tier reconnect backoff must satisfy 0 < min <= max");
  return cfg;
}

}  // namespace kvtier
