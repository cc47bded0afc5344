#pragma once
// resp_writer: Redis protocol (RESP2) command framing into a caller-owned buffer, bounds-checked.
// A piece that does not fit is not written and leaves the writer failed (ok() is false from then
// on, later pieces are ignored): nothing is ever written past the end of the buffer. Large values
// are not copied: bulk_head() frames them, the caller sends their bytes (an iovec) and then crlf.
//
//   char buf[256];
//   resp_writer w(buf);
//   w.array(2).bulk("GET").bulk(key);          // *2\r\n$3\r\nGET\r\n$<n>\r\n<key>\r\n
//   if (!w.ok()) ...;                           // too long for buf
//   send(w.view());
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace kvtier::detail {

// Bytes of one bulk-string argument of n bytes: "$<n>\r\n" + n + "\r\n".
constexpr std::size_t resp_bulk_bytes(std::size_t n) noexcept {
  std::size_t digits = 1;
  for (std::size_t v = n; v >= 10; v /= 10) ++digits;
  return 1 + digits + 2 + n + 2;
}

class resp_writer {
 public:
  explicit resp_writer(std::span<char> out) noexcept : out_(out) {}

  // *n\r\n: a command of n arguments follows.
  resp_writer& array(std::size_t n) noexcept { return prefixed('*', n); }
  // $len\r\n<arg>\r\n
  resp_writer& bulk(std::string_view arg) noexcept {
    if (!ok_ || resp_bulk_bytes(arg.size()) > out_.size() - size_) return fail();
    prefixed('$', arg.size());
    return raw(arg).crlf();
  }
  // A decimal integer as a bulk-string argument (EX 60, COUNT 10, ...).
  resp_writer& bulk_number(std::int64_t v) noexcept {
    char digits[24];
    const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, v);
    return bulk(std::string_view(digits, std::size_t(end - digits)));
  }
  // $len\r\n alone: the caller sends the len value bytes itself, then crlf().
  resp_writer& bulk_head(std::size_t len) noexcept { return prefixed('$', len); }
  resp_writer& crlf() noexcept { return raw("\r\n"); }

  bool ok() const noexcept { return ok_; }
  std::size_t size() const noexcept { return size_; }
  std::string_view view() const noexcept { return {out_.data(), size_}; }
  char* data() const noexcept { return out_.data(); }
  // Empties the buffer and clears a failure.
  void clear() noexcept {
    size_ = 0;
    ok_ = true;
  }

 private:
  resp_writer& fail() noexcept {
    ok_ = false;
    return *this;
  }
  resp_writer& raw(std::string_view s) noexcept {
    if (!ok_ || s.size() > out_.size() - size_) return fail();
    std::memcpy(out_.data() + size_, s.data(), s.size());
    size_ += s.size();
    return *this;
  }
  resp_writer& prefixed(char type, std::size_t n) noexcept {
    char line[24];
    line[0] = type;
    const auto [end, ec] = std::to_chars(line + 1, line + sizeof line - 2, n);
    end[0] = '\r';
    end[1] = '\n';
    return raw(std::string_view(line, std::size_t(end + 2 - line)));
  }

  std::span<char> out_;
  std::size_t size_ = 0;
  bool ok_ = true;
};

}  // namespace kvtier::detail
