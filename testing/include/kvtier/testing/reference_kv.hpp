#pragma once
// Deterministic KV content for tests and demos: the bytes of one (layer, kv, position) row are a
// function of (namespace, token prefix up to and including position, layer, kv, position).
// Two requests that share a prefix therefore get identical KV for it, exactly like a real model,
// and any page served from the wrong prefix, namespace, layer or slot shows up as a mismatch.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/testing/splitmix64.hpp"

namespace kvtier::testing {

class reference_kv {
 public:
  explicit reference_kv(kv_shape shape, std::uint64_t seed = 0) : shape_(shape), seed_(seed) {}

  const kv_shape& shape() const noexcept { return shape_; }

  // A chained hash of the namespace and every token up to each position: out[i] covers tokens[0..i].
  void prefix_hashes(std::uint64_t name_space, std::span<const token_id> tokens, std::span<std::uint64_t> out) const {
    if (out.size() < tokens.size()) throw config_error("kvtier: reference_kv::prefix_hashes output too small");
    std::uint64_t h = splitmix64(seed_ ^ splitmix64(name_space + 0x51ed27ull));
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      h = splitmix64(h ^ (std::uint64_t(std::uint32_t(tokens[i].value())) * 0xff51afd7ed558ccdull));
      out[i] = h;
    }
  }
  std::vector<std::uint64_t> prefix_hashes(std::uint64_t name_space, std::span<const token_id> tokens) const {
    std::vector<std::uint64_t> out(tokens.size());
    prefix_hashes(name_space, tokens, out);
    return out;
  }

  // Fills one row (all heads of one token of one layer's K or V): shape().row_bytes() bytes.
  void fill_row(std::uint64_t prefix_hash, std::size_t layer, std::size_t kv, std::size_t position,
                std::span<std::byte> row) const noexcept {
    std::uint64_t s = splitmix64(prefix_hash ^ (std::uint64_t(layer) << 40) ^ (std::uint64_t(kv) << 56) ^
                                         (std::uint64_t(position) * 0x9e3779b97f4a7c15ull));
    std::size_t i = 0;
    for (; i + 8 <= row.size(); i += 8) {
      const std::uint64_t w = splitmix64(s + i);
      std::memcpy(row.data() + i, &w, 8);
    }
    if (i < row.size()) {
      const std::uint64_t w = splitmix64(s + i);
      std::memcpy(row.data() + i, &w, row.size() - i);
    }
  }

  // True when `row` holds exactly what fill_row gives.
  bool check_row(std::uint64_t prefix_hash, std::size_t layer, std::size_t kv, std::size_t position,
                 std::span<const std::byte> row) const noexcept {
    std::byte expect[256];
    std::size_t done = 0;
    while (done < row.size()) {
      // Regenerate in 256-byte chunks: fill_row's words are indexed by absolute offset.
      const std::size_t n = std::min<std::size_t>(sizeof expect, row.size() - done);
      std::uint64_t s = splitmix64(prefix_hash ^ (std::uint64_t(layer) << 40) ^ (std::uint64_t(kv) << 56) ^
                                           (std::uint64_t(position) * 0x9e3779b97f4a7c15ull));
      for (std::size_t i = 0; i < n; i += 8) {
        const std::uint64_t w = splitmix64(s + done + i);
        std::memcpy(expect + i, &w, std::min<std::size_t>(8, n - i));
      }
      if (std::memcmp(expect, row.data() + done, n) != 0) return false;
      done += n;
    }
    return true;
  }

 private:
  kv_shape shape_;
  std::uint64_t seed_;
};

}  // namespace kvtier::testing
