#pragma once
// The CacheGen page directory entry and the decoder of one stream (one channel segment of one
// (layer, kv) block); the CPU codec calls it per stream, the CUDA decoder mirrors it.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kvtier/codec/cachegen_profile.hpp"
#include "kvtier/codec/detail/rans.hpp"
#include "kvtier/codec/kv_page.hpp"

namespace kvtier {

namespace detail {

// A page's directory: per (layer, kv) block a f32 step, then per stream (channel segment) its
// byte offset in the page, its stream bytes and its escape count (u32 each).
struct cachegen_stream_entry {
  std::uint32_t offset = 0, stream_bytes = 0, escapes = 0;
};
constexpr std::size_t cachegen_block_dir_bytes(std::size_t streams) noexcept { return 4 + 12 * streams; }

// Decodes channels [c0, c1) of one block (tokens × channels elements, page_first order) from its
// stream and escapes (which follow the stream). The CUDA decoder mirrors this function; false on
// any inconsistency (the page is then a miss).
inline bool cachegen_decode_segment(const cachegen_profile& p, std::size_t block, const std::byte* stream,
                                    const cachegen_stream_entry& e, float step, std::size_t c0, std::size_t c1,
                                    std::size_t tokens, dtype t, std::byte* out, std::vector<float>& anchor) noexcept {
  const std::size_t C = p.channels(), G = p.options().group_tokens;
  const rans_table* tb = p.tables(block);
  const std::byte* q = stream;
  const std::byte* const end = stream + e.stream_bytes;
  const std::byte* const escapes = end;
  if (e.stream_bytes < 8) return false;
  std::uint32_t x[2] = {0, 0};
  for (int k = 0; k < 2; ++k)
    for (int b = 0; b < 4; ++b) x[k] |= std::uint32_t(std::to_integer<std::uint8_t>(q[4 * k + b])) << (8 * b);
  q += 8;
  std::size_t n = 0;
  const auto next = [&](const rans_table& tab) -> int {
    std::uint32_t& st = x[n++ & 1];
    const std::uint32_t slot = st & (rans_total - 1);
    const std::uint8_t s = tab.symbol_of[slot];
    st = tab.freq[s] * (st >> rans_prob_bits) + slot - tab.cum[s];
    while (st < rans_low) {
      if (q == end) return -1;
      st = (st << 8) | std::to_integer<std::uint8_t>(*q++);
    }
    return s;
  };
  constexpr std::size_t lossless_base = 2 * cachegen_profile::classes;
  if (p.options().lossless) {
    for (std::size_t tok = 0; tok < tokens; ++tok) {
      const bool is_anchor = tok % G == 0;
      const rans_table& hi = tb[lossless_base + (is_anchor ? 0 : 2)];
      const rans_table& lo = tb[lossless_base + (is_anchor ? 1 : 3)];
      for (std::size_t c = c0; c < c1; ++c) {
        const int h = next(hi), l = next(lo);
        if (h < 0 || l < 0) return false;
        const std::uint16_t z = std::uint16_t((h << 8) | l);
        std::uint16_t v;
        if (is_anchor) {
          v = z;
          anchor[c] = float(z);  // 16-bit patterns are exact in a float
        } else {
          const std::uint16_t d = std::uint16_t((z >> 1) ^ std::uint16_t(-std::int16_t(z & 1)));
          v = std::uint16_t(std::uint16_t(anchor[c]) + d);
        }
        std::memcpy(out + 2 * (tok * C + c), &v, 2);
      }
    }
  } else {
    const float astep = cachegen_anchor_step(step, p.options().anchor_fraction);
    std::uint32_t used = 0;
    bool ok = true;
    with_dtype(t, [&](auto tc) {
      constexpr dtype T = decltype(tc)::value;
      const std::uint8_t* cls = &p.channel_class(block, 0);
      for (std::size_t tok = 0; tok < tokens && ok; ++tok) {
        const bool is_anchor = tok % G == 0;
        const rans_table* set = tb + (is_anchor ? 0 : cachegen_profile::classes);
        for (std::size_t c = c0; c < c1; ++c) {
          const int s = next(set[cls[c]]);
          if (s < 0) { ok = false; return; }
          std::int32_t v;
          if (s == cachegen_escape) {
            if (used == e.escapes) { ok = false; return; }
            const std::byte* ep = escapes + 4 * used++;
            v = get_le<std::int32_t>(ep);
          } else {
            v = unzigzag(std::uint32_t(s));
          }
          if (is_anchor) {
            const float xa = float(v) * astep;
            store_typed<T>(out, tok * C + c, xa);
            anchor[c] = round_to<T>(xa);
          } else {
            store_typed<T>(out, tok * C + c, anchor[c] + float(v) * step);
          }
        }
      }
    });
    if (!ok || used != e.escapes) return false;
  }
  return q == end && x[0] == rans_low && x[1] == rans_low;
}

}  // namespace detail

}  // namespace kvtier
