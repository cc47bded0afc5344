#pragma once
// kvtier: needs-hiredis
// redis_cluster_tier: pages in a Redis Cluster, the same values (header ‖ payload) under the same
// `<prefix>:<namespace>:<key>` keys as redis_tier. From a list of seed nodes it discovers the
// cluster (CLUSTER SHARDS, or CLUSTER SLOTS before Redis 7), routes each page to its hash slot's
// master, and pipelines every node's requests at once: one batch fans out to all masters over
// non-blocking sockets polled together, in the caller's thread. MOVED updates the slot map (and a
// refresh follows); ASK retries once on the importing node after ASKING. A node lost mid-batch
// fails its requests in flight (connection_lost), the map is refreshed, and once a replica is
// promoted its slots are served again: pages it holds are served, pages the failover lost are
// misses. Every read is verified like redis_tier's (detail::verify_read): never wrong data.
// Not thread-safe: one tier per thread.
//
// Layers (storage/detail/): cluster_hash_slot (CRC16, hash tags), cluster_topology (shards, slot
// map, redirections), cluster_request (command framing, reply verdicts), cluster_connection (one
// node: its queue, sent without blocking, and replies); shared with redis_tier: resp_writer,
// resp_reader, redis_connection, verify_read. Replies are checked against their command.
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kvtier/codec/concepts.hpp"
#include "kvtier/codec/identity.hpp"
#include "kvtier/codec/kv_page.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/storage/detail/cluster_connection.hpp"
#include "kvtier/storage/detail/cluster_hash_slot.hpp"
#include "kvtier/storage/detail/cluster_request.hpp"
#include "kvtier/storage/detail/cluster_topology.hpp"
#include "kvtier/storage/detail/redis_tier_base.hpp"
#include "kvtier/storage/redis_cluster_config.hpp"

namespace kvtier {

template <page_codec Codec = identity_codec>
class redis_cluster_tier : public detail::redis_tier_base<redis_cluster_tier<Codec>, redis_cluster_tier_config, Codec> {
  using base = detail::redis_tier_base<redis_cluster_tier<Codec>, redis_cluster_tier_config, Codec>;
  friend base;  // calls progress()
  using base::cfg_, base::codec_, base::max_payload_, base::stats_;
  using typename base::clock;

 public:
  using kvtier_storage_backend = storage_backend_tag;

  // Throws config_error for a bad configuration only; an unreachable cluster is a run-time event.
  explicit redis_cluster_tier(redis_cluster_tier_config cfg)
      : redis_cluster_tier(cfg, default_tier_codec<Codec>(cfg.shape, cfg.page_bytes)) {}
  // With a codec built for this tier's pages (a cachegen codec and its profile, say).
  redis_cluster_tier(redis_cluster_tier_config cfg, Codec codec) : base(std::move(cfg), std::move(codec)) {
    endpoint_ = {"", 0, cfg_.user, cfg_.password, cfg_.connect_timeout, cfg_.io_timeout, cfg_.read_from_replicas};
    for (const auto& s : cfg_.seeds) (void)node_of(s);
  }
  redis_cluster_tier(const redis_cluster_tier&) = delete;
  redis_cluster_tier& operator=(const redis_cluster_tier&) = delete;
  ~redis_cluster_tier() { for (std::uint16_t n = 0; n < nodes_.size(); ++n) fail_node(n, make_error(errc::cancelled), false); }

  result<void> put(std::span<const page_write> writes, storage_batch& batch) noexcept { return submit(writes, batch, detail::cluster_op::set); }
  result<void> get(std::span<const page_read> reads, storage_batch& batch) noexcept { return submit(reads, batch, detail::cluster_op::get); }
  result<void> contains(std::span<const page_address> where, storage_batch& batch) noexcept { return submit(where, batch, detail::cluster_op::exists); }
  result<void> erase(std::span<const page_address> where, storage_batch& batch) noexcept { return submit(where, batch, detail::cluster_op::del); }

  // poll(), wait(), shape(), page_bytes(), usage(), stats(), config(), key_of(): redis_tier_base.
  redis_cluster_stats cluster_stats() const noexcept { return cluster_stats_; }
  // The hash slot of a page's key.
  std::uint16_t slot_of(const page_address& a) const { return detail::cluster_hash_slot(this->key_of(a)); }
  // The node the slot map routes a slot to now (nullopt before discovery).
  std::optional<cluster_node_address> node_for_slot(std::uint16_t slot) const {
    const std::uint16_t n = slots_[slot];
    if (n == detail::cluster_slot_map::unknown) return std::nullopt;
    return nodes_[n]->address();
  }
  // Nodes known (seeds, discovered masters, redirection targets) and slots mapped to a node.
  std::size_t known_nodes() const noexcept { return nodes_.size(); }
  std::size_t mapped_slots() const noexcept { return slots_.covered(); }

  // Loads the slot map from the first node that answers (known masters first, then the seeds,
  // then any other node known). Blocking: at most connect_timeout per node tried.
  result<void> refresh() noexcept {
    try {
      std::vector<std::uint16_t> order;
      for (std::uint16_t n = 0; n < nodes_.size(); ++n)
        if (nodes_[n]->connected()) order.push_back(n);
      for (std::uint16_t n = 0; n < nodes_.size(); ++n)
        if (!nodes_[n]->connected()) order.push_back(n);
      last_refresh_ = clock::now();
      for (const std::uint16_t n : order) {
        const auto shards = detail::query_cluster_shards(nodes_[n]->address(), cfg_.user, cfg_.password, cfg_.connect_timeout);
        if (!shards || shards->empty()) continue;
        detail::cluster_slot_map map;
        for (const auto& s : *shards) {
          const std::uint16_t m = node_of(s.master);
          const std::uint16_t r = cfg_.read_from_replicas && !s.replicas.empty() ? node_of(s.replicas.front()) : map.unknown;
          for (auto [a, b] : s.ranges) map.assign(a, b, m, r);
        }
        slots_ = map;
        refresh_due_ = false;
        ++cluster_stats_.refreshes;
        return {};
      }
    } catch (...) {  // out of memory
      return make_error(errc::capacity_exhausted, ENOMEM);
    }
    refresh_due_ = true;
    return make_error(errc::connection_lost);
  }

 private:
  using op = detail::cluster_op;
  using request = detail::cluster_request;
  using node = detail::cluster_connection;

  // ---- topology --------------------------------------------------------------------------------
  std::uint16_t node_of(const cluster_node_address& a) {
    for (std::uint16_t n = 0; n < nodes_.size(); ++n)
      if (nodes_[n]->address() == a) return n;
    nodes_.push_back(std::make_unique<node>(a, std::size_t(256) << 10));
    return std::uint16_t(nodes_.size() - 1);
  }

  void maybe_refresh() noexcept {
    // Rate-limited even while nothing is mapped: an unreachable cluster costs a refresh per refresh_min.
    if ((refresh_due_ || slots_.covered() == 0) && clock::now() - last_refresh_ >= cfg_.refresh_min) (void)refresh();
  }

  // ---- submission ------------------------------------------------------------------------------
  template <class Request>
  result<void> submit(std::span<const Request> requests, storage_batch& batch, op kind) noexcept {
    if (!batch.begin(requests.size())) return make_error(errc::busy);
    maybe_refresh();
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const Request& r = requests[i];
      request q;
      q.op = kind;
      q.batch = &batch;
      q.index = i;
      if constexpr (std::is_same_v<Request, page_address>) {
        q.where = r;
      } else {
        q.where = r.where;
        q.tokens_fp = r.tokens_fingerprint;
        if (kind == op::get) ++stats_.gets;
        if (r.payload.size() != cfg_.page_bytes) {
          finish(q, make_error(errc::invalid_argument));
          continue;
        }
      }
      if constexpr (std::is_same_v<Request, page_read>) q.out = r.payload;
      if constexpr (std::is_same_v<Request, page_write>) {
        q.page_bytes = r.payload.size();
        q.payload = r.payload;
        if constexpr (!is_identity_codec_v<Codec>) {
          try {
            q.encoded.resize(max_payload_);
          } catch (...) {
            finish(q, make_error(errc::capacity_exhausted, ENOMEM));
            continue;
          }
          const result<std::size_t> n = codec_.encode(r.payload, q.encoded);
          if (!n) {
            finish(q, n.err());
            continue;
          }
          q.payload = std::span<const std::byte>(q.encoded.data(), *n);
        }
        q.header = make_page_header(cfg_.shape, q.where, q.tokens_fp, Codec::id, q.payload, q.page_bytes, ++sequence_);
      }
      char key[192];
      const std::size_t key_len = detail::format_page_key(cfg_.prefix, q.where, key);
      q.slot = detail::cluster_hash_slot(std::string_view(key, key_len));
      const std::uint16_t replica = reads_replica(q) ? slots_.replica(q.slot) : detail::cluster_slot_map::unknown;
      const std::uint16_t n = replica != detail::cluster_slot_map::unknown ? replica : slots_[q.slot];
      if (n == detail::cluster_slot_map::unknown) {  // not discovered (the whole cluster unreachable)
        finish(q, make_error(errc::connection_lost, EHOSTUNREACH));
        continue;
      }
      route(std::move(q), n);
    }
    for (std::uint16_t n = 0; n < nodes_.size(); ++n) flush(n);
    return {};
  }

  // Queues `q` on node n (connecting it if needed), or completes it with the reason it cannot go.
  void route(request&& q, std::uint16_t n) noexcept {
    node& to = *nodes_[n];
    if (const error e = to.open(endpoint_, cfg_.reconnect_min, cfg_.reconnect_max); e.code != errc::ok) {
      refresh_due_ = true;
      const std::uint16_t master = slots_[q.slot];
      if (reads_replica(q) && master != n && master != detail::cluster_slot_map::unknown && q.redirects == 0)
        return route(std::move(q), master);  // the replica is down: its master serves the read
      finish(q, e);
      return;
    }
    if (!detail::frame_request(q, cfg_.prefix, cfg_.ttl)) {
      finish(q, make_error(errc::invalid_argument, ENAMETOOLONG));
      return;
    }
    if (q.op == op::set && to.max_bulk() != 0 && page_header_bytes + q.payload.size() > to.max_bulk()) {
      to.note("a value over the node's proto-max-bulk-len");  // Redis would drop the connection
      finish(q, make_error(errc::invalid_argument, EMSGSIZE));
      return;
    }
    try {
      if (to.pending.empty()) to.last_progress = clock::now();
      to.pending.push_back(std::move(q));
    } catch (...) {
      finish(q, make_error(errc::capacity_exhausted, ENOMEM));
    }
  }

  // A read a replica may serve (with read_from_replicas).
  bool reads_replica(const request& q) const noexcept {
    return cfg_.read_from_replicas && (q.op == op::get || q.op == op::exists);
  }

  void flush(std::uint16_t n) noexcept {
    node& to = *nodes_[n];
    if (!to.connected() || !to.unsent()) return;
    if (const result<std::size_t> r = to.flush(); !r) fail_node(n, r.err(), true);
  }

  // Completes every request queued on node n with `e` and closes its connection.
  void fail_node(std::uint16_t n, error e, bool count) noexcept {
    node& to = *nodes_[n];
    if (count && !to.pending.empty()) ++cluster_stats_.node_failures;
    if (to.connected()) to.back_off(cfg_.reconnect_min, cfg_.reconnect_max);
    to.close();
    while (!to.pending.empty()) {
      const request q = to.pop_front();
      finish(q, e);
    }
    refresh_due_ = true;
  }

  void finish(const request& q, error e) noexcept {
    this->complete(*q.batch, q.index, q.op, q.op == op::get ? q.out.size() : q.page_bytes, e);
  }

  // ---- replies ---------------------------------------------------------------------------------
  // What each command may be answered with (as redis_tier checks): SET +OK; GET a bulk or null;
  // EXISTS and DEL an integer >= 0; ASKING +OK; any command an error reply (MOVED and ASK are
  // followed). Anything else drops the node's connection (io_error, EPROTO) unread.
  error check_get(const request& q, const detail::cluster_value& v) noexcept {
    return v.verify(codec_, this->expectation(q.where, q.tokens_fp), q.out, stats_);
  }
  bool begin_value(node& c, const request& q, std::size_t len) noexcept {
    return c.value.begin(len, q.out, is_identity_codec_v<Codec>, max_payload_);
  }

  // A redirection: MOVED updates the slot map (a full refresh follows at the next submission); ASK
  // asks once. The request goes again, to its new node.
  void redirect(request&& q, const detail::cluster_redirect& r) noexcept {
    if (q.redirects >= cfg_.max_redirects) {
      finish(q, make_error(errc::io_error, ELOOP));
      return;
    }
    std::uint16_t to = 0;
    try {
      to = node_of(r.to);
    } catch (...) {
      finish(q, make_error(errc::capacity_exhausted, ENOMEM));
      return;
    }
    ++q.redirects;
    ++(r.ask ? cluster_stats_.asked : cluster_stats_.moved);
    if (!r.ask) slots_.assign(r.slot, to);
    refresh_due_ = refresh_due_ || !r.ask;
    q.asking = r.ask;
    route(std::move(q), to);
  }

  bool protocol_error(std::uint16_t n, std::string_view why) noexcept {
    nodes_[n]->note(why);
    fail_node(n, make_error(errc::io_error, EPROTO), true);
    return false;
  }

  // Handles the replies buffered for node n. Returns false if its connection was dropped.
  bool drain(std::uint16_t n, std::size_t& completed) noexcept {
    using detail::resp_type;
    node& c = *nodes_[n];
    while (!c.pending.empty()) {
      if (c.value.active) {  // a GET value's body
        while (c.reader.bulk_left() > 0 && c.reader.buffered() > 0) {
          const std::span<std::byte> to = c.value.target();
          c.value.got += to.empty() ? c.reader.skip_bulk() : c.reader.read_bulk(to);
        }
        const detail::resp_status s = c.reader.finish_bulk();
        if (s == detail::resp_status::malformed) return protocol_error(n, "no CRLF after a value");
        if (s != detail::resp_status::item) return true;
        const request q = c.pop_front();
        const error e = check_get(q, c.value);
        c.value.reset();
        finish(q, e);
        ++completed;
        continue;
      }
      detail::resp_item it;
      const detail::resp_status s = c.reader.next(it);
      if (s == detail::resp_status::need_more) return true;
      if (s != detail::resp_status::item) return protocol_error(n, "a malformed reply or a length over the limits");
      request& front = c.pending.front();
      if (front.asking) {  // the reply to ASKING; the command's own reply follows
        if (it.type != resp_type::simple || it.text != "OK") return protocol_error(n, "ASKING refused");
        front.asking = false;
        continue;
      }
      if (it.type == resp_type::error) {
        if (const auto r = detail::parse_redirect(it.text, c.address().host)) {
          redirect(c.pop_front(), *r);
          continue;
        }
        c.note(it.text);
        const std::uint16_t master = slots_[front.slot];
        if (reads_replica(front) && master != n && master != detail::cluster_slot_map::unknown && front.redirects < cfg_.max_redirects) {
          request q = c.pop_front();  // a replica that cannot serve (LOADING, MASTERDOWN): its master can
          ++q.redirects;
          route(std::move(q), master);
          continue;
        }
      }
      if (front.op == op::get && it.type == resp_type::bulk) {
        if (!begin_value(c, front, std::size_t(it.value))) {
          fail_node(n, make_error(errc::capacity_exhausted, ENOMEM), true);
          return false;
        }
        continue;
      }
      const auto [valid, e] = detail::verdict_of_reply(front.op, it);
      if (!valid) return protocol_error(n, "a reply of the wrong type for the command");
      const request q = c.pop_front();
      finish(q, e);
      ++completed;
    }
    return true;
  }

  // Reads what node n's socket has and handles the replies. Returns false if it was dropped.
  bool read_node(std::uint16_t n, std::size_t& completed) noexcept {
    node& c = *nodes_[n];
    for (int round = 0; round < 64 && c.connected(); ++round) {
      // A large value body with nothing buffered goes from the socket straight to its page.
      std::span<std::byte> direct;
      if (c.value.active && c.value.got >= page_header_bytes && c.reader.buffered() == 0) direct = c.value.target();
      const bool straight = direct.size() >= 4096;
      const result<std::size_t> got = c.receive(straight ? direct : std::span<std::byte>());
      if (!got) {
        fail_node(n, got.err(), true);
        return false;
      }
      if (*got == 0) return true;
      if (straight) c.value.got += *got;
      if (!drain(n, completed)) return false;
    }
    return true;
  }

  // Completes buffered replies, then polls every node with requests due (sending what is queued,
  // reading what arrives) until `target` is done, nothing is due, or `timeout` passes.
  std::size_t progress(std::chrono::milliseconds timeout, const storage_batch* target) noexcept {
    std::size_t completed = 0;
    const auto deadline = clock::now() + timeout;
    auto& fds = fds_;
    auto& who = who_;
    for (;;) {
      fds.clear();
      who.clear();
      const auto now = clock::now();
      auto wait_ms = std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count());
      for (std::uint16_t n = 0; n < nodes_.size(); ++n) {
        node& c = *nodes_[n];
        if (c.pending.empty()) continue;
        if (!c.connected()) {  // requests queued by a redirection to a node that is now down
          fail_node(n, make_error(errc::connection_lost), true);
          continue;
        }
        if (now - c.last_progress >= cfg_.io_timeout) {
          fail_node(n, make_error(errc::timeout, ETIMEDOUT), true);
          continue;
        }
        const auto stall_left = std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.io_timeout - (now - c.last_progress)).count() + 1;
        wait_ms = std::min<std::int64_t>(wait_ms, stall_left);
        try {
          fds.push_back({c.fd(), short(POLLIN | (c.unsent() ? POLLOUT : 0)), 0});
          who.push_back(n);
        } catch (...) {
          return completed;
        }
      }
      if (target != nullptr && target->done()) break;
      if (fds.empty()) break;
      const int ready = ::poll(fds.data(), nfds_t(fds.size()), int(wait_ms));
      if (ready < 0 && errno != EINTR) break;
      for (std::size_t k = 0; ready > 0 && k < fds.size(); ++k) {
        const std::uint16_t n = who[k];
        if (fds[k].revents & POLLOUT) flush(n);
        if ((fds[k].revents & (POLLIN | POLLERR | POLLHUP)) && nodes_[n]->connected()) (void)read_node(n, completed);
      }
      if (target != nullptr && target->done()) break;
      if (ready == 0 && clock::now() >= deadline) break;
    }
    return completed;
  }

  detail::redis_endpoint endpoint_;
  std::vector<std::unique_ptr<node>> nodes_;
  std::vector<pollfd> fds_;  // progress(): the sockets polled
  std::vector<std::uint16_t> who_;  // and their nodes
  detail::cluster_slot_map slots_;
  bool refresh_due_ = true;
  clock::time_point last_refresh_{};
  std::uint64_t sequence_ = 0;
  redis_cluster_stats cluster_stats_{};
};

static_assert(storage_backend<redis_cluster_tier<>>);

}  // namespace kvtier
