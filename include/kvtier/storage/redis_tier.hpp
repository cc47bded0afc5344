#pragma once
// kvtier: needs-hiredis
// redis_tier: pages in a (shared) Redis under `<prefix>:<namespace>:<key>` keys, pipelined batch
// SET/GET/EXISTS/DEL, optional TTL and AUTH (password, or ACL user and password). Connection loss
// and timeouts complete requests with error values; the tier reconnects with exponential backoff.
// Engines sharing one Redis see each other's pages. Not thread-safe: one tier per thread.
//
// Layers (storage/detail/): redis_connection connects and runs the handshake; resp_writer frames
// commands; resp_reader parses replies incrementally; verify_read checks a page read back. A
// page's bytes go between the caller's buffer and the kernel without an intermediate copy.
// Every reply is checked against the command it answers before a byte of it is trusted: a reply
// of the wrong type, a malformed one or a length no page of this tier can have drops the
// connection (errc::io_error, EPROTO) rather than being read, stored or served.
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

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
#include "kvtier/codec/kv_page.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/storage/detail/redis_connection.hpp"
#include "kvtier/storage/detail/redis_reply.hpp"
#include "kvtier/storage/detail/redis_tier_base.hpp"
#include "kvtier/storage/detail/resp_reader.hpp"
#include "kvtier/storage/detail/resp_writer.hpp"
#include "kvtier/storage/detail/verify_read.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/redis_tier_config.hpp"
#include "kvtier/storage/request.hpp"
#include "kvtier/storage/stats.hpp"

namespace kvtier {

template <page_codec Codec = identity_codec>
class redis_tier : public detail::redis_tier_base<redis_tier<Codec>, redis_tier_config, Codec> {
  using base = detail::redis_tier_base<redis_tier<Codec>, redis_tier_config, Codec>;
  friend base;  // calls progress()
  using base::cfg_, base::codec_, base::max_payload_, base::stats_;
  using typename base::clock;

 public:
  using kvtier_storage_backend = storage_backend_tag;

  // Throws config_error for a bad configuration only; an unreachable server is a run-time event
  // (requests complete with errc::connection_lost until it is back).
  explicit redis_tier(redis_tier_config cfg) : redis_tier(cfg, default_tier_codec<Codec>(cfg.shape, cfg.page_bytes)) {}
  // With a codec built for this tier's pages (a cachegen codec and its profile, say).
  redis_tier(redis_tier_config cfg, Codec codec)
      : base(std::move(cfg), std::move(codec)) {
    backoff_ = cfg_.reconnect_min;
    endpoint_ = {cfg_.host, cfg_.port, cfg_.user, cfg_.password, cfg_.connect_timeout, cfg_.io_timeout};
    scratch_.resize(max_payload_);
    encode_buf_.resize(max_payload_);
  }
  redis_tier(const redis_tier&) = delete;
  redis_tier& operator=(const redis_tier&) = delete;
  ~redis_tier() { drop_connection(make_error(errc::cancelled)); }

  result<void> put(std::span<const page_write> writes, storage_batch& batch) noexcept { return submit(writes, batch); }
  result<void> get(std::span<const page_read> reads, storage_batch& batch) noexcept { return submit(reads, batch); }
  result<void> contains(std::span<const page_address> where, storage_batch& batch) noexcept {
    return submit(where, batch, op_kind::exists);
  }
  result<void> erase(std::span<const page_address> where, storage_batch& batch) noexcept {
    return submit(where, batch, op_kind::del);
  }

  // poll(), wait(), shape(), page_bytes(), usage(), stats(), config(), key_of(): redis_tier_base.
  bool connected() const noexcept { return conn_.is_open(); }
  std::uint64_t reconnects() const noexcept { return connects_ > 0 ? connects_ - 1 : 0; }
  // Why the server last refused us or a request, in its own words (NOAUTH ..., WRONGPASS ...,
  // a value over its proto-max-bulk-len, a malformed reply); "" if it never did.
  std::string_view last_error() const noexcept { return conn_.last_error(); }

 private:
  using op_kind = detail::redis_command;
  struct pending {
    op_kind kind;
    storage_batch* batch;
    std::size_t index;
    page_address where;
    std::uint64_t tokens_fp;
    std::span<std::byte> out;
    std::size_t bytes;  // payload bytes of a set
  };

  // ---- connection ------------------------------------------------------------------------------
  error connect() noexcept {
    if (conn_.is_open()) return {};
    const auto now = clock::now();
    if (now < next_attempt_) return make_error(errc::connection_lost);
    if (const error e = conn_.open(endpoint_); e.code != errc::ok) {
      next_attempt_ = now + backoff_;
      backoff_ = std::min(backoff_ * 2, cfg_.reconnect_max);
      ++stats_.errors;
      return e;
    }
    ++connects_;
    backoff_ = cfg_.reconnect_min;
    return {};
  }

  // Fails every request in flight with `e` and forgets the connection; the next call reconnects.
  void drop_connection(error e) noexcept {
    if (conn_.is_open()) {
      conn_.close();
      reader_.reset();
      in_bulk_ = false;
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
    this->complete(*p.batch, p.index, p.kind, p.kind == op_kind::get ? p.out.size() : p.bytes, e);
  }

  // ---- submission ------------------------------------------------------------------------------
  template <class Request>
  result<void> submit(std::span<const Request> requests, storage_batch& batch, op_kind kind = op_kind::set) noexcept {
    if (!batch.begin(requests.size())) return make_error(errc::busy);
    if constexpr (std::is_same_v<Request, page_read>) kind = op_kind::get;
    const error c = connect();
    std::size_t i = 0;
    try {
      for (; i < requests.size() && c.code == errc::ok && conn_.is_open(); ++i) {
        const Request& r = requests[i];
        pending p{kind, &batch, i, {}, 0, {}, 0};
        if constexpr (std::is_same_v<Request, page_address>) {
          p.where = r;
        } else {
          p.where = r.where;
          p.tokens_fp = r.tokens_fingerprint;
          if (r.payload.size() != cfg_.page_bytes) {
            if constexpr (std::is_same_v<Request, page_read>) ++stats_.gets;
            finish(p, make_error(errc::invalid_argument));
            continue;
          }
        }
        if constexpr (std::is_same_v<Request, page_read>) {
          p.out = r.payload;
          ++stats_.gets;
        }
        bool sent = false;
        error e{};
        if constexpr (std::is_same_v<Request, page_write>) {
          p.bytes = r.payload.size();
          e = send_set(r, sent);
        } else {
          e = send_simple(kind == op_kind::get ? "GET" : kind == op_kind::exists ? "EXISTS" : "DEL", p.where);
          sent = e.code == errc::ok;
        }
        if (e.code != errc::ok) {
          finish(p, e);
          if (sent || e.code == errc::connection_lost || e.code == errc::timeout)
            drop_connection(e);  // part of it may have gone out: the pipeline is in an unknown state
          continue;
        }
        pending_.push_back(p);
      }
    } catch (...) {  // out of memory queuing a reply: the request went out, its reply will be orphaned
      drop_connection(make_error(errc::capacity_exhausted, ENOMEM));
      for (; i < requests.size(); ++i) batch.complete(i, make_error(errc::capacity_exhausted, ENOMEM));
      return {};
    }
    for (; i < requests.size(); ++i) {  // not connected
      pending p{kind, &batch, i, {}, 0, {}, 0};
      if constexpr (std::is_same_v<Request, page_read>) ++stats_.gets;
      finish(p, c.code != errc::ok ? c : make_error(errc::connection_lost));
    }
    last_progress_ = clock::now();
    return {};
  }

  error send_simple(std::string_view cmd, const page_address& where) {
    char buf[256];
    detail::resp_writer w(buf);
    char key[192];
    w.array(2).bulk(cmd).bulk(std::string_view(key, detail::format_page_key(cfg_.prefix, where, key)));
    if (!w.ok()) return make_error(errc::invalid_argument, ENAMETOOLONG);
    iovec iov{w.data(), w.size()};
    return conn_.send_all(&iov, 1);
  }

  // `sent`: whether any byte went out (an error before that leaves the connection usable).
  error send_set(const page_write& r, bool& sent) {
    sent = false;
    std::span<const std::byte> payload = r.payload;
    if constexpr (!is_identity_codec_v<Codec>) {
      const result<std::size_t> n = codec_.encode(r.payload, encode_buf_);
      if (!n) return n.err();
      payload = std::span<const std::byte>(encode_buf_.data(), *n);
    }
    const std::size_t value_bytes = page_header_bytes + payload.size();
    if (conn_.max_bulk() != 0 && value_bytes > conn_.max_bulk()) {  // Redis would drop the connection
      char why[160];
      std::snprintf(why, sizeof why, "a value of %zu bytes is over the server's proto-max-bulk-len (%zu)",
                    value_bytes, conn_.max_bulk());
      conn_.note(why);
      return make_error(errc::invalid_argument, EMSGSIZE);
    }
    const page_header h = make_page_header(cfg_.shape, r.where, r.tokens_fingerprint, Codec::id, payload,
                                           r.payload.size(), ++sequence_);
    char head[320];
    detail::resp_writer w(head);
    const bool ttl = cfg_.ttl.count() > 0;
    char key[192];
    w.array(ttl ? 5 : 3).bulk("SET").bulk(std::string_view(key, detail::format_page_key(cfg_.prefix, r.where, key))).bulk_head(value_bytes);
    char tail[64];
    detail::resp_writer t(tail);
    t.crlf();
    if (ttl) t.bulk("EX").bulk_number(cfg_.ttl.count());
    if (!w.ok() || !t.ok()) return make_error(errc::invalid_argument, ENAMETOOLONG);
    iovec iov[4] = {{w.data(), w.size()},
                    {const_cast<page_header*>(&h), page_header_bytes},
                    {const_cast<std::byte*>(payload.data()), payload.size()},
                    {t.data(), t.size()}};
    sent = true;
    return conn_.send_all(iov, 4);
  }

  // ---- replies ---------------------------------------------------------------------------------
  // Each reply is judged against its command (detail::judge_reply). A GET value longer than any
  // page of this tier (another engine's larger page) is read past without being stored.
  std::size_t value_limit() const noexcept { return page_header_bytes + max_payload_; }

  // Where the next body bytes of the GET value in progress go (empty: skipped).
  std::span<std::byte> bulk_target() noexcept {
    if (bulk_got_ < page_header_bytes)
      return std::span<std::byte>(reinterpret_cast<std::byte*>(&bulk_header_), page_header_bytes)
          .subspan(bulk_got_, std::min(page_header_bytes, bulk_len_) - bulk_got_);
    if (bulk_len_ > value_limit()) return {};
    return bulk_into_.subspan(bulk_got_ - page_header_bytes, bulk_len_ - bulk_got_);
  }

  // The verdict on a complete GET value.
  error check_get(const pending& p) noexcept {
    const page_expectation want = this->expectation(p.where, p.tokens_fp);
    if (bulk_len_ < page_header_bytes || bulk_len_ > value_limit()) {  // cannot be a page of ours
      const page_verdict v = bulk_len_ < page_header_bytes ? page_verdict::corrupted : check_page_header(bulk_header_, want);
      ++(v == page_verdict::foreign ? stats_.foreign : stats_.corrupted);
      return make_error(errc::corrupted);
    }
    return detail::verify_read(codec_, bulk_header_, bulk_into_.first(bulk_len_ - page_header_bytes), want, p.out, stats_);
  }

  // Starts the reply to the front request with its first item. Returns true when that completed it.
  bool begin_reply(const pending& p, const detail::resp_item& it) noexcept {
    const detail::reply_verdict v = detail::judge_reply(p.kind, it);
    if (it.type == detail::resp_type::error) conn_.note(it.text);
    if (v.what == detail::reply_verdict::kind::done) return complete_front(v.status);
    if (v.what == detail::reply_verdict::kind::malformed) return protocol_error("a reply of the wrong type for the command");
    bulk_len_ = std::size_t(it.value);
    bulk_got_ = 0;
    // A value of the expected size lands in the caller's page; a shorter one in scratch.
    const bool direct = is_identity_codec_v<Codec> && bulk_len_ == page_header_bytes + cfg_.page_bytes;
    bulk_into_ = direct ? p.out : std::span<std::byte>(scratch_);
    in_bulk_ = true;
    return step_bulk(p);
  }

  bool step_bulk(const pending& p) noexcept {
    while (reader_.bulk_left() > 0 && reader_.buffered() > 0) {
      const std::span<std::byte> to = bulk_target();
      bulk_got_ += to.empty() ? reader_.skip_bulk() : reader_.read_bulk(to);
    }
    const detail::resp_status s = reader_.finish_bulk();
    if (s == detail::resp_status::malformed) return protocol_error("no CRLF after a value");
    if (s != detail::resp_status::item) return false;
    in_bulk_ = false;
    return complete_front(check_get(p));
  }

  // Advances the reply of the front request with buffered bytes. Returns true when it completed
  // one request; false when more bytes are needed or the connection was dropped.
  bool step() noexcept {
    const pending& p = pending_.front();
    if (in_bulk_) return step_bulk(p);
    detail::resp_item it;
    const detail::resp_status s = reader_.next(it);
    if (s == detail::resp_status::need_more) return false;
    if (s != detail::resp_status::item) return protocol_error("a malformed reply or a length over the limits");
    return begin_reply(p, it);
  }

  bool complete_front(error e) noexcept {
    const pending p = pending_.front();
    pending_.pop_front();
    finish(p, e);
    last_progress_ = clock::now();
    return true;
  }

  bool protocol_error(std::string_view why) noexcept {
    conn_.note(why);
    drop_connection(make_error(errc::io_error, EPROTO));
    return false;
  }

  // Reads from the socket into the reader, or straight into a large value's destination.
  // Returns false when the connection was dropped.
  bool read_some() noexcept {
    std::span<std::byte> direct;
    if (in_bulk_ && reader_.buffered() == 0 && bulk_got_ >= page_header_bytes) direct = bulk_target();
    if (direct.size() < 4096) direct = {};  // small reads go through the reader's buffer
    const result<std::size_t> got = conn_.receive(reader_, direct);
    if (!got && got.err().sys_errno == EPROTO) return protocol_error("a reply line longer than the read buffer");
    if (!got) drop_connection(got.err());
    else if (!direct.empty()) bulk_got_ += *got;
    return got.has_value();
  }

  // Completes replies already buffered, then reads the socket (waiting up to `timeout`) while
  // replies are due. Stops early once `target` is done. Returns requests completed.
  std::size_t progress(std::chrono::milliseconds timeout, const storage_batch* target) noexcept {
    std::size_t completed = 0;
    const auto deadline = clock::now() + timeout;
    while (conn_.is_open() && !pending_.empty()) {
      if (step()) {
        ++completed;
        if (target != nullptr && target->done()) break;
        continue;
      }
      if (!conn_.is_open()) break;  // a protocol error dropped the connection
      // Wait for bytes, no longer than the caller allows nor past the stall limit.
      const auto now = clock::now();
      const auto left = std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count());
      const auto stall_left = std::max<std::int64_t>(
          0, std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.io_timeout - (now - last_progress_)).count() + 1);
      pollfd pfd{conn_.fd(), POLLIN, 0};
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

  detail::redis_endpoint endpoint_;
  detail::redis_connection conn_;
  std::deque<pending> pending_;
  detail::resp_reader reader_{detail::resp_limits{std::size_t(256) << 10}};
  bool in_bulk_ = false;             // the front request's value is being read
  std::size_t bulk_len_ = 0, bulk_got_ = 0;
  page_header bulk_header_{};
  std::span<std::byte> bulk_into_;   // where a value's payload goes: the caller's page or scratch_
  std::vector<std::byte> scratch_;   // max_payload_ bytes: no allocation depends on a reply
  std::vector<std::byte> encode_buf_;
  clock::time_point next_attempt_{};
  clock::time_point last_progress_{};
  std::chrono::milliseconds backoff_{};
  std::uint64_t connects_ = 0;
  std::uint64_t sequence_ = 0;
};

static_assert(storage_backend<redis_tier<>>);

}  // namespace kvtier
