#pragma once
// Redis Cluster key → hash slot: CRC16 (XMODEM: polynomial 0x1021, initial 0, no reflection) of the
// key, or of its hash tag (the bytes between the first '{' and the next '}', when not empty), mod 16384.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kvtier::detail {

inline constexpr std::uint16_t cluster_slots = 16384;

inline constexpr std::array<std::uint16_t, 256> crc16_xmodem_table = [] {
  std::array<std::uint16_t, 256> t{};
  for (unsigned i = 0; i < 256; ++i) {
    std::uint16_t c = std::uint16_t(i << 8);
    for (int b = 0; b < 8; ++b) c = std::uint16_t((c & 0x8000) ? (c << 1) ^ 0x1021 : c << 1);
    t[i] = c;
  }
  return t;
}();

constexpr std::uint16_t crc16_xmodem(std::string_view bytes) noexcept {
  std::uint16_t crc = 0;
  for (const char ch : bytes)
    crc = std::uint16_t((crc << 8) ^ crc16_xmodem_table[((crc >> 8) ^ std::uint8_t(ch)) & 0xff]);
  return crc;
}

// The part of a key that is hashed: its hash tag if it has a non-empty one, else the whole key.
constexpr std::string_view cluster_hashed_part(std::string_view key) noexcept {
  const std::size_t open = key.find('{');
  if (open == std::string_view::npos) return key;
  const std::size_t close = key.find('}', open + 1);
  if (close == std::string_view::npos || close == open + 1) return key;
  return key.substr(open + 1, close - open - 1);
}

constexpr std::uint16_t cluster_hash_slot(std::string_view key) noexcept {
  return std::uint16_t(crc16_xmodem(cluster_hashed_part(key)) & (cluster_slots - 1));
}

static_assert(crc16_xmodem("123456789") == 0x31c3);  // the check value in the Redis Cluster spec

}  // namespace kvtier::detail
