#pragma once
// A static range-asymmetric-numeral-system (rANS) coder over a 256-symbol alphabet: 32-bit state,
// byte-wise renormalisation, 12-bit probabilities. Encoding runs backwards over the symbols and
// writes bytes from the end of the buffer; decoding runs forwards. Two interleaved states double
// the decoder's instruction-level parallelism.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace kvtier::detail {

inline constexpr std::uint32_t rans_prob_bits = 12;
inline constexpr std::uint32_t rans_total = 1u << rans_prob_bits;
inline constexpr std::uint32_t rans_low = 1u << 23;  // state lower bound

// A frequency table normalised to rans_total, every symbol with a non-zero count kept non-zero.
struct rans_table {
  std::array<std::uint16_t, 256> freq{};
  std::array<std::uint16_t, 256> cum{};
  std::array<std::uint8_t, rans_total> symbol_of{};  // decode lookup: slot → symbol

  // Normalises counts (any scale); symbols with count 0 get frequency 1 when `cover_all`, so a
  // table fitted on samples still codes every symbol.
  static rans_table from_counts(std::span<const std::uint64_t, 256> counts, bool cover_all) {
    rans_table t;
    std::uint64_t total = 0;
    for (auto c : counts) total += c;
    std::array<std::int64_t, 256> f{};
    std::int64_t sum = 0;
    for (std::size_t s = 0; s < 256; ++s) {
      std::int64_t v = total ? std::int64_t((counts[s] * std::uint64_t(rans_total)) / total) : 0;
      if (v == 0 && (counts[s] > 0 || cover_all)) v = 1;
      f[s] = v;
      sum += v;
    }
    if (sum == 0) {  // nothing to code: a flat table
      f.fill(rans_total / 256);
      sum = rans_total;
    }
    // Move the rounding difference onto the most frequent symbols, never below 1.
    while (sum != std::int64_t(rans_total)) {
      const auto it = std::max_element(f.begin(), f.end());
      if (sum > std::int64_t(rans_total)) {
        const std::int64_t take = std::min<std::int64_t>(sum - rans_total, *it - 1);
        if (take <= 0) break;
        *it -= take;
        sum -= take;
      } else {
        *it += std::int64_t(rans_total) - sum;
        sum = rans_total;
      }
    }
    std::uint32_t c = 0;
    for (std::size_t s = 0; s < 256; ++s) {
      t.freq[s] = std::uint16_t(f[s]);
      t.cum[s] = std::uint16_t(c);
      for (std::uint32_t k = 0; k < std::uint32_t(f[s]); ++k) t.symbol_of[c + k] = std::uint8_t(s);
      c += std::uint32_t(f[s]);
    }
    return t;
  }
  bool codes(std::uint8_t s) const noexcept { return freq[s] != 0; }
};

// Encodes `symbols` (each coded by table `tables[sel[i]]`) into the tail of `out`; returns the
// number of bytes written at the front of `out` after moving them there, or 0 when `out` is too
// small (a caller sizes `out` by the bound below).
inline std::size_t rans_encode(std::span<const std::uint8_t> symbols, std::span<const std::uint8_t> sel,
                               std::span<const rans_table* const> tables, std::span<std::byte> out) noexcept {
  std::byte* const begin = out.data();
  std::byte* p = begin + out.size();
  std::uint32_t x[2] = {rans_low, rans_low};
  for (std::size_t n = symbols.size(); n-- > 0;) {
    const rans_table& t = *tables[sel[n]];
    const std::uint8_t s = symbols[n];
    const std::uint32_t f = t.freq[s];
    if (f == 0) return 0;  // the table cannot code this symbol: the caller escapes it
    std::uint32_t& st = x[n & 1];
    const std::uint32_t x_max = ((rans_low >> rans_prob_bits) << 8) * f;
    while (st >= x_max) {
      if (p == begin) return 0;
      *--p = std::byte(st & 0xff);
      st >>= 8;
    }
    st = ((st / f) << rans_prob_bits) + (st % f) + t.cum[s];
  }
  if (std::size_t(p - begin) < 8) return 0;
  p -= 8;
  for (int k = 0; k < 2; ++k)  // the final states, little-endian, state 0 first
    for (int b = 0; b < 4; ++b) p[4 * k + b] = std::byte((x[k] >> (8 * b)) & 0xff);
  const std::size_t n = std::size_t(begin + out.size() - p);
  std::memmove(begin, p, n);
  return n;
}

// Worst case: every symbol at frequency 1 costs 12 bits, plus the two 4-byte states.
constexpr std::size_t rans_bound(std::size_t symbols) noexcept { return 8 + (symbols * 12 + 7) / 8 + 16; }

// Decodes `symbols.size()` symbols; false when the stream ends early or does not end exactly.
inline bool rans_decode(std::span<const std::byte> in, std::span<const std::uint8_t> sel,
                        std::span<const rans_table* const> tables, std::span<std::uint8_t> symbols) noexcept {
  if (in.size() < 8) return false;
  const std::byte* p = in.data();
  const std::byte* const end = p + in.size();
  std::uint32_t x[2] = {0, 0};
  for (int k = 0; k < 2; ++k)
    for (int b = 0; b < 4; ++b) x[k] |= std::uint32_t(std::to_integer<std::uint8_t>(p[4 * k + b])) << (8 * b);
  p += 8;
  for (std::size_t n = 0; n < symbols.size(); ++n) {
    const rans_table& t = *tables[sel[n]];
    std::uint32_t& st = x[n & 1];
    const std::uint32_t slot = st & (rans_total - 1);
    const std::uint8_t s = t.symbol_of[slot];
    st = t.freq[s] * (st >> rans_prob_bits) + slot - t.cum[s];
    while (st < rans_low) {
      if (p == end) return false;
      st = (st << 8) | std::to_integer<std::uint8_t>(*p++);
    }
    symbols[n] = s;
  }
  return p == end && x[0] == rans_low && x[1] == rans_low;
}

}  // namespace kvtier::detail
