#pragma once
// kvtier: needs-hiredis
// Redis Cluster topology: node addresses, the shards a node reports (CLUSTER SHARDS, or CLUSTER
// SLOTS on servers older than 7.0), the slot → node map, and MOVED / ASK redirections.
#include <hiredis/hiredis.h>

#include <array>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kvtier/storage/detail/cluster_hash_slot.hpp"
#include "kvtier/storage/redis_cluster_config.hpp"

namespace kvtier::detail {

// One shard: its slot ranges (inclusive), its master and its replicas.
struct cluster_shard {
  std::vector<std::pair<std::uint16_t, std::uint16_t>> ranges;
  cluster_node_address master;
  std::vector<cluster_node_address> replicas;
};

inline std::string_view reply_text(const redisReply* r) noexcept {
  if (r == nullptr || r->str == nullptr) return {};
  return {r->str, r->len};
}

inline std::optional<long long> reply_number(const redisReply* r) noexcept {
  if (r == nullptr) return std::nullopt;
  if (r->type == REDIS_REPLY_INTEGER) return r->integer;
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
    long long v = 0;
    const std::string_view s = reply_text(r);
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc{} && end == s.data() + s.size()) return v;
  }
  return std::nullopt;
}

// An endpoint a node announces; empty or "?" means "the host you asked" (`asked_host`).
inline std::string endpoint_host(std::string_view announced, std::string_view asked_host) {
  return std::string(announced.empty() || announced == "?" ? asked_host : announced);
}

inline bool valid_range(long long first, long long last) noexcept {
  return first >= 0 && last >= first && last < cluster_slots;
}

// CLUSTER SHARDS (RESP2: each shard a flat array "slots" [a, b, ...] "nodes" [[field, value, ...], ...]).
// Masters reported in a failed state are passed over for an online one of the same shard.
inline std::optional<std::vector<cluster_shard>> parse_cluster_shards(const redisReply* r, std::string_view asked_host) {
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY) return std::nullopt;
  std::vector<cluster_shard> shards;
  for (std::size_t s = 0; s < r->elements; ++s) {
    const redisReply* shard = r->element[s];
    if (shard->type != REDIS_REPLY_ARRAY) return std::nullopt;
    cluster_shard out;
    bool have_master = false, master_online = false;
    for (std::size_t f = 0; f + 1 < shard->elements; f += 2) {
      const std::string_view field = reply_text(shard->element[f]);
      const redisReply* value = shard->element[f + 1];
      if (value->type != REDIS_REPLY_ARRAY) continue;
      if (field == "slots") {
        for (std::size_t k = 0; k + 1 < value->elements; k += 2) {
          const auto a = reply_number(value->element[k]), b = reply_number(value->element[k + 1]);
          if (!a || !b || !valid_range(*a, *b)) return std::nullopt;
          out.ranges.emplace_back(std::uint16_t(*a), std::uint16_t(*b));
        }
      } else if (field == "nodes") {
        for (std::size_t n = 0; n < value->elements; ++n) {
          const redisReply* node = value->element[n];
          std::string_view ip, endpoint, role, health;
          long long port = 0;
          for (std::size_t k = 0; k + 1 < node->elements; k += 2) {
            const std::string_view key = reply_text(node->element[k]);
            const redisReply* v = node->element[k + 1];
            if (key == "ip") ip = reply_text(v);
            else if (key == "endpoint") endpoint = reply_text(v);
            else if (key == "role") role = reply_text(v);
            else if (key == "health") health = reply_text(v);
            else if (key == "port" || (key == "tls-port" && port == 0)) port = reply_number(v).value_or(0);
          }
          if (port <= 0 || port > 65535) continue;
          cluster_node_address a{endpoint_host(endpoint.empty() || endpoint == "?" ? ip : endpoint, asked_host), int(port)};
          const bool online = health != "fail";
          if (role == "master" && (!have_master || (online && !master_online))) {
            if (have_master && master_online) out.replicas.push_back(out.master);
            out.master = std::move(a);
            have_master = true;
            master_online = online;
          } else if (role != "master" && online) {  // ("loading" may be a peer's stale view: a replica
            out.replicas.push_back(std::move(a));  // that cannot serve yet answers LOADING, and its master serves)
          }
        }
      }
    }
    if (have_master && !out.ranges.empty()) shards.push_back(std::move(out));
  }
  return shards;
}

// CLUSTER SLOTS: [[first, last, [ip, port, id, ...] (master), [ip, port, ...] (replicas)...], ...].
inline std::optional<std::vector<cluster_shard>> parse_cluster_slots(const redisReply* r, std::string_view asked_host) {
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY) return std::nullopt;
  std::vector<cluster_shard> shards;
  for (std::size_t s = 0; s < r->elements; ++s) {
    const redisReply* e = r->element[s];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3) return std::nullopt;
    const auto a = reply_number(e->element[0]), b = reply_number(e->element[1]);
    if (!a || !b || !valid_range(*a, *b)) return std::nullopt;
    cluster_shard out;
    out.ranges.emplace_back(std::uint16_t(*a), std::uint16_t(*b));
    for (std::size_t n = 2; n < e->elements; ++n) {
      const redisReply* node = e->element[n];
      if (node->type != REDIS_REPLY_ARRAY || node->elements < 2) return std::nullopt;
      const long long port = reply_number(node->element[1]).value_or(0);
      if (port <= 0 || port > 65535) return std::nullopt;
      cluster_node_address addr{endpoint_host(reply_text(node->element[0]), asked_host), int(port)};
      if (n == 2) out.master = std::move(addr);
      else out.replicas.push_back(std::move(addr));
    }
    shards.push_back(std::move(out));
  }
  return shards;
}

// A redirection in an error reply: "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>".
struct cluster_redirect {
  bool ask = false;
  std::uint16_t slot = 0;
  cluster_node_address to;
};

inline std::optional<cluster_redirect> parse_redirect(std::string_view error_text, std::string_view asked_host) {
  cluster_redirect r;
  if (error_text.starts_with("MOVED ")) error_text.remove_prefix(6);
  else if (error_text.starts_with("ASK ")) error_text.remove_prefix(4), r.ask = true;
  else return std::nullopt;
  const std::size_t space = error_text.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  unsigned slot = 0;
  if (std::from_chars(error_text.data(), error_text.data() + space, slot).ptr != error_text.data() + space ||
      slot >= cluster_slots)
    return std::nullopt;
  const std::string_view where = error_text.substr(space + 1);
  const std::size_t colon = where.rfind(':');  // IPv6 hosts contain colons: the port is after the last
  if (colon == std::string_view::npos) return std::nullopt;
  int port = 0;
  const std::string_view port_text = where.substr(colon + 1);
  if (std::from_chars(port_text.data(), port_text.data() + port_text.size(), port).ptr != port_text.data() + port_text.size() ||
      port <= 0 || port > 65535)
    return std::nullopt;
  r.slot = std::uint16_t(slot);
  r.to = {endpoint_host(where.substr(0, colon), asked_host), port};
  return r;
}

// CLUSTER SHARDS (CLUSTER SLOTS where the server does not know it) from one node, on a connection
// of its own (blocking, each step bounded by `timeout`); nullopt if the node does not answer.
inline std::optional<std::vector<cluster_shard>> query_cluster_shards(const cluster_node_address& a, std::string_view user,
                                                                      std::string_view password,
                                                                      std::chrono::milliseconds timeout) {
  const timeval tv{time_t(timeout.count() / 1000), suseconds_t(timeout.count() % 1000 * 1000)};
  redisContext* c = redisConnectWithTimeout(a.host.c_str(), a.port, tv);
  std::optional<std::vector<cluster_shard>> out;
  if (c != nullptr && !c->err) {
    redisSetTimeout(c, tv);
    bool authed = true;
    if (!password.empty()) {
      auto* r = static_cast<redisReply*>(
          user.empty() ? redisCommand(c, "AUTH %b", password.data(), password.size())
                       : redisCommand(c, "AUTH %b %b", user.data(), user.size(), password.data(), password.size()));
      authed = r != nullptr && r->type != REDIS_REPLY_ERROR;
      if (r != nullptr) freeReplyObject(r);
    }
    for (const char* cmd : {"CLUSTER SHARDS", "CLUSTER SLOTS"}) {
      if (!authed || out || c->err != 0) break;
      auto* r = static_cast<redisReply*>(redisCommand(c, cmd));
      if (r != nullptr && r->type == REDIS_REPLY_ARRAY)
        out = std::string_view(cmd) == "CLUSTER SHARDS" ? parse_cluster_shards(r, a.host) : parse_cluster_slots(r, a.host);
      if (r != nullptr) freeReplyObject(r);
    }
  }
  if (c != nullptr) redisFree(c);
  return out;
}

// Which node (an index into the tier's node list) serves each slot, and a replica that may serve
// its reads; `unknown` before discovery (or for a slot without a replica).
class cluster_slot_map {
 public:
  static constexpr std::uint16_t unknown = 0xffff;
  cluster_slot_map() {
    owner_.fill(unknown);
    replica_.fill(unknown);
  }
  std::uint16_t operator[](std::uint16_t slot) const noexcept { return owner_[slot]; }
  std::uint16_t replica(std::uint16_t slot) const noexcept { return replica_[slot]; }
  // A new owner (MOVED): the replica known for the slot was its old master's.
  void assign(std::uint16_t slot, std::uint16_t node) noexcept {
    owner_[slot] = node;
    replica_[slot] = unknown;
  }
  void assign(std::uint16_t first, std::uint16_t last, std::uint16_t node, std::uint16_t replica = unknown) noexcept {
    for (std::uint32_t s = first; s <= last; ++s) owner_[s] = node, replica_[s] = replica;
  }
  void clear() noexcept {
    owner_.fill(unknown);
    replica_.fill(unknown);
  }
  std::size_t covered() const noexcept {
    std::size_t n = 0;
    for (const std::uint16_t o : owner_) n += o != unknown;
    return n;
  }

 private:
  std::array<std::uint16_t, cluster_slots> owner_;
  std::array<std::uint16_t, cluster_slots> replica_;
};

}  // namespace kvtier::detail
