#pragma once
// Chained 128-bit page keys: key(page) = XXH3-128(namespace, model, key(parent page), page tokens).
// A key names a page together with its whole prefix, so slow tiers (disk, Redis) can store and
// find pages without the tree, and two namespaces or models never produce the same key.
#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "kvtier/core/page_key.hpp"
#include "kvtier/core/strong_id.hpp"

namespace kvtier {

// The parent key of a prefix's first page.
inline constexpr page_key root_page_key{};

// Hashes (namespace, model, parent key, tokens); bytes are taken in the machine's order
// (little-endian on every platform kvtier targets).
inline page_key chain_page_key(namespace_id ns, std::uint64_t model, page_key parent,
                               std::span<const token_id> page_tokens) {
  static_assert(sizeof(token_id) == 4);
  const std::uint64_t header[4] = {ns.value(), model, parent.hi, parent.lo};
  constexpr std::size_t stack_tokens = 256;
  const std::size_t bytes = sizeof(header) + page_tokens.size_bytes();
  XXH128_hash_t h;
  if (page_tokens.size() <= stack_tokens) {
    unsigned char buf[sizeof(header) + stack_tokens * sizeof(token_id)];
    std::memcpy(buf, header, sizeof(header));
    if (!page_tokens.empty()) std::memcpy(buf + sizeof(header), page_tokens.data(), page_tokens.size_bytes());
    h = XXH3_128bits(buf, bytes);
  } else {
    // Large pages: one buffer per thread, grown once (no allocation per page).
    thread_local std::vector<unsigned char> buf;
    if (buf.size() < bytes) buf.resize(bytes);
    std::memcpy(buf.data(), header, sizeof(header));
    std::memcpy(buf.data() + sizeof(header), page_tokens.data(), page_tokens.size_bytes());
    h = XXH3_128bits(buf.data(), bytes);
  }
  return page_key{h.high64, h.low64};
}

}  // namespace kvtier
