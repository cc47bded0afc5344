#pragma once
// kvtier: needs-hiredis
// redis_tier: pages in a (shared) Redis under `<prefix>:<namespace>:<key>` keys, pipelined batch
// SET/GET/EXISTS/DEL, optional TTL and AUTH (password, or ACL user and password). Connection loss
// and timeouts complete requests with error values; the tier reconnects with exponential backoff.
// Engines sharing one Redis see each other's pages. Not thread-safe: one tier per thread.
//
// hiredis connects and authenticates; requests are written straight to the socket with sendmsg and
// replies parsed here, so a page's bytes go between the caller's buffer and the kernel without an
// intermediate copy in either direction.
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
#include <optional>
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
    read_buf_.resize(std::size_t(256) << 10);
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

  static error reply_error(std::string_view s) noexcept {
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
      rpos_ = rend_ = 0;
      stage_ = stage::line;
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
  // Replies are parsed here rather than by hiredis's reader so that a GET's payload goes from the
  // socket straight into the caller's page (no intermediate reply object, no extra copy).
  // Only the reply types these commands produce are expected: +status, -error, :integer, $bulk.
  enum class stage : std::uint8_t { line, bulk, crlf };

  // The line at the read position ("...\r\n"), if complete.
  std::optional<std::string_view> take_line() noexcept {
    const char* begin = read_buf_.data() + rpos_;
    const char* end = read_buf_.data() + rend_;
    for (const char* c = begin; c + 1 < end; ++c)
      if (c[0] == '\r' && c[1] == '\n') {
        rpos_ += std::size_t(c + 2 - begin);
        return std::string_view(begin, std::size_t(c - begin));
      }
    return std::nullopt;
  }

  // Where the next payload bytes of the bulk in progress go.
  std::span<std::byte> bulk_target() noexcept {
    if (bulk_got_ < page_header_bytes)
      return std::span<std::byte>(reinterpret_cast<std::byte*>(&bulk_header_), page_header_bytes)
          .subspan(bulk_got_, std::min(page_header_bytes, bulk_len_) - bulk_got_);
    const std::size_t at = bulk_got_ - page_header_bytes;
    return bulk_into_.subspan(at, bulk_len_ - bulk_got_);
  }

  // The verdict on a complete GET value: header bulk_header_, payload in bulk_into_.
  error check_get(const pending& p) noexcept {
    page_verdict v = page_verdict::corrupted;
    if (bulk_len_ >= page_header_bytes) {
      const page_expectation want{cfg_.shape.fingerprint(), p.where, p.tokens_fp, Codec::id, cfg_.page_bytes, max_payload_};
      const std::span<const std::byte> payload = bulk_into_.first(bulk_len_ - page_header_bytes);
      v = verify_page(bulk_header_, payload, want);
      if (v == page_verdict::intact && payload.data() != p.out.data() && !codec_.decode(payload, p.out))
        v = page_verdict::corrupted;
    }
    if (v == page_verdict::intact) return {};
    ++(v == page_verdict::foreign ? stats_.foreign : stats_.corrupted);
    return make_error(errc::corrupted);
  }

  // Advances the reply of the front request with buffered bytes. Returns true when it completed
  // one request; false when more bytes are needed. A protocol error drops the connection.
  bool step() noexcept {
    const pending& p = pending_.front();
    if (stage_ == stage::line) {
      const std::optional<std::string_view> line = take_line();
      if (!line) return false;
      if (line->empty()) return protocol_error();
      const char type = (*line)[0];
      const std::string_view rest = line->substr(1);
      const long long number = std::strtoll(std::string(rest).c_str(), nullptr, 10);
      error e{};
      switch (type) {
        case '+': e = p.kind == op_kind::set ? error{} : make_error(errc::io_error); break;
        case '-': e = reply_error(rest); break;
        case ':': e = number > 0 ? error{} : make_error(errc::not_found); break;
        case '$':
          if (number < 0) {
            e = make_error(errc::not_found);
            break;
          }
          bulk_len_ = std::size_t(number);
          bulk_got_ = 0;
          // A GET value of the expected size lands in the caller's page; anything else in scratch.
          if (p.kind == op_kind::get && is_identity_codec_v<Codec> && bulk_len_ == page_header_bytes + cfg_.page_bytes) {
            bulk_into_ = p.out;
          } else {
            try {
              scratch_.resize(bulk_len_ > page_header_bytes ? bulk_len_ - page_header_bytes : 0);
            } catch (...) {
              return protocol_error();
            }
            bulk_into_ = scratch_;
          }
          stage_ = stage::bulk;
          return step();
        default: return protocol_error();
      }
      complete_front(e);
      return true;
    }
    if (stage_ == stage::bulk) {
      while (bulk_got_ < bulk_len_ && rpos_ < rend_) {
        const std::span<std::byte> to = bulk_target();
        const std::size_t n = std::min(to.size(), rend_ - rpos_);
        std::memcpy(to.data(), read_buf_.data() + rpos_, n);
        rpos_ += n;
        bulk_got_ += n;
      }
      if (bulk_got_ < bulk_len_) return false;
      stage_ = stage::crlf;
    }
    if (rend_ - rpos_ < 2) return false;
    if (read_buf_[rpos_] != '\r' || read_buf_[rpos_ + 1] != '\n') return protocol_error();
    rpos_ += 2;
    stage_ = stage::line;
    complete_front(p.kind == op_kind::get ? check_get(p) : make_error(errc::io_error));
    return true;
  }

  void complete_front(error e) noexcept {
    const pending p = pending_.front();
    pending_.pop_front();
    finish(p, e);
    last_progress_ = clock::now();
  }

  bool protocol_error() noexcept {
    drop_connection(make_error(errc::io_error, EPROTO));
    return false;
  }

  // Reads from the socket into the read buffer, or straight into a large bulk's destination.
  // Returns false when the connection was dropped.
  bool read_some() noexcept {
    if (rpos_ == rend_) rpos_ = rend_ = 0;
    std::span<std::byte> direct;
    if (stage_ == stage::bulk && rpos_ == rend_) direct = bulk_target();
    ssize_t got;
    if (direct.size() >= 4096) {
      got = ::recv(ctx_->fd, direct.data(), direct.size(), 0);
      if (got > 0) bulk_got_ += std::size_t(got);
    } else {
      if (rend_ == read_buf_.size()) {  // compact: a partial line is at the end
        std::memmove(read_buf_.data(), read_buf_.data() + rpos_, rend_ - rpos_);
        rend_ -= rpos_;
        rpos_ = 0;
        if (rend_ == read_buf_.size()) return protocol_error();  // a line longer than the buffer
      }
      got = ::recv(ctx_->fd, read_buf_.data() + rend_, read_buf_.size() - rend_, 0);
      if (got > 0) rend_ += std::size_t(got);
    }
    if (got == 0) {
      drop_connection(make_error(errc::connection_lost, ECONNRESET));
      return false;
    }
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) return true;
      drop_connection(make_error(errc::connection_lost, errno));
      return false;
    }
    return true;
  }

  // Completes replies already buffered, then reads the socket (waiting up to `timeout`) while
  // replies are due. Stops early once `target` is done. Returns requests completed.
  std::size_t progress(std::chrono::milliseconds timeout, const storage_batch* target) noexcept {
    std::size_t completed = 0;
    const auto deadline = clock::now() + timeout;
    while (ctx_ != nullptr && !pending_.empty()) {
      if (step()) {
        ++completed;
        if (target != nullptr && target->done()) break;
        continue;
      }
      if (ctx_ == nullptr) break;  // a protocol error dropped the connection
      // Wait for bytes, no longer than the caller allows nor past the stall limit.
      const auto now = clock::now();
      const auto left = std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count());
      const auto stall_left = std::max<std::int64_t>(
          0, std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.io_timeout - (now - last_progress_)).count() + 1);
      pollfd pfd{ctx_->fd, POLLIN, 0};
      const int ready = ::poll(&pfd, 1, int(std::min<std::int64_t>(left, stall_left)));
      if (ready < 0 && errno != EINTR) {
        drop_connection(make_error(errc::connection_lost, errno));
        break;
      }
      if (ready > 0) {
        if (!read_some()) break;
        last_progress_ = clock::now();
        continue;
      }
      if (clock::now() - last_progress_ >= cfg_.io_timeout) {  // nothing arrived for io_timeout
        drop_connection(make_error(errc::timeout, ETIMEDOUT));
        break;
      }
      if (left == 0) break;  // the caller's time is up (poll() passes 0)
    }
    return completed;
  }

  redis_tier_config cfg_;
  [[no_unique_address]] Codec codec_{};
  std::size_t max_payload_ = 0;
  redisContext* ctx_ = nullptr;
  std::deque<pending> pending_;
  std::vector<char> read_buf_;       // socket bytes not yet parsed: [rpos_, rend_)
  std::size_t rpos_ = 0, rend_ = 0;
  stage stage_ = stage::line;        // where the front request's reply stands
  std::size_t bulk_len_ = 0, bulk_got_ = 0;
  page_header bulk_header_{};
  std::span<std::byte> bulk_into_;   // where a bulk's payload goes: the caller's page or scratch_
  std::vector<std::byte> scratch_;
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
