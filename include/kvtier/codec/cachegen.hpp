#pragma once
// A CacheGen-style KV codec (Liu et al., SIGCOMM '24): KV of neighbouring tokens is close, so each
// group of G tokens keeps an anchor token and codes the others as deltas from it; the quantized
// symbols are entropy-coded (rANS) with distributions fitted per model on sample KV and stored in
// the model's codec profile, per (layer, kv) and per channel class (channels bucketed by how much
// they vary). Deeper layers may take coarser steps (`layer_slope`). A lossless mode codes the exact
// 16-bit patterns the same way; it is bit-exact and exists for tests and for tiers that must not lose.
//
// Encoded page: u64 tag (geometry, profile fingerprint, mode) | a directory: per (layer, kv) block
// a f32 step (the profile's relative step × the block's RMS), then per stream (the block's channels
// split into `streams_per_block` segments) u32 offset, u32 stream bytes, u32 escapes | the streams,
// each followed by its escapes (i32). Streams are independent, so a decoder may run one per
// (page, block, segment) — the GPU decoder does. A page that does not compress is stored raw.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "kvtier/codec/cachegen_profile.hpp"
#include "kvtier/codec/concepts.hpp"
#include "kvtier/codec/detail/cachegen_decode.hpp"
#include "kvtier/codec/detail/rans.hpp"
#include "kvtier/codec/kv_page.hpp"
#include "kvtier/core/error.hpp"

namespace kvtier {

// The codec: constructed with the page geometry and a fitted profile for the same KV shape.
class cachegen_codec {
 public:
  using kvtier_codec = codec_tag;
  static constexpr std::uint32_t id = 4;

  cachegen_codec() noexcept = default;  // unconfigured: refuses every page
  cachegen_codec(kv_page_geometry g, std::shared_ptr<const cachegen_profile> p) : g_(g), p_(std::move(p)) {
    g_.check();
    if (!p_) throw config_error("kvtier: cachegen_codec needs a profile");
    if (!(p_->shape() == g_.shape)) throw config_error("kvtier: cachegen profile fitted for another KV shape");
  }

  const cachegen_profile* profile() const noexcept { return p_.get(); }
  bool configured() const noexcept { return p_ != nullptr; }
  const kv_page_geometry& geometry() const noexcept { return g_; }
  // The first 8 bytes of this codec's compressed and raw pages (decoders check them).
  std::uint64_t page_tag() const noexcept { return tag(); }
  std::uint64_t raw_page_tag() const noexcept { return tag() ^ raw_mode; }

  // Never more than the page plus its framing: a page that does not compress is stored raw.
  std::size_t max_encoded_bytes(std::size_t n) const noexcept {
    return 8 + n + (p_ ? dir_bytes() : 0);
  }

  result<std::size_t> encode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (!p_ || in.size() != g_.page_bytes()) return make_error(errc::invalid_argument);
    if (out.size() < max_encoded_bytes(in.size())) return make_error(errc::invalid_argument);
    out = out.first(max_encoded_bytes(in.size()));
    try {
      if (const std::size_t n = encode_compressed(in, out)) return n;
    } catch (...) {  // allocation failure: fall back to the raw page, never throw
    }
    std::byte* o = out.data();
    detail::put_le<std::uint64_t>(o, tag() ^ raw_mode);
    std::memcpy(o, in.data(), in.size());
    return 8 + in.size();
  }

  result<std::size_t> decode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (!p_ || out.size() != g_.page_bytes()) return make_error(errc::invalid_argument);
    if (in.size() < 8) return make_error(errc::corrupted);
    try {
      const std::byte* q = in.data();
      const std::byte* const end = q + in.size();
      const std::uint64_t tg = detail::get_le<std::uint64_t>(q);
      if (tg == (tag() ^ raw_mode)) {
        if (std::size_t(end - q) != out.size()) return make_error(errc::corrupted);
        std::memcpy(out.data(), q, out.size());
        return out.size();
      }
      if (tg != tag()) return make_error(errc::corrupted);
      const std::size_t nb = p_->blocks(), S = p_->options().streams_per_block, C = p_->channels();
      if (in.size() < 8 + dir_bytes()) return make_error(errc::corrupted);
      std::vector<float> anchor(C);
      const std::size_t block_bytes = g_.page_tokens * C * g_.shape.element_bytes();
      std::size_t expect = 8 + dir_bytes();  // streams follow the directory back to back
      for (std::size_t b = 0; b < nb; ++b) {
        const std::byte* d = in.data() + 8 + b * detail::cachegen_block_dir_bytes(S);
        const float step = detail::get_le<float>(d);
        if (!(step > 0) || !std::isfinite(step)) return make_error(errc::corrupted);
        for (std::size_t sg = 0; sg < S; ++sg) {
          detail::cachegen_stream_entry e;
          e.offset = detail::get_le<std::uint32_t>(d);
          e.stream_bytes = detail::get_le<std::uint32_t>(d);
          e.escapes = detail::get_le<std::uint32_t>(d);
          const std::size_t len = std::size_t(e.stream_bytes) + 4 * std::size_t(e.escapes);
          if (e.offset != expect || len > in.size() - expect) return make_error(errc::corrupted);
          expect += len;
          if (!detail::cachegen_decode_segment(*p_, b, in.data() + e.offset, e, step, detail::segment_begin(sg, S, C),
                                               detail::segment_begin(sg + 1, S, C), g_.page_tokens,
                                               g_.shape.element_type(), out.data() + b * block_bytes, anchor))
            return make_error(errc::corrupted);
        }
      }
      if (expect != in.size()) return make_error(errc::corrupted);
      return out.size();
    } catch (...) {
      return make_error(errc::capacity_exhausted);
    }
  }

 private:
  static constexpr std::uint64_t raw_mode = 0x5241575041474531ull;  // tag bit pattern of a raw page

  // The compressed form, or 0 when it would not fit in `out` (the caller then stores the page raw).
  std::size_t encode_compressed(std::span<const std::byte> in, std::span<std::byte> out) const {
    const std::size_t nb = p_->blocks(), S = p_->options().streams_per_block, C = p_->channels();
    std::byte* o = out.data();
    std::byte* const end = out.data() + out.size();
    detail::put_le<std::uint64_t>(o, tag());
    if (std::size_t(end - o) < dir_bytes()) return 0;
    std::byte* dir = o;
    o += dir_bytes();
    detail::cachegen_block_symbols sym;
    const std::size_t per_block = g_.page_tokens * C;
    const dtype t = g_.shape.element_type();
    for (std::size_t b = 0; b < nb; ++b) {
      const float step = p_->options().lossless ? 1.f : detail::cachegen_block_step(*p_, b, in.data(), t, b * per_block, per_block);
      detail::put_le<float>(dir, step);
      const detail::rans_table* tb = p_->tables(b);
      const detail::rans_table* ptrs[cachegen_profile::tables_per_block];
      for (std::size_t k = 0; k < cachegen_profile::tables_per_block; ++k) ptrs[k] = tb + k;
      for (std::size_t sg = 0; sg < S; ++sg) {
        detail::cachegen_symbols(*p_, b, in.data(), t, b * per_block, g_.page_tokens, detail::segment_begin(sg, S, C),
                                 detail::segment_begin(sg + 1, S, C), step, sym);
        const std::size_t reserve = 4 * sym.escapes.size();
        if (std::size_t(end - o) <= reserve) return 0;
        const std::size_t n = detail::rans_encode(sym.symbols, sym.sel, ptrs, std::span<std::byte>(o, std::size_t(end - o) - reserve));
        if (n == 0) return 0;
        detail::put_le<std::uint32_t>(dir, std::uint32_t(o - out.data()));
        detail::put_le<std::uint32_t>(dir, std::uint32_t(n));
        detail::put_le<std::uint32_t>(dir, std::uint32_t(sym.escapes.size()));
        o += n;
        for (std::int32_t e : sym.escapes) detail::put_le<std::int32_t>(o, e);
      }
    }
    return std::size_t(o - out.data());
  }

  std::size_t dir_bytes() const noexcept {
    return p_->blocks() * detail::cachegen_block_dir_bytes(p_->options().streams_per_block);
  }

  std::uint64_t tag() const noexcept { return detail::geometry_tag(g_, id) ^ p_->fingerprint(); }

  kv_page_geometry g_{kv_shape::mha(1, 1, 1, dtype::bf16), 1};
  std::shared_ptr<const cachegen_profile> p_;
};

static_assert(page_codec<cachegen_codec>);

}  // namespace kvtier
