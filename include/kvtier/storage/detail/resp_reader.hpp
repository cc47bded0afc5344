#pragma once
// resp_reader: an incremental Redis protocol (RESP2) reply reader over a fixed buffer. Bytes are
// fed as they arrive (space(), filled()); next() yields one item at a time: a simple string, an
// error, an integer, a null, an array header (its elements follow as further items), or a bulk
// header. A bulk's body is then handed out by the caller's choice: copied into the caller's
// memory (read_bulk), received straight into it (bulk_arrived, when nothing is buffered), or
// discarded (skip_bulk); no allocation ever depends on a length the peer sent.
//
// Everything is checked before it is trusted: the type byte, strict decimal integers (no
// overflow, no trailing bytes), bulk lengths and array counts against resp_limits, a line longer
// than the buffer, and the \r\n after each bulk body. Any violation makes next() return
// malformed and the reader stays failed until reset(): the stream cannot be resynchronised, the
// caller drops the connection. What an item may be (which type, which length) for the command
// asked is the caller's check: see redis_tier::step().
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

namespace kvtier::detail {

enum class resp_type : std::uint8_t {
  simple,   // +text
  error,    // -text
  integer,  // :number
  bulk,     // $len, body follows (len bytes, then \r\n)
  array,    // *count, count items follow
  null,     // $-1 or *-1
};

struct resp_item {
  resp_type type = resp_type::null;
  std::string_view text;   // simple, error: the text after the type byte (valid until the next call)
  std::int64_t value = 0;  // integer: the number; bulk: the body length; array: the element count
};

struct resp_limits {
  std::size_t buffer_bytes = std::size_t(64) << 10;  // read buffer; also the longest line accepted
  std::int64_t max_bulk = std::int64_t(512) << 20;   // Redis's default proto-max-bulk-len
  std::int64_t max_array = std::int64_t(1) << 20;    // elements of one array
};

enum class resp_status : std::uint8_t {
  item,       // `out` holds the next item
  need_more,  // more bytes are needed: feed them through space()/filled()
  bulk_body,  // the body of the last bulk is not consumed yet: read_bulk, bulk_arrived or skip_bulk
  malformed,  // the stream broke the protocol or a limit; stays so until reset()
};

class resp_reader {
 public:
  explicit resp_reader(resp_limits limits = {}) : limits_(limits), buf_(std::max<std::size_t>(limits.buffer_bytes, 64)) {}

  // ---- feeding -----------------------------------------------------------------------------------
  // Free space at the end of the buffer for the next received bytes (compacting first). Empty when
  // a single line fills the whole buffer: next() then reports malformed.
  std::span<char> space() noexcept {
    if (begin_ == end_) begin_ = end_ = 0;
    if (end_ == buf_.size() && begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    return std::span<char>(buf_).subspan(end_);
  }
  // n bytes were written at the start of space().
  void filled(std::size_t n) noexcept { end_ += std::min(n, buf_.size() - end_); }
  std::size_t buffered() const noexcept { return end_ - begin_; }

  // ---- parsing -----------------------------------------------------------------------------------
  resp_status next(resp_item& out) noexcept {
    if (state_ == state::failed) return resp_status::malformed;
    if (state_ == state::body) {
      if (bulk_left_ > 0) return resp_status::bulk_body;
      state_ = state::body_end;
    }
    if (state_ == state::body_end) {
      if (const resp_status s = finish_bulk(); s != resp_status::item) return s;
    }
    const char* first = buf_.data() + begin_;
    const char* last = buf_.data() + end_;
    const char* cr = first;
    for (; cr + 1 < last; ++cr)
      if (cr[0] == '\r' && cr[1] == '\n') break;
    if (cr + 1 >= last) return buffered() >= buf_.size() ? fail() : resp_status::need_more;
    const std::string_view line(first, std::size_t(cr - first));
    begin_ += line.size() + 2;
    if (line.empty()) return fail();
    const std::string_view rest = line.substr(1);
    out = resp_item{};
    switch (line[0]) {
      case '+': out.type = resp_type::simple; out.text = rest; return resp_status::item;
      case '-': out.type = resp_type::error; out.text = rest; return resp_status::item;
      case ':':
        if (!parse_integer(rest, out.value)) return fail();
        out.type = resp_type::integer;
        return resp_status::item;
      case '$':
      case '*': {
        const bool bulk = line[0] == '$';
        if (!parse_integer(rest, out.value)) return fail();
        if (out.value == -1) {
          out.type = resp_type::null;
          return resp_status::item;
        }
        if (out.value < 0 || out.value > (bulk ? limits_.max_bulk : limits_.max_array)) return fail();
        out.type = bulk ? resp_type::bulk : resp_type::array;
        if (bulk) {
          bulk_left_ = std::size_t(out.value);
          state_ = state::body;
        }
        return resp_status::item;
      }
      default: return fail();
    }
  }

  // ---- bulk bodies -------------------------------------------------------------------------------
  // Body bytes of the current bulk not yet consumed (0 outside a bulk).
  std::size_t bulk_left() const noexcept { return state_ == state::body ? bulk_left_ : 0; }
  // Ends the current bulk once its body is consumed: checks and consumes the \r\n after it, and
  // parses nothing further (next() would go on to the next item). item: the bulk is complete;
  // bulk_body: body bytes are still due; need_more; malformed.
  resp_status finish_bulk() noexcept {
    if (state_ == state::failed) return resp_status::malformed;
    if (state_ == state::body) {
      if (bulk_left_ > 0) return resp_status::bulk_body;
      state_ = state::body_end;
    }
    if (state_ != state::body_end) return resp_status::item;
    if (buffered() < 2) return resp_status::need_more;
    if (buf_[begin_] != '\r' || buf_[begin_ + 1] != '\n') return fail();
    begin_ += 2;
    state_ = state::line;
    return resp_status::item;
  }
  // Copies buffered body bytes into `to` (at most to.size() and bulk_left()); returns how many.
  std::size_t read_bulk(std::span<std::byte> to) noexcept {
    const std::size_t n = std::min({to.size(), bulk_left(), buffered()});
    if (n > 0) std::memcpy(to.data(), buf_.data() + begin_, n);
    begin_ += n;
    bulk_left_ -= n;
    return n;
  }
  // Discards up to `max` buffered body bytes; returns how many.
  std::size_t skip_bulk(std::size_t max = SIZE_MAX) noexcept {
    const std::size_t n = std::min({max, bulk_left(), buffered()});
    begin_ += n;
    bulk_left_ -= n;
    return n;
  }
  // The caller received n body bytes straight into its own memory (allowed only while nothing is
  // buffered, so that the stream order holds); n is clamped to bulk_left().
  void bulk_arrived(std::size_t n) noexcept {
    if (buffered() != 0) {
      fail();
      return;
    }
    bulk_left_ -= std::min(n, bulk_left());
  }

  bool failed() const noexcept { return state_ == state::failed; }
  // Forgets every byte and the failure (a new connection).
  void reset() noexcept {
    begin_ = end_ = 0;
    bulk_left_ = 0;
    state_ = state::line;
  }

 private:
  enum class state : std::uint8_t { line, body, body_end, failed };

  resp_status fail() noexcept {
    state_ = state::failed;
    return resp_status::malformed;
  }
  // Strict: an optional '-', 1 to 19 digits, nothing else, no overflow.
  static bool parse_integer(std::string_view s, std::int64_t& v) noexcept {
    const bool negative = !s.empty() && s[0] == '-';
    if (negative) s.remove_prefix(1);
    if (s.empty() || s.size() > 19) return false;
    std::uint64_t x = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return false;
      x = x * 10 + std::uint64_t(c - '0');
    }
    if (x > std::uint64_t(INT64_MAX)) return false;
    v = negative ? -std::int64_t(x) : std::int64_t(x);
    return true;
  }

  resp_limits limits_;
  std::vector<char> buf_;
  std::size_t begin_ = 0, end_ = 0;  // unparsed bytes: [begin_, end_)
  std::size_t bulk_left_ = 0;
  state state_ = state::line;
};

}  // namespace kvtier::detail
