#pragma once
// kvtier: needs-hiredis
// One Redis Cluster node as the cluster tier sees it: a redis_connection (hiredis connects, the
// handshake authenticates), used non-blocking afterwards; the requests queued for it in send
// order and how far they are sent; a RESP reader for its replies and the GET value in progress. Every node's socket is polled together, so a batch's requests go
// out to all nodes and their replies come back concurrently, in one thread.
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/detail/cluster_request.hpp"
#include "kvtier/storage/detail/cluster_topology.hpp"
#include "kvtier/storage/detail/redis_connection.hpp"
#include "kvtier/storage/detail/resp_reader.hpp"
#include "kvtier/storage/detail/verify_read.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/request.hpp"

namespace kvtier::detail {

// The GET value a node is sending now (each node's values arrive independently of the others'):
// its 96-byte header, then its payload into the caller's page or the node's scratch.
struct cluster_value {
  std::size_t len = 0, got = 0;
  page_header header{};
  std::span<std::byte> into;       // where the payload goes; empty: skipped (no page of ours)
  bool active = false;
  std::vector<std::byte> scratch;  // values of another size or codec

  // Starts a value of value_len bytes: its payload goes into the caller's page `out` when it has the
  // size of an identity-coded page, else into scratch; a value no page of ours can be (shorter than
  // a header, longer than a header and the codec's bound) is skipped after its header. False: no
  // memory for scratch.
  bool begin(std::size_t value_len, std::span<std::byte> out, bool identity, std::size_t max_payload) noexcept {
    len = value_len;
    got = 0;
    into = {};
    active = true;
    if (len < page_header_bytes || len > page_header_bytes + max_payload) return true;
    if (identity && len == page_header_bytes + out.size()) {
      into = out;
      return true;
    }
    try {
      if (scratch.size() < max_payload) scratch.resize(max_payload);
    } catch (...) {
      return false;
    }
    into = std::span<std::byte>(scratch).first(len - page_header_bytes);
    return true;
  }
  // The verdict on the complete value (verify_read, as every tier), counted in `stats`.
  template <page_codec Codec>
  error verify(const Codec& codec, const page_expectation& want, std::span<std::byte> out, storage_stats& stats) const noexcept {
    if (len < page_header_bytes || len > page_header_bytes + want.max_payload_bytes) {  // cannot be a page of ours
      const page_verdict v = len < page_header_bytes ? page_verdict::corrupted : check_page_header(header, want);
      ++(v == page_verdict::foreign ? stats.foreign : stats.corrupted);
      return make_error(errc::corrupted);
    }
    return verify_read(codec, header, std::span<const std::byte>(into.first(len - page_header_bytes)), want, out, stats);
  }
  void reset() noexcept {
    len = got = 0;
    into = {};
    active = false;
  }
  // Where the next body bytes go (empty: skip them).
  std::span<std::byte> target() noexcept {
    if (got < page_header_bytes)
      return std::span<std::byte>(reinterpret_cast<std::byte*>(&header), page_header_bytes)
          .subspan(got, std::min(page_header_bytes, len) - got);
    if (into.empty()) return {};
    return into.subspan(got - page_header_bytes, len - got);
  }
};

class cluster_connection {
 public:
  using clock = std::chrono::steady_clock;

  cluster_connection(cluster_node_address a, std::size_t read_buffer_bytes)
      : reader(resp_limits{.buffer_bytes = read_buffer_bytes}), address_(std::move(a)) {}
  cluster_connection(const cluster_connection&) = delete;
  cluster_connection& operator=(const cluster_connection&) = delete;
  ~cluster_connection() { close(); }

  const cluster_node_address& address() const noexcept { return address_; }
  bool connected() const noexcept { return conn_.is_open(); }
  int fd() const noexcept { return conn_.fd(); }
  std::size_t max_bulk() const noexcept { return conn_.max_bulk(); }
  std::string_view last_error() const noexcept { return conn_.last_error(); }
  void note(std::string_view why) noexcept { conn_.note(why); }
  std::uint64_t connects() const noexcept { return connects_; }
  bool unsent() const noexcept { return sent_ < pending.size(); }

  // Connects and runs redis_connection's handshake (blocking, bounded by the connect timeout)
  // unless a recent failure asks to back off. Data traffic is non-blocking (MSG_DONTWAIT).
  error open(redis_endpoint ep, std::chrono::milliseconds reconnect_min, std::chrono::milliseconds reconnect_max) noexcept {
    if (conn_.is_open()) return {};
    const auto now = clock::now();
    if (now < next_attempt_) return make_error(errc::connection_lost, ECONNREFUSED);
    ep.host = address_.host;
    ep.port = address_.port;
    if (const error e = conn_.open(ep); e.code != errc::ok) {
      back_off(reconnect_min, reconnect_max);
      return e;
    }
    ++connects_;
    backoff_ = reconnect_min;
    last_progress = now;
    return {};
  }

  // Forgets the socket, the reader's bytes and the send position; `pending` is the caller's to fail.
  void close() noexcept {
    conn_.close();
    reader.reset();
    value.reset();
    sent_ = 0;
    sent_bytes_ = 0;
  }
  void back_off(std::chrono::milliseconds reconnect_min, std::chrono::milliseconds reconnect_max) noexcept {
    if (backoff_.count() == 0) backoff_ = reconnect_min;
    next_attempt_ = clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, reconnect_max);
  }

  // Sends queued requests while the socket takes them, never blocking. Returns bytes sent, or an
  // error for a broken socket.
  result<std::size_t> flush() noexcept {
    std::size_t total = 0;
    while (conn_.is_open() && unsent()) {
      iovec iov[64];
      int n = 0;
      std::size_t skip = sent_bytes_;
      for (std::size_t i = sent_; i < pending.size() && n + 4 <= 64; ++i) {
        iovec seg[4];
        const int k = pending[i].segments(seg);
        for (int s = 0; s < k; ++s) {
          if (skip >= seg[s].iov_len) {  // already sent in an earlier, partial send
            skip -= seg[s].iov_len;
            continue;
          }
          iov[n++] = {static_cast<char*>(seg[s].iov_base) + skip, seg[s].iov_len - skip};
          skip = 0;
        }
      }
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = std::size_t(n);
      const ssize_t w = ::sendmsg(conn_.fd(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return make_error(errc::connection_lost, errno);
      }
      total += std::size_t(w);
      advance(std::size_t(w));
    }
    if (total > 0) last_progress = clock::now();
    return total;
  }

  // Receives what the socket has: straight into `direct` (a bulk's destination) when the reader
  // holds no bytes and `direct` is large, else into the reader. Returns bytes received (0: none
  // available), or an error for a closed or broken socket.
  result<std::size_t> receive(std::span<std::byte> direct) noexcept {
    if (!conn_.is_open()) return make_error(errc::connection_lost);
    const bool straight = direct.size() >= 4096 && reader.buffered() == 0;
    const std::span<char> space = reader.space();
    if (!straight && space.empty()) return make_error(errc::io_error, EPROTO);  // a line longer than the buffer
    const ssize_t got = straight ? ::recv(conn_.fd(), direct.data(), direct.size(), MSG_DONTWAIT)
                                 : ::recv(conn_.fd(), space.data(), space.size(), MSG_DONTWAIT);
    if (got == 0) return make_error(errc::connection_lost, ECONNRESET);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) return std::size_t(0);
      return make_error(errc::connection_lost, errno);
    }
    if (straight) reader.bulk_arrived(std::size_t(got));
    else reader.filled(std::size_t(got));
    last_progress = clock::now();
    return std::size_t(got);
  }

  // The front request's reply is complete: it leaves the queue.
  cluster_request pop_front() noexcept {
    cluster_request r = std::move(pending.front());
    pending.pop_front();
    if (sent_ > 0) --sent_;
    return r;
  }

  std::deque<cluster_request> pending;  // in send order; the first sent_ are fully sent
  resp_reader reader;
  cluster_value value;                  // the GET value being received
  clock::time_point last_progress{};

 private:
  void advance(std::size_t bytes) noexcept {
    bytes += sent_bytes_;
    while (sent_ < pending.size()) {
      iovec seg[4];
      const int k = pending[sent_].segments(seg);
      std::size_t len = 0;
      for (int s = 0; s < k; ++s) len += seg[s].iov_len;
      if (bytes < len) break;
      bytes -= len;
      ++sent_;
    }
    sent_bytes_ = bytes;
  }

  cluster_node_address address_;
  redis_connection conn_;
  std::size_t sent_ = 0;        // requests fully sent
  std::size_t sent_bytes_ = 0;  // bytes of request sent_ already sent
  clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_{0};
  std::uint64_t connects_ = 0;
};

}  // namespace kvtier::detail
