#pragma once
// The shared setup of the end-to-end tests (cache.end_to_end, cache.end_to_end_gpu): the small KV
// shape, the page size and the multi-turn chat workload they both run. Included by a .cu test, so
// nothing host-only (range-v3) may come in through here.
#include <cstddef>
#include <cstdint>

#include "kvtier/testing/chat_workload.hpp"
#include "kvtier/core/kv_shape.hpp"

namespace kvtier::testing {

inline const kv_shape small_shape = kv_shape::mha(4, 2, 32, dtype::fp16);  // 128-byte rows, 16 KiB pages
inline constexpr std::size_t P = 16;

// `sessions` multi-turn chats, 24 at a time, over 3 system prompts and 2 namespaces.
inline chat_workload_config workload(std::size_t sessions, std::uint64_t seed = 7) {
  chat_workload_config w;
  w.sessions = sessions;
  w.concurrent = 24;
  w.min_turns = 2;
  w.max_turns = 9;
  w.system_prompts = 3;
  w.system_tokens = 96;
  w.min_user_tokens = 8;
  w.max_user_tokens = 48;
  w.min_reply_tokens = 8;
  w.max_reply_tokens = 64;
  w.namespaces = 2;
  w.seed = seed;
  return w;
}

}  // namespace kvtier::testing
