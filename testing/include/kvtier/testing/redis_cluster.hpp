#pragma once
// A real Redis Cluster on loopback for the cluster tier's tests and bench: `masters` masters with
// `replicas` replicas each, every node a redis-server child in a temporary directory (no
// persistence), the masters joined by `redis-cli --cluster create`, then each replica met and
// attached to its master by CLUSTER MEET / CLUSTER REPLICATE (nodes m + k * masters replicate
// master m: redis-cli's own placement on one host may give a master two replicas and another
// none, until replica migration moves one), torn down by the destructor. Helpers look
// at and change the cluster behind the tier's back: raw commands, CLUSTER NODES, kill, restart,
// failover, waiting for a converged cluster.
// Needs hiredis and KVTIER_REDIS_SERVER (the redis-server binary), like redis_server.hpp.
#include <hiredis/hiredis.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kvtier/storage/detail/cluster_hash_slot.hpp"
#include "kvtier/storage/detail/cluster_topology.hpp"
#include "kvtier/storage/redis_cluster_config.hpp"
#include "kvtier/testing/redis_server.hpp"
#include "kvtier/testing/temp_dir.hpp"

namespace kvtier::testing {

struct reply_deleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

// One line of CLUSTER NODES.
struct cluster_node_info {
  std::string id, master_id;  // master_id: "-" for a master
  int port = 0;
  bool master = false, failed = false, myself = false;
  std::vector<std::pair<int, int>> ranges;
};

class redis_cluster {
 public:
  struct options {
    int masters = 3;
    int replicas = 1;                         // per master
    int node_timeout_ms = 2000;               // cluster-node-timeout: failure detection speed
    std::string password;                     // requirepass + masterauth on every node
    std::vector<std::string> extra;           // more redis-server arguments
  };

  explicit redis_cluster(options o) : opt_(std::move(o)) {
    const int n = opt_.masters * (1 + opt_.replicas);
    for (int i = 0; i < n; ++i) {
      const int bus = free_loopback_port();
      int port = free_loopback_port();
      while (port == bus || port > 55535) port = free_loopback_port();
      std::vector<std::string> args = {"--cluster-enabled", "yes", "--cluster-port", std::to_string(bus),
                                       "--cluster-config-file", (dir_.path / ("nodes-" + std::to_string(port) + ".conf")).string(),
                                       "--cluster-node-timeout", std::to_string(opt_.node_timeout_ms),
                                       "--dir", dir_.path.string(), "--cluster-replica-validity-factor", "0"};
      if (!opt_.password.empty()) args.insert(args.end(), {"--requirepass", opt_.password, "--masterauth", opt_.password});
      args.insert(args.end(), opt_.extra.begin(), opt_.extra.end());
      nodes_.push_back(std::make_unique<redis_server>(args, port));
      bus_.push_back(bus);
    }
    std::string cmd = "redis-cli";
    if (!opt_.password.empty()) cmd += " --no-auth-warning -a '" + opt_.password + "'";
    cmd += " --cluster create";
    for (int m = 0; m < opt_.masters; ++m) cmd += " 127.0.0.1:" + std::to_string(nodes_[m]->port());
    cmd += " --cluster-replicas 0 --cluster-yes >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("redis-cli --cluster create failed");
    for (std::size_t r = std::size_t(opt_.masters); r < nodes_.size(); ++r) attach_replica(r, r % std::size_t(opt_.masters));
    if (!wait_converged(std::chrono::seconds(20))) throw std::runtime_error("the cluster did not converge");
    if (!wait_replicas_synced(std::chrono::seconds(20))) throw std::runtime_error("the replicas did not sync");
  }
  redis_cluster(const redis_cluster&) = delete;
  redis_cluster& operator=(const redis_cluster&) = delete;

  std::size_t size() const { return nodes_.size(); }
  int port(std::size_t i) const { return nodes_[i]->port(); }
  bool running(std::size_t i) const { return nodes_[i]->running(); }
  const options& opts() const { return opt_; }
  std::vector<cluster_node_address> seeds() const {
    std::vector<cluster_node_address> s;
    for (auto& n : nodes_) s.push_back({"127.0.0.1", n->port()});
    return s;
  }
  std::size_t index_of(int port) const {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i]->port() == port) return i;
    throw std::runtime_error("no node on port " + std::to_string(port));
  }

  // A command on node i (a fresh connection, authenticated); nullptr if the node does not answer.
  reply_ptr command(std::size_t i, const std::vector<std::string>& args) const {
    const timeval tv{2, 0};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", nodes_[i]->port(), tv);
    if (c == nullptr || c->err) {
      if (c) redisFree(c);
      return nullptr;
    }
    redisSetTimeout(c, tv);
    if (!opt_.password.empty()) freeReplyObject(redisCommand(c, "AUTH %s", opt_.password.c_str()));
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    reply_ptr r(static_cast<redisReply*>(redisCommandArgv(c, int(args.size()), argv.data(), lens.data())));
    redisFree(c);
    return r;
  }
  std::string text(std::size_t i, const std::vector<std::string>& args) const {
    reply_ptr r = command(i, args);
    return r && r->str ? std::string(r->str, r->len) : std::string();
  }

  // CLUSTER NODES as seen by node i.
  std::vector<cluster_node_info> nodes_seen_by(std::size_t i) const {
    std::vector<cluster_node_info> out;
    std::istringstream in(text(i, {"CLUSTER", "NODES"}));
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      cluster_node_info n;
      std::string addr, flags, ping, pong, epoch, link, range;
      f >> n.id >> addr >> flags >> n.master_id >> ping >> pong >> epoch >> link;
      n.port = std::atoi(addr.substr(addr.rfind(':', addr.find('@')) + 1).c_str());
      n.master = flags.find("master") != std::string::npos;
      n.myself = flags.find("myself") != std::string::npos;
      n.failed = flags.find("fail") != std::string::npos;  // fail or fail?
      while (f >> range) {
        if (range.front() == '[') continue;  // a slot being migrated
        const std::size_t dash = range.find('-');
        const int a = std::atoi(range.c_str());
        n.ranges.emplace_back(a, dash == std::string::npos ? a : std::atoi(range.c_str() + dash + 1));
      }
      out.push_back(std::move(n));
    }
    return out;
  }
  std::string id_of(std::size_t i) const { return text(i, {"CLUSTER", "MYID"}); }

  // Index of the master serving `slot`, according to node `asked` (any running node by default).
  std::size_t master_of_slot(std::uint16_t slot) const {
    for (const cluster_node_info& n : nodes_seen_by(any_running()))
      if (n.master && !n.failed)
        for (auto [a, b] : n.ranges)
          if (slot >= a && slot <= b) return index_of(n.port);
    throw std::runtime_error("no master for slot " + std::to_string(slot));
  }
  std::vector<std::size_t> masters() const {
    std::vector<std::size_t> m;
    for (const cluster_node_info& n : nodes_seen_by(any_running()))
      if (n.master && !n.failed && !n.ranges.empty()) m.push_back(index_of(n.port));
    std::sort(m.begin(), m.end());
    return m;
  }
  // A running replica of master `m`.
  std::size_t replica_of(std::size_t m) const {
    const std::string id = id_of(m);
    for (const cluster_node_info& n : nodes_seen_by(m))
      if (n.master_id == id && !n.failed && running(index_of(n.port))) return index_of(n.port);
    throw std::runtime_error("master has no running replica");
  }
  std::size_t any_running() const {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i]->running()) return i;
    throw std::runtime_error("no node running");
  }

  void kill(std::size_t i, int sig = SIGKILL) { nodes_[i]->stop(sig); }
  void restart(std::size_t i) { nodes_[i]->start(); }

  // True once every running node reports cluster_state:ok, sees `masters` masters not flagged
  // failing (fail or fail?) covering all 16384 slots, and flags exactly the stopped nodes failing.
  bool converged() const {
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (!nodes_[i]->running()) continue;
      if (text(i, {"CLUSTER", "INFO"}).find("cluster_state:ok") == std::string::npos) return false;
      std::size_t slots = 0, masters = 0;
      for (const cluster_node_info& n : nodes_seen_by(i)) {
        const bool up = running(index_of(n.port));
        if (up == n.failed) return false;  // a running node flagged failed, or a dead one not yet
        if (n.master && !n.failed && !n.ranges.empty()) {
          ++masters;
          for (auto [a, b] : n.ranges) slots += std::size_t(b - a + 1);
        }
      }
      if (slots != detail::cluster_slots || masters != std::size_t(opt_.masters)) return false;
    }
    return true;
  }
  bool wait_converged(std::chrono::milliseconds timeout) const {
    return poll_until(timeout, std::chrono::milliseconds(50), [&] { return converged(); });
  }
  // True once every running replica has applied all its master has written (INFO replication:
  // its slave_repl_offset has reached the master's master_repl_offset).
  bool wait_replicas_caught_up(std::chrono::milliseconds timeout) const {
    auto field = [](const std::string& info, const std::string& name) {
      const std::size_t at = info.find(name + ":");
      return at == std::string::npos ? -1LL : std::atoll(info.c_str() + at + name.size() + 1);
    };
    return poll_until(timeout, std::chrono::milliseconds(20), [&] {
      return every_running_replica([&](const std::string& info) {
        const std::size_t m = index_of(int(field(info, "master_port")));
        return field(info, "slave_repl_offset") >= field(text(m, {"INFO", "replication"}), "master_repl_offset");
      });
    });
  }

  // Node r meets the cluster through master m and becomes m's replica.
  void attach_replica(std::size_t r, std::size_t m) {
    const std::string master_id = id_of(m);
    (void)command(r, {"CLUSTER", "MEET", "127.0.0.1", std::to_string(port(m)), std::to_string(bus_[m])});
    // REPLICATE needs the master known to r first.
    if (!poll_until(std::chrono::seconds(20), std::chrono::milliseconds(50),
                    [&] { return text(r, {"CLUSTER", "REPLICATE", master_id}) == "OK"; }))
      throw std::runtime_error("a replica could not attach to its master");
  }

  // True once every running replica's link to its master is up and caught up (master_link_status).
  bool wait_replicas_synced(std::chrono::milliseconds timeout) const {
    return poll_until(timeout, std::chrono::milliseconds(50), [&] {
      return every_running_replica([](const std::string& info) { return info.find("master_link_status:up") != std::string::npos; });
    });
  }

 private:
  // Calls pred every `period` until it holds (true) or `timeout` has passed (false).
  template <class Pred>
  static bool poll_until(std::chrono::milliseconds timeout, std::chrono::milliseconds period, Pred&& pred) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (pred()) return true;
      std::this_thread::sleep_for(period);
    }
    return false;
  }
  // True when ok(info) holds for each running replica (info: its INFO replication), asked in node
  // order up to the first that fails.
  template <class Ok>
  bool every_running_replica(Ok&& ok) const {
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (!running(i)) continue;
      const std::string info = text(i, {"INFO", "replication"});
      if (info.find("role:slave") != std::string::npos && !ok(info)) return false;
    }
    return true;
  }

  options opt_;
  temp_dir dir_;
  std::vector<std::unique_ptr<redis_server>> nodes_;
  std::vector<int> bus_;  // each node's cluster bus port
};

}  // namespace kvtier::testing
