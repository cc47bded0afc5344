#pragma once
// What a Redis reply may be for the command it answers, checked before a byte of it is trusted:
// SET +OK; GET a bulk (its length is checked by the tier against the page it expects) or null;
// EXISTS and DEL an integer >= 0; any command an error reply. Anything else is a protocol error:
// the server is not answering what was asked, and nothing more it sends can be trusted.
#include <cerrno>
#include <cstdint>
#include <string_view>

#include "kvtier/core/error.hpp"
#include "kvtier/storage/detail/resp_reader.hpp"

namespace kvtier::detail {

enum class redis_command : std::uint8_t { set, get, exists, del };

// The error a server's error reply stands for (the text after '-').
inline error redis_reply_error(std::string_view s) noexcept {
  if (s.starts_with("OOM")) return make_error(errc::capacity_exhausted);
  // Redis refuses large requests of unauthenticated clients with a protocol error, then closes.
  if (s.starts_with("NOAUTH") || s.starts_with("NOPERM") || s.starts_with("WRONGPASS") ||
      s.find("unauthenticated") != std::string_view::npos)
    return make_error(errc::connection_lost, EACCES);
  if (s.starts_with("LOADING") || s.starts_with("BUSY")) return make_error(errc::busy);
  return make_error(errc::io_error);
}

struct reply_verdict {
  enum class kind : std::uint8_t {
    done,       // the request completes with `status`
    value,      // a GET's value follows (a bulk of item.value bytes)
    malformed,  // a reply of the wrong type: drop the connection (`status` is io_error, EPROTO)
  } what;
  error status;
};

// The meaning of a reply's first item for command c.
inline reply_verdict judge_reply(redis_command c, const resp_item& it) noexcept {
  using k = reply_verdict::kind;
  if (it.type == resp_type::error) return {k::done, redis_reply_error(it.text)};
  switch (c) {
    case redis_command::set:
      if (it.type == resp_type::simple && it.text == "OK") return {k::done, {}};
      break;
    case redis_command::exists:
    case redis_command::del:
      if (it.type == resp_type::integer && it.value >= 0) return {k::done, it.value > 0 ? error{} : make_error(errc::not_found)};
      break;
    case redis_command::get:
      if (it.type == resp_type::null) return {k::done, make_error(errc::not_found)};
      if (it.type == resp_type::bulk) return {k::value, {}};
      break;
  }
  return {k::malformed, make_error(errc::io_error, EPROTO)};
}

}  // namespace kvtier::detail
