#pragma once
// kvtier: needs-hiredis
// redis_tier: pages in a (shared) Redis under `<prefix>:<namespace>:<key>` keys, pipelined batch
// SET/GET/EXISTS/DEL, optional TTL and AUTH (password, or ACL user and password). Connection loss
// and timeouts complete requests with error values; the tier reconnects with exponential backoff.
// Engines sharing one Redis see each other's pages. Not thread-safe: one tier per thread.
//
// hiredis connects, authenticates and parses replies; requests are written straight to the socket
// with writev, so a page's bytes go from the caller's buffer to the kernel without a copy.
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/codec/concepts.hpp"
#include "kvtier/codec/identity.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/request.hpp"
#include "kvtier/storage/stats.hpp"

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
  std::chrono::milliseconds connect_timeout{500};
  std::chrono::milliseconds io_timeout{2000};        // no reply progress for this long: timeout
  std::chrono::milliseconds reconnect_min{20};       // first backoff after a failure
  std::chrono::milliseconds reconnect_max{2000};     // backoff doubles up to this
};

template <page_codec Codec = identity_codec>
class redis_tier {
 public:
  using kvtier_storage_backend = storage_backend_tag;
  using codec_type = Codec;
  using clock = std::chrono::steady_clock;

  // Throws config_error for a bad configuration only; an unreachable server is a run-time event
  // (requests complete with errc::connection_lost until it is back).
  explicit redis_tier(redis_tier_config cfg) : cfg_(std::move(cfg)) {
    if (cfg_.page_bytes == 0) throw config_error("kvtier: redis_tier with page_bytes 0");
    if (cfg_.port <= 0 || cfg_.port > 65535) throw config_error("kvtier: redis_tier port out of range");
    if (cfg_.prefix.empty() || cfg_.prefix.size() > 128) throw config_error("kvtier: redis_tier key prefix must have 1 to 128 characters");
    if (!cfg_.user.empty() && cfg_.password.empty()) throw config_error("kvtier: redis_tier ACL user without a password");
    if (cfg_.io_timeout.count() <= 0 || cfg_.connect_timeout.count() <= 0)
      throw config_error("kvtier: redis_tier timeouts must be positive");
    if (cfg_.reconnect_min.count() <= 0 || cfg_.reconnect_max < cfg_.reconnect_min)
      throw config_error("kvtier: redis_tier reconnect backoff must satisfy 0 < min <= max");
    max_payload_ = codec_.max_encoded_bytes(cfg_.page_bytes);
    backoff_ = cfg_.reconnect_min;
    read_buf_.resize(std::size_t(1) << 20);
    encode_buf_.resize(Codec{}.max_encoded_bytes(cfg_.page_bytes));
  }
  redis_tier(const redis_tier&) = delete;
  redis_tier& operator=(const redis_tier&) = delete;
  ~redis_tier() { drop_connection(make_error(errc::cancelled)); }

  result<void> put(std::span<const page_write> writes, storage_batch& batch) noexcept {
    return submit(writes, batch);
  }
  result<void> get(std::span<const page_read> reads, storage_batch& batch) noexcept {
    return submit(reads, batch);
  }
  result<void> contains(std::span<const page_address> where, storage_batch& batch) noexcept {
    return submit(where, batch, op_kind::exists);
  }
  result<void> erase(std::span<const page_address> where, storage_batch& batch) noexcept {
    return submit(where, batch, op_kind::del);
  }

  std::size_t poll() noexcept { return progress(std::chrono::milliseconds(0), nullptr); }

  result<void> wait(storage_batch& batch, std::chrono::milliseconds timeout) noexcept {
    const auto deadline = clock::now() + timeout;
    while (!batch.done()) {
      const auto now = clock::now();
      if (now >= deadline) return make_error(errc::timeout);
      progress(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) + std::chrono::milliseconds(1), &batch);
    }
    return {};
  }

  kv_shape shape() const noexcept { return cfg_.shape; }
  std::size_t page_bytes() const noexcept { return cfg_.page_bytes; }
  // Redis holds pages for every engine sharing it: this tier does not know their number.
  storage_usage usage() const noexcept { return {}; }
  storage_stats stats() const noexcept { return stats_; }
  bool connected() const noexcept { return ctx_ != nullptr; }
  std::uint64_t reconnects() const noexcept { return connects_ > 0 ? connects_ - 1 : 0; }
  const redis_tier_config& config() const noexcept { return cfg_; }

  // The Redis key of a page: <prefix>:<namespace as 16 hex digits>:<key as 32 hex digits>.
  std::string key_of(const page_address& a) const {
    char tail[64];
    std::snprintf(tail, sizeof tail, ":%016llx:%016llx%016llx", (unsigned long long)a.ns.raw,
                  (unsigned long long)a.key.hi, (unsigned long long)a.key.lo);
    return cfg_.prefix + tail;
  }

 private:
  enum class op_kind : std::uint8_t { set, get, exists, del };
  struct pending {
    op_kind kind;
    storage_batch* batch;
    std::size_t index;
    page_address where;
    std::uint64_t tokens_fp;
    std::span<std::byte> out;
    std::size_t bytes;  // payload bytes of a set
  };

  static error reply_error(const redisReply* r) noexcept {
    const std::string_view s(r->str ? r->str : "", r->len);
    if (s.starts_with("OOM")) return make_error(errc::capacity_exhausted);
    // Redis refuses large requests of unauthenticated clients with a protocol error, then closes.
    if (s.starts_with("NOAUTH") || s.starts_with("NOPERM") || s.starts_with("WRONGPASS") ||
        s.find("unauthenticated") != std::string_view::npos)
      return make_error(errc::connection_lost, EACCES);
    if (s.starts_with("LOADING") || s.starts_with("BUSY")) return make_error(errc::busy);
    return make_error(errc::io_error);
  }

  // ---- connection ------------------------------------------------------------------------------
  error connect() noexcept {
    if (ctx_ != nullptr) return {};
    const auto now = clock::now();
    if (now < next_attempt_) return make_error(errc::connection_lost);
    const auto tv = [](std::chrono::milliseconds ms) {
      return timeval{time_t(ms.count() / 1000), suseconds_t(ms.count() % 1000 * 1000)};
    };
    redisContext* c = redisConnectWithTimeout(cfg_.host.c_str(), cfg_.port, tv(cfg_.connect_timeout));
    error e{};
    if (c == nullptr) e = make_error(errc::connection_lost, ENOMEM);
    else if (c->err) e = make_error(errc::connection_lost, c->err == REDIS_ERR_IO ? errno : ECONNREFUSED);
    if (e.code == errc::ok) {
      redisSetTimeout(c, tv(cfg_.io_timeout));
      redisEnableKeepAlive(c);
      const int one = 1;
      ::setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (!cfg_.password.empty()) {
        auto* r = static_cast<redisReply*>(
            cfg_.user.empty() ? redisCommand(c, "AUTH %b", cfg_.password.data(), cfg_.password.size())
                              : redisCommand(c, "AUTH %b %b", cfg_.user.data(), cfg_.user.size(),
                                             cfg_.password.data(), cfg_.password.size()));
        if (r == nullptr) e = make_error(errc::connection_lost, ECONNRESET);
        else if (r->type == REDIS_REPLY_ERROR) e = make_error(errc::connection_lost, EACCES);
        if (r != nullptr) freeReplyObject(r);
      }
    }
    if (e.code != errc::ok) {
      if (c != nullptr) redisFree(c);
      next_attempt_ = now + backoff_;
      backoff_ = std::min(backoff_ * 2, cfg_.reconnect_max);
      ++stats_.errors;
      return e;
    }
    ctx_ = c;
    ++connects_;
    backoff_ = cfg_.reconnect_min;
    return {};
  }

  // Fails every request in flight with `e` and forgets the connection; the next call reconnects.
  void drop_connection(error e) noexcept {
    if (ctx_ != nullptr) {
      redisFree(ctx_);
      ctx_ = nullptr;
      next_attempt_ = clock::now() + backoff_;
      backoff_ = std::min(backoff_ * 2, cfg_.reconnect_max);
    }
    while (!pending_.empty()) {
      const pending p = pending_.front();
      pending_.pop_front();
      finish(p, e);
    }
  }

  void finish(const pending& p, error e) noexcept {
    if (p.kind == op_kind::get) {
      if (e.code == errc::ok) {
        ++stats_.hits;
        stats_.bytes_read += p.out.size();
      } else {
        ++stats_.misses;
      }
    } else if (p.kind == op_kind::set && e.code == errc::ok) {
      ++stats_.puts;
      stats_.bytes_written += p.bytes;
    }
    if (e.code != errc::ok && e.code != errc::not_found && e.code != errc::corrupted) ++stats_.errors;
    p.batch->complete(p.index, e);
  }

  // Writes every byte of iov to the socket (blocking, bounded by the socket's send timeout).
  error send_all(iovec* iov, int n) noexcept {
    while (n > 0) {
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = std::size_t(n);
      const ssize_t w = ::sendmsg(ctx_->fd, &msg, MSG_NOSIGNAL);
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

  // ---- submission ------------------------------------------------------------------------------
  template <class Request>
  result<void> submit(std::span<const Request> requests, storage_batch& batch, op_kind kind = op_kind::set) noexcept {
    if (!batch.begin(requests.size())) return make_error(errc::busy);
    if constexpr (std::is_same_v<Request, page_read>) kind = op_kind::get;
    std::size_t i = 0;
    if (const error c = connect(); c.code != errc::ok) {
      for (; i < requests.size(); ++i) {
        pending p{kind, &batch, i, {}, 0, {}, 0};
        if constexpr (std::is_same_v<Request, page_read>) stats_.gets++;
        finish(p, c);
      }
      return {};
    }
    try {
      for (; i < requests.size(); ++i) {
        const Request& r = requests[i];
        pending p{kind, &batch, i, {}, 0, {}, 0};
        if constexpr (std::is_same_v<Request, page_address>) {
          p.where = r;
        } else {
          p.where = r.where;
          p.tokens_fp = r.tokens_fingerprint;
        }
        if constexpr (std::is_same_v<Request, page_read>) {
          p.out = r.payload;
          ++stats_.gets;
          if (r.payload.size() != cfg_.page_bytes) {
            finish(p, make_error(errc::invalid_argument));
            continue;
          }
        }
        if constexpr (std::is_same_v<Request, page_write>) {
          p.bytes = r.payload.size();
          if (r.payload.size() != cfg_.page_bytes) {
            finish(p, make_error(errc::invalid_argument));
            continue;
          }
        }
        error e{};
        if constexpr (std::is_same_v<Request, page_write>) e = send_set(r);
        else e = send_simple(kind == op_kind::get ? "GET" : kind == op_kind::exists ? "EXISTS" : "DEL", p.where);
        if (e.code != errc::ok) {  // the pipeline is in an unknown state: fail everything in flight
          finish(p, e);
          ++i;
          drop_connection(e);
          break;
        }
        pending_.push_back(p);
      }
    } catch (...) {  // out of memory queuing a reply: the request went out, its reply will be orphaned
      drop_connection(make_error(errc::capacity_exhausted, ENOMEM));
      for (; i < requests.size(); ++i) batch.complete(i, make_error(errc::capacity_exhausted, ENOMEM));
      return {};
    }
    for (; i < requests.size(); ++i) {
      pending p{kind, &batch, i, {}, 0, {}, 0};
      if constexpr (std::is_same_v<Request, page_read>) ++stats_.gets;
      finish(p, make_error(errc::connection_lost));
    }
    last_progress_ = clock::now();
    return {};
  }

  // *argc\r\n then $len\r\narg\r\n per argument.
  static std::size_t resp_head(char* out, std::size_t cap, int argc) noexcept {
    return std::size_t(std::snprintf(out, cap, "*%d\r\n", argc));
  }
  static std::size_t resp_arg(char* out, std::size_t cap, std::string_view arg) noexcept {
    const int n = std::snprintf(out, cap, "$%zu\r\n", arg.size());
    std::memcpy(out + n, arg.data(), arg.size());
    std::memcpy(out + n + arg.size(), "\r\n", 2);
    return std::size_t(n) + arg.size() + 2;
  }

  error send_simple(std::string_view cmd, const page_address& where) {
    char buf[256];
    const std::string key = key_of(where);
    std::size_t n = resp_head(buf, sizeof buf, 2);
    n += resp_arg(buf + n, sizeof buf - n, cmd);
    n += resp_arg(buf + n, sizeof buf - n, key);
    iovec iov{buf, n};
    return send_all(&iov, 1);
  }

  error send_set(const page_write& w) {
    std::span<const std::byte> payload = w.payload;
    if constexpr (!is_identity_codec_v<Codec>) {
      const result<std::size_t> n = codec_.encode(w.payload, encode_buf_);
      if (!n) return n.err();
      payload = std::span<const std::byte>(encode_buf_.data(), *n);
    }
    const page_header h = make_page_header(cfg_.shape, w.where, w.tokens_fingerprint, Codec::id, payload,
                                           w.payload.size(), ++sequence_);
    const std::string key = key_of(w.where);
    char head[320];
    const bool ttl = cfg_.ttl.count() > 0;
    std::size_t n = resp_head(head, sizeof head, ttl ? 5 : 3);
    n += resp_arg(head + n, sizeof head - n, "SET");
    n += resp_arg(head + n, sizeof head - n, key);
    n += std::size_t(std::snprintf(head + n, sizeof head - n, "$%zu\r\n", page_header_bytes + payload.size()));
    char tail[64];
    std::size_t t = 0;
    std::memcpy(tail, "\r\n", 2);
    t = 2;
    if (ttl) {
      char secs[24];
      std::snprintf(secs, sizeof secs, "%lld", (long long)cfg_.ttl.count());
      t += resp_arg(tail + t, sizeof tail - t, "EX");
      t += resp_arg(tail + t, sizeof tail - t, secs);
    }
    iovec iov[4] = {{head, n},
                    {const_cast<page_header*>(&h), page_header_bytes},
                    {const_cast<std::byte*>(payload.data()), payload.size()},
                    {tail, t}};
    return send_all(iov, 4);
  }

  // ---- replies ---------------------------------------------------------------------------------
  error on_reply(const pending& p, redisReply* r) noexcept {
    if (r->type == REDIS_REPLY_ERROR) return reply_error(r);
    switch (p.kind) {
      case op_kind::set:
        return r->type == REDIS_REPLY_STATUS ? error{} : make_error(errc::io_error);
      case op_kind::exists:
        return r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? error{} : make_error(errc::not_found);
      case op_kind::del:
        return r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? error{} : make_error(errc::not_found);
      case op_kind::get: {
        if (r->type == REDIS_REPLY_NIL) return make_error(errc::not_found);
        if (r->type != REDIS_REPLY_STRING) return make_error(errc::io_error);
        const auto* bytes = reinterpret_cast<const std::byte*>(r->str);
        const std::size_t len = r->len;
        page_verdict v = page_verdict::corrupted;
        if (len >= page_header_bytes) {
          const page_header h = load_page_header({bytes, page_header_bytes});
          const page_expectation want{cfg_.shape.fingerprint(), p.where, p.tokens_fp, Codec::id, cfg_.page_bytes, max_payload_};
          v = verify_page(h, {bytes + page_header_bytes, len - page_header_bytes}, want);
          if (v == page_verdict::intact && !codec_.decode({bytes + page_header_bytes, len - page_header_bytes}, p.out))
            v = page_verdict::corrupted;
        }
        if (v == page_verdict::intact) return {};
        ++(v == page_verdict::foreign ? stats_.foreign : stats_.corrupted);
        return make_error(errc::corrupted);
      }
    }
    return make_error(errc::io_error);
  }

  // Completes replies already buffered, then reads the socket (waiting up to `timeout`) while
  // replies are due. Stops early once `target` is done. Returns requests completed.
  std::size_t progress(std::chrono::milliseconds timeout, const storage_batch* target) noexcept {
    std::size_t completed = 0;
    const auto deadline = clock::now() + timeout;
    while (ctx_ != nullptr && !pending_.empty()) {
      void* raw = nullptr;
      if (redisReaderGetReply(ctx_->reader, &raw) != REDIS_OK) {
        drop_connection(make_error(errc::io_error, EPROTO));
        break;
      }
      if (raw != nullptr) {
        auto* r = static_cast<redisReply*>(raw);
        const pending p = pending_.front();
        pending_.pop_front();
        finish(p, on_reply(p, r));
        freeReplyObject(r);
        ++completed;
        last_progress_ = clock::now();
        if (target != nullptr && target->done()) break;
        continue;
      }
      // Nothing complete in the buffer: read more.
      const auto now = clock::now();
      if (now - last_progress_ > cfg_.io_timeout) {
        drop_connection(make_error(errc::timeout, ETIMEDOUT));
        break;
      }
      const auto left = std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count());
      const auto stall_left = std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.io_timeout - (now - last_progress_)).count() + 1;
      pollfd pfd{ctx_->fd, POLLIN, 0};
      const int ready = ::poll(&pfd, 1, int(std::min<std::int64_t>(left, stall_left)));
      if (ready < 0 && errno != EINTR) {
        drop_connection(make_error(errc::connection_lost, errno));
        break;
      }
      if (ready <= 0) {
        if (left == 0) break;  // caller's time is up (poll() passes 0)
        continue;
      }
      const ssize_t got = ::recv(ctx_->fd, read_buf_.data(), read_buf_.size(), 0);
      if (got == 0) {
        drop_connection(make_error(errc::connection_lost, ECONNRESET));
        break;
      }
      if (got < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        drop_connection(make_error(errc::connection_lost, errno));
        break;
      }
      if (redisReaderFeed(ctx_->reader, read_buf_.data(), std::size_t(got)) != REDIS_OK) {
        drop_connection(make_error(errc::io_error, EPROTO));
        break;
      }
    }
    return completed;
  }

  redis_tier_config cfg_;
  [[no_unique_address]] Codec codec_{};
  std::size_t max_payload_ = 0;
  redisContext* ctx_ = nullptr;
  std::deque<pending> pending_;
  std::vector<char> read_buf_;
  std::vector<std::byte> encode_buf_;
  clock::time_point next_attempt_{};
  clock::time_point last_progress_{};
  std::chrono::milliseconds backoff_{};
  std::uint64_t connects_ = 0;
  std::uint64_t sequence_ = 0;
  storage_stats stats_{};
};

static_assert(storage_backend<redis_tier<>>);

}  // namespace kvtier
