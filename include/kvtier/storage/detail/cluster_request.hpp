#pragma once
// One request of the cluster tier: the page it is about, the bytes of its command (framed by
// resp_writer into the request itself, so that it can be queued, sent without blocking and sent
// again after a redirection), and what each reply to it means.
#include <sys/uio.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/detail/redis_connection.hpp"
#include "kvtier/storage/detail/redis_reply.hpp"
#include "kvtier/storage/detail/resp_reader.hpp"
#include "kvtier/storage/detail/resp_writer.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/redis_tier_config.hpp"
#include "kvtier/storage/request.hpp"

namespace kvtier::detail {

using cluster_op = redis_command;  // SET, GET, EXISTS, DEL, as redis_tier's

// One request queued on a node, or waiting there for its reply. It owns its command bytes, except a
// SET's payload: the caller's page (valid until the batch is done) or `encoded`, the codec's copy.
struct cluster_request {
  cluster_op op = cluster_op::get;
  bool asking = false;           // "ASKING" precedes the command: its +OK reply comes first
  std::uint8_t redirects = 0;    // MOVED / ASK followed so far
  std::uint16_t slot = 0;
  storage_batch* batch = nullptr;
  std::size_t index = 0;
  page_address where;
  std::uint64_t tokens_fp = 0;
  std::span<std::byte> out;              // get: the caller's page
  std::span<const std::byte> payload;    // set: the encoded payload
  std::size_t page_bytes = 0;            // set: decoded bytes (for stats)
  std::vector<std::byte> encoded;        // set through a non-identity codec: owns `payload`
  page_header header{};                  // set: the value is header ‖ payload
  std::uint16_t head_len = 0, tail_len = 0;
  char head[352];  // [ASKING] then the command, or for a SET all of it up to the value's bytes
  char tail[48];   // a SET's "\r\n" after the value, and "EX <ttl>"

  // The bytes to send, in order, as iovecs; returns how many (at most 4).
  int segments(iovec* v) const noexcept {
    int n = 0;
    v[n++] = {const_cast<char*>(head), head_len};
    if (op == cluster_op::set) {
      v[n++] = {const_cast<page_header*>(&header), page_header_bytes};
      if (!payload.empty()) v[n++] = {const_cast<std::byte*>(payload.data()), payload.size()};
      v[n++] = {const_cast<char*>(tail), tail_len};
    }
    return n;
  }
};

// Frames the command of `q` ([ASKING] then SET/GET/EXISTS/DEL) into its own buffers.
inline bool frame_request(cluster_request& q, std::string_view prefix, std::chrono::seconds ttl) noexcept {
  char key[192];
  const std::string_view k(key, format_page_key(prefix, q.where, key));
  resp_writer head(std::span<char>(q.head));
  if (q.asking) head.array(1).bulk("ASKING");
  if (q.op == cluster_op::set) {
    head.array(ttl.count() > 0 ? 5 : 3).bulk("SET").bulk(k).bulk_head(page_header_bytes + q.payload.size());
    resp_writer tail(std::span<char>(q.tail));
    tail.crlf();
    if (ttl.count() > 0) tail.bulk("EX").bulk_number(ttl.count());
    if (!tail.ok()) return false;
    q.tail_len = std::uint16_t(tail.size());
  } else {
    head.array(2).bulk(q.op == cluster_op::get ? "GET" : q.op == cluster_op::exists ? "EXISTS" : "DEL").bulk(k);
  }
  q.head_len = std::uint16_t(head.size());
  return head.ok();
}

// The error an error reply stands for; TRYAGAIN (a multi-key slot in migration) and CLUSTERDOWN
// (slots unserved during a failover) are transient.
inline error cluster_reply_error(std::string_view s) noexcept {
  if (s.starts_with("TRYAGAIN") || s.starts_with("CLUSTERDOWN")) return make_error(errc::busy);
  return redis_reply_error(s);
}

// What a reply item means for a request of kind `op` (a GET's bulk value and redirections are the
// caller's): SET +OK; EXISTS and DEL an integer >= 0; GET null (a miss); any error reply. Anything
// else is not a valid reply (valid = false): the connection is out of step.
inline std::pair<bool, error> verdict_of_reply(cluster_op op, const resp_item& it) noexcept {
  if (it.type == resp_type::error) return {true, cluster_reply_error(it.text)};
  switch (op) {
    case cluster_op::set: return {it.type == resp_type::simple && it.text == "OK", error{}};
    case cluster_op::exists:
    case cluster_op::del:
      return {it.type == resp_type::integer && it.value >= 0, it.value > 0 ? error{} : make_error(errc::not_found)};
    case cluster_op::get: return {it.type == resp_type::null, make_error(errc::not_found)};
  }
  return {false, make_error(errc::io_error, EPROTO)};
}

}  // namespace kvtier::detail
