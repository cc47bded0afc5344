#pragma once
// The header every page carries on a slow tier, and the checks every read runs. A page read back
// is either exactly what was written for that shape, namespace, key and tokens, or a miss.
//
// On-media layout (little-endian, 96 bytes), followed by the encoded payload:
//   magic u64 | version u32 | codec_id u32 | shape_fingerprint u64 | namespace u64 | key_hi u64 |
//   key_lo u64 | tokens_fingerprint u64 | payload_bytes u64 | page_bytes u64 | sequence u64 |
//   header_checksum u64 (XXH3-64 of the 80 bytes before it) |
//   checksum u64 (XXH3-64 of the payload, seeded with XXH3-64 of the 88 bytes before it)
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

#include <xxhash.h>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/page_key.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/storage/request.hpp"

namespace kvtier {

static_assert(std::endian::native == std::endian::little, "kvtier: page headers are stored little-endian");

inline constexpr std::uint64_t page_magic = 0x3147505245495456ull;  // "VTIERPG1" read little-endian
inline constexpr std::uint32_t page_format_version = 1;

struct page_header {
  std::uint64_t magic = 0;
  std::uint32_t version = 0;
  std::uint32_t codec_id = 0;
  std::uint64_t shape_fingerprint = 0;
  std::uint64_t ns = 0;
  std::uint64_t key_hi = 0;
  std::uint64_t key_lo = 0;
  std::uint64_t tokens_fingerprint = 0;
  std::uint64_t payload_bytes = 0;  // encoded bytes that follow the header
  std::uint64_t page_bytes = 0;     // decoded page bytes
  std::uint64_t sequence = 0;       // write order on this tier (newest wins at recovery)
  std::uint64_t header_checksum = 0;
  std::uint64_t checksum = 0;

  page_address address() const noexcept { return {namespace_id{ns}, page_key{key_hi, key_lo}}; }
};
static_assert(std::is_trivially_copyable_v<page_header>);
inline constexpr std::size_t page_header_bytes = sizeof(page_header);
static_assert(page_header_bytes == 96);

// What a reader expects of a page; everything must match for the page to be served.
struct page_expectation {
  std::uint64_t shape_fingerprint = 0;
  page_address where;
  std::uint64_t tokens_fingerprint = 0;
  std::uint32_t codec_id = 0;
  std::size_t page_bytes = 0;
  std::size_t max_payload_bytes = 0;  // the codec's bound: a longer payload is damage
};

// The verdict of a check: intact, damaged (corrupted), or intact but someone else's page (foreign).
enum class page_verdict : std::uint8_t { intact, corrupted, foreign };

constexpr std::string_view to_string(page_verdict v) noexcept {
  switch (v) {
    case page_verdict::intact: return "intact";
    case page_verdict::corrupted: return "corrupted";
    case page_verdict::foreign: return "foreign";
  }
  return "?";
}

// A 64-bit fingerprint of a page's token ids, stored in its header and checked on every read.
inline std::uint64_t tokens_fingerprint(std::span<const token_id> tokens) noexcept {
  static_assert(sizeof(token_id) == sizeof(std::int32_t));
  return XXH3_64bits(tokens.data(), tokens.size_bytes());
}

namespace detail {
inline constexpr std::size_t header_checksum_offset = offsetof(page_header, header_checksum);
inline constexpr std::size_t checksum_offset = offsetof(page_header, checksum);

inline std::uint64_t header_self_checksum(const page_header& h) noexcept {
  return XXH3_64bits(&h, header_checksum_offset);
}
inline std::uint64_t page_checksum(const page_header& h, std::span<const std::byte> payload) noexcept {
  // Chained: the header's hash seeds the payload's, so a change to either changes the result.
  return XXH3_64bits_withSeed(payload.data(), payload.size(), XXH3_64bits(&h, checksum_offset));
}
}  // namespace detail

// Builds and seals the header of `payload` (already encoded by codec `codec_id`).
inline page_header make_page_header(const kv_shape& shape, const page_address& where,
                                    std::uint64_t tokens_fp, std::uint32_t codec_id,
                                    std::span<const std::byte> payload, std::size_t page_bytes,
                                    std::uint64_t sequence) noexcept {
  page_header h;
  h.magic = page_magic;
  h.version = page_format_version;
  h.codec_id = codec_id;
  h.shape_fingerprint = shape.fingerprint();
  h.ns = where.ns.raw;
  h.key_hi = where.key.hi;
  h.key_lo = where.key.lo;
  h.tokens_fingerprint = tokens_fp;
  h.payload_bytes = payload.size();
  h.page_bytes = page_bytes;
  h.sequence = sequence;
  h.header_checksum = detail::header_self_checksum(h);
  h.checksum = detail::page_checksum(h, payload);
  return h;
}

// Reads a header from raw bytes (at least page_header_bytes); no checks.
inline page_header load_page_header(std::span<const std::byte> raw) noexcept {
  page_header h;
  if (raw.size() >= page_header_bytes) std::memcpy(&h, raw.data(), page_header_bytes);
  return h;
}
inline void store_page_header(const page_header& h, std::span<std::byte> raw) noexcept {
  if (raw.size() >= page_header_bytes) std::memcpy(raw.data(), &h, page_header_bytes);
}

// True when the header is intact by itself (magic, version, its own checksum): used at recovery.
inline bool header_intact(const page_header& h) noexcept {
  return h.magic == page_magic && h.version == page_format_version &&
         h.header_checksum == detail::header_self_checksum(h);
}

// Checks the header alone against what the reader expects (no payload).
inline page_verdict check_page_header(const page_header& h, const page_expectation& e) noexcept {
  if (!header_intact(h)) return page_verdict::corrupted;
  if (h.payload_bytes > e.max_payload_bytes) return page_verdict::corrupted;
  if (h.shape_fingerprint != e.shape_fingerprint || h.ns != e.where.ns.raw || h.key_hi != e.where.key.hi ||
      h.key_lo != e.where.key.lo || h.tokens_fingerprint != e.tokens_fingerprint || h.codec_id != e.codec_id ||
      h.page_bytes != e.page_bytes)
    return page_verdict::foreign;
  return page_verdict::intact;
}

// The full check of a page read back: header fields, then the checksum over header and payload.
// `payload` must be exactly h.payload_bytes long.
inline page_verdict verify_page(const page_header& h, std::span<const std::byte> payload,
                                const page_expectation& e) noexcept {
  if (const page_verdict v = check_page_header(h, e); v != page_verdict::intact) return v;
  if (payload.size() != h.payload_bytes) return page_verdict::corrupted;
  if (detail::page_checksum(h, payload) != h.checksum) return page_verdict::corrupted;
  return page_verdict::intact;
}

}  // namespace kvtier
