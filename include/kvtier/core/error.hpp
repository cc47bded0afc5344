#pragma once
// kvtier's error model.
//  - Programming and configuration errors (a zero-sized shape, a page size of 0, a layout a tier
//    cannot hold) throw kvtier::config_error at construction time: they are bugs, not events.
//  - Run-time events a serving loop must survive (a full pool, an I/O error, a timeout, a corrupted
//    page, a lost connection) are values: result<T> holds either a T or an error, never throws.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace kvtier {

enum class errc : std::uint8_t {
  ok = 0,
  capacity_exhausted,  // a pool or tier is full and nothing can be evicted
  not_found,           // the key or page is not held
  io_error,            // the OS or device reported a failure (sys_errno says which)
  timeout,             // the operation did not finish in time
  corrupted,           // checksum, header or fingerprint mismatch: served as a miss
  connection_lost,     // a remote tier is unreachable
  invalid_argument,    // a run-time argument was out of range
  unsupported,         // the operation is not available on this path or build
  busy,                // the resource is in flight or locked
  cancelled,           // the caller gave up (for example a best-effort prefetch)
};

constexpr std::string_view to_string(errc e) noexcept {
  switch (e) {
    case errc::ok: return "ok";
    case errc::capacity_exhausted: return "capacity exhausted";
    case errc::not_found: return "not found";
    case errc::io_error: return "I/O error";
    case errc::timeout: return "timeout";
    case errc::corrupted: return "corrupted";
    case errc::connection_lost: return "connection lost";
    case errc::invalid_argument: return "invalid argument";
    case errc::unsupported: return "unsupported";
    case errc::busy: return "busy";
    case errc::cancelled: return "cancelled";
  }
  return "unknown";
}

// An error value: cheap to copy, no allocation. sys_errno carries errno (or a library code).
struct error {
  errc code = errc::ok;
  int sys_errno = 0;

  friend constexpr bool operator==(error, error) = default;
  std::string message() const {
    std::string m(to_string(code));
    if (sys_errno != 0) m += " (errno " + std::to_string(sys_errno) + ")";
    return m;
  }
};

// Thrown for misuse at configuration time only.
class config_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Thrown by result<T>::value() when it holds an error: only for callers that ask for it.
class bad_result_access : public std::runtime_error {
 public:
  explicit bad_result_access(error e) : std::runtime_error(e.message()), err(e) {}
  error err;
};

// A minimal std::expected<T, error> (C++23 is not available under C++20).
template <class T>
class [[nodiscard]] result {
 public:
  using value_type = T;

  constexpr result(T v) noexcept(std::is_nothrow_move_constructible_v<T>)  // NOLINT: implicit
      : value_(std::move(v)), has_value_(true) {}
  constexpr result(error e) noexcept : err_(e), has_value_(false) {}       // NOLINT: implicit

  constexpr bool has_value() const noexcept { return has_value_; }
  constexpr explicit operator bool() const noexcept { return has_value_; }
  constexpr error err() const noexcept { return err_; }
  constexpr errc code() const noexcept { return has_value_ ? errc::ok : err_.code; }

  constexpr T& operator*() & noexcept { return value_; }
  constexpr const T& operator*() const& noexcept { return value_; }
  constexpr T* operator->() noexcept { return &value_; }
  constexpr const T* operator->() const noexcept { return &value_; }
  constexpr T& value() & {
    if (!has_value_) throw bad_result_access(err_);
    return value_;
  }
  constexpr const T& value() const& {
    if (!has_value_) throw bad_result_access(err_);
    return value_;
  }
  constexpr T value_or(T alt) const { return has_value_ ? value_ : alt; }

 private:
  T value_{};
  error err_{};
  bool has_value_;
};

template <>
class [[nodiscard]] result<void> {
 public:
  constexpr result() noexcept = default;
  constexpr result(error e) noexcept : err_(e) {}  // NOLINT: implicit
  constexpr bool has_value() const noexcept { return err_.code == errc::ok; }
  constexpr explicit operator bool() const noexcept { return has_value(); }
  constexpr error err() const noexcept { return err_; }
  constexpr errc code() const noexcept { return err_.code; }
  void value() const {
    if (!has_value()) throw bad_result_access(err_);
  }

 private:
  error err_{};
};

constexpr error make_error(errc c, int sys_errno = 0) noexcept { return error{c, sys_errno}; }

}  // namespace kvtier
