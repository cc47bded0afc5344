#pragma once
// kvtier: needs-hiredis
// redis_connection: one TCP connection to a Redis server. hiredis connects; the handshake (AUTH or
// PING, then CONFIG GET proto-max-bulk-len, pipelined: one round trip, bounded by the connect
// timeout) says whether the server will serve us and the largest value it accepts. After that the
// socket is used directly: send_all (sendmsg) and receive (recv into a resp_reader, or in place).
// When the server refuses us, the reason in its own words (NOAUTH ..., WRONGPASS ...) is kept in
// last_error().
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "kvtier/core/error.hpp"
#include "kvtier/storage/detail/redis_reply.hpp"
#include "kvtier/storage/detail/resp_reader.hpp"

namespace kvtier::detail {

struct redis_endpoint {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string user;      // ACL user; empty: the default user
  std::string password;  // empty: no AUTH
  std::chrono::milliseconds connect_timeout{500};  // TCP connect, and the whole handshake
  std::chrono::milliseconds io_timeout{2000};      // the socket's send timeout afterwards
  bool readonly = false;  // Redis Cluster: READONLY, so that a replica serves reads of its master's slots
};

class redis_connection {
 public:
  redis_connection() = default;
  redis_connection(const redis_connection&) = delete;
  redis_connection& operator=(const redis_connection&) = delete;
  ~redis_connection() { close(); }

  // Connects and runs the handshake. connection_lost with EACCES: the server refused our
  // credentials (or their absence); last_error() holds its reply.
  error open(const redis_endpoint& ep) noexcept {
    close();
    redisContext* c = redisConnectWithTimeout(ep.host.c_str(), ep.port, timeval_of(ep.connect_timeout));
    if (c == nullptr) return make_error(errc::connection_lost, ENOMEM);
    if (c->err) {
      note(c->errstr);
      const int e = c->err == REDIS_ERR_IO && errno != 0 ? errno : ECONNREFUSED;
      redisFree(c);
      return make_error(errc::connection_lost, e);
    }
    ctx_ = c;
    const int one = 1;
    ::setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    redisEnableKeepAlive(c);
    redisSetTimeout(c, timeval_of(ep.connect_timeout));
    const error e = handshake(ep);
    if (e.code != errc::ok) {
      close();
      return e;
    }
    redisSetTimeout(c, timeval_of(ep.io_timeout));
    return {};
  }
  void close() noexcept {
    if (ctx_ != nullptr) redisFree(ctx_);
    ctx_ = nullptr;
  }
  bool is_open() const noexcept { return ctx_ != nullptr; }
  int fd() const noexcept { return ctx_ != nullptr ? ctx_->fd : -1; }
  // The server's proto-max-bulk-len: the largest value it accepts. 0: unknown (CONFIG refused).
  std::size_t max_bulk() const noexcept { return max_bulk_; }

  // The last refusal or error reply, in the server's words ("" if none).
  std::string_view last_error() const noexcept { return {last_error_, last_error_len_}; }
  void note(std::string_view why) noexcept {
    last_error_len_ = std::min(why.size(), sizeof last_error_);
    std::memcpy(last_error_, why.data(), last_error_len_);
  }

  // Receives what the socket holds: into `direct` when given (a value's bytes, with nothing
  // buffered in the reader: see resp_reader::bulk_arrived), else into the reader's buffer. The
  // bytes received (0: none yet), or an error: the peer closed (connection_lost, ECONNRESET), the
  // socket failed, or a line fills the reader's whole buffer (io_error, EPROTO).
  result<std::size_t> receive(resp_reader& reader, std::span<std::byte> direct) noexcept {
    ssize_t got;
    if (!direct.empty()) {
      got = ::recv(fd(), direct.data(), direct.size(), 0);
      if (got > 0) reader.bulk_arrived(std::size_t(got));
    } else {
      const std::span<char> room = reader.space();
      if (room.empty()) return make_error(errc::io_error, EPROTO);
      got = ::recv(fd(), room.data(), room.size(), 0);
      if (got > 0) reader.filled(std::size_t(got));
    }
    if (got > 0) return std::size_t(got);
    if (got == 0) return make_error(errc::connection_lost, ECONNRESET);
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) return std::size_t(0);
    return make_error(errc::connection_lost, errno);
  }

  // Writes every byte of iov (blocking, bounded by the socket's send timeout). iov is consumed.
  error send_all(iovec* iov, int n) noexcept {
    while (n > 0) {
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = std::size_t(n);
      const ssize_t w = ::sendmsg(fd(), &msg, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? make_error(errc::timeout, errno)
                                                       : make_error(errc::connection_lost, errno);
      }
      std::size_t left = std::size_t(w);
      while (n > 0 && left >= iov->iov_len) {
        left -= iov->iov_len;
        ++iov;
        --n;
      }
      if (n > 0) {
        iov->iov_base = static_cast<char*>(iov->iov_base) + left;
        iov->iov_len -= left;
      }
    }
    return {};
  }

 private:
  static timeval timeval_of(std::chrono::milliseconds ms) noexcept {
    return timeval{time_t(ms.count() / 1000), suseconds_t(ms.count() % 1000 * 1000)};
  }

  error handshake(const redis_endpoint& ep) noexcept {
    if (ep.password.empty()) redisAppendCommand(ctx_, "PING");
    else if (ep.user.empty()) redisAppendCommand(ctx_, "AUTH %b", ep.password.data(), ep.password.size());
    else redisAppendCommand(ctx_, "AUTH %b %b", ep.user.data(), ep.user.size(), ep.password.data(), ep.password.size());
    redisAppendCommand(ctx_, "CONFIG GET proto-max-bulk-len");
    if (ep.readonly) redisAppendCommand(ctx_, "READONLY");
    error e{};
    max_bulk_ = 0;
    for (int i = 0; i < (ep.readonly ? 3 : 2); ++i) {
      void* raw = nullptr;
      if (redisGetReply(ctx_, &raw) != REDIS_OK || raw == nullptr) {
        note(ctx_->errstr);
        return make_error(errc::connection_lost, ctx_->err == REDIS_ERR_IO && errno != 0 ? errno : ECONNRESET);
      }
      auto* r = static_cast<redisReply*>(raw);
      if (i == 0 && r->type == REDIS_REPLY_ERROR) {  // refused: keep the server's reason
        note(std::string_view(r->str, r->len));
        e = redis_reply_error(std::string_view(r->str, r->len));
        if (e.code == errc::io_error) e = make_error(errc::connection_lost, EACCES);
      } else if (i == 0 && r->type != REDIS_REPLY_STATUS) {
        note("unexpected reply to AUTH/PING: not a Redis server?");
        e = make_error(errc::io_error, EPROTO);
      } else if (i == 1 && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
        std::size_t v = 0;
        const char* s = r->element[1]->str;
        if (std::from_chars(s, s + r->element[1]->len, v).ec == std::errc{}) max_bulk_ = v;
      } else if (i == 2 && r->type != REDIS_REPLY_STATUS && e.code == errc::ok) {  // not a cluster node, or refused
        note(r->type == REDIS_REPLY_ERROR ? std::string_view(r->str, r->len) : std::string_view("unexpected reply to READONLY"));
        e = make_error(errc::connection_lost, ENOTSUP);
      }  // CONFIG refused (ACL, renamed command): the limit stays unknown
      freeReplyObject(r);
    }
    return e;
  }

  redisContext* ctx_ = nullptr;
  std::size_t max_bulk_ = 0;
  char last_error_[200]{};
  std::size_t last_error_len_ = 0;
};

}  // namespace kvtier::detail
