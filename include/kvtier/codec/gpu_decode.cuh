#pragma once
// Decoding KV pages on the GPU, straight into the engine's layer-first pool, so pages can stay
// compressed in host memory and cross PCIe compressed: the host → device copy moves encoded bytes
// (copy engine), these kernels expand them in HBM.
//
//  - int8 / fp8: one thread block per (page, layer, kv) block; each thread expands 4 codes at a time.
//  - cachegen: one thread per (page, layer, kv) block: the block's rANS stream is sequential, but a
//    batch has thousands of blocks (a 32K-token prefix of Llama-3-8B: 131,072), enough to fill the GPU.
//    Each thread writes its block's rows (contiguous in the pool) 16 bytes at a time and reads its
//    anchors back from what it wrote (the encoder's closed loop uses the stored anchor).
//
// Results are bit-identical to the CPU decoders (no fused multiply-add: __fmul_rn / __fadd_rn).
// A page that fails to decode (damage the checksum missed, a wrong tag) sets its status to 1; the
// caller treats it as a miss.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kvtier/codec/cachegen.hpp"
#include "kvtier/codec/kv_page.hpp"
#include "kvtier/codec/scaled_8bit.hpp"
#include "kvtier/memory/cuda_support.cuh"
#include "kvtier/transfer/views.hpp"

namespace kvtier {

// One encoded page in device memory and the pool slot its decoded KV goes to.
struct encoded_page {
  const std::byte* data = nullptr;
  std::uint32_t bytes = 0;
  std::uint32_t slot = 0;
};

// A cachegen profile's tables in device memory (RAII; build once per model and codec).
class device_cachegen_profile {
 public:
  struct table {  // one rans_table, as the kernel reads it
    std::uint16_t freq[256];
    std::uint16_t cum[256];
    std::uint8_t symbol_of[detail::rans_total];
  };

  explicit device_cachegen_profile(const cachegen_profile& p) : host_(&p) {
    const std::size_t nb = p.blocks(), nt = nb * cachegen_profile::tables_per_block;
    std::vector<table> t(nt);
    for (std::size_t b = 0; b < nb; ++b)
      for (std::size_t k = 0; k < cachegen_profile::tables_per_block; ++k) {
        const detail::rans_table& r = p.tables(b)[k];
        table& d = t[b * cachegen_profile::tables_per_block + k];
        for (int s = 0; s < 256; ++s) {
          d.freq[s] = r.freq[std::size_t(s)];
          d.cum[s] = r.cum[std::size_t(s)];
        }
        for (std::uint32_t i = 0; i < detail::rans_total; ++i) d.symbol_of[i] = r.symbol_of[i];
      }
    std::vector<std::uint8_t> cls(nb * p.channels());
    for (std::size_t b = 0; b < nb; ++b)
      for (std::size_t c = 0; c < p.channels(); ++c) cls[b * p.channels() + c] = p.channel_class(b, c);
    void* tp = nullptr;
    void* cp = nullptr;
    memory::detail::cuda_check(cudaMalloc(&tp, nt * sizeof(table)), "cudaMalloc (cachegen tables)");
    tables_.reset(static_cast<table*>(tp));
    memory::detail::cuda_check(cudaMalloc(&cp, cls.size()), "cudaMalloc (cachegen classes)");
    classes_.reset(static_cast<std::uint8_t*>(cp));
    memory::detail::cuda_check(cudaMemcpy(tp, t.data(), nt * sizeof(table), cudaMemcpyHostToDevice), "cudaMemcpy (tables)");
    memory::detail::cuda_check(cudaMemcpy(cp, cls.data(), cls.size(), cudaMemcpyHostToDevice), "cudaMemcpy (classes)");
  }

  const cachegen_profile& host() const noexcept { return *host_; }
  const table* tables() const noexcept { return tables_.get(); }
  const std::uint8_t* classes() const noexcept { return classes_.get(); }

 private:
  struct cuda_free {
    void operator()(void* p) const noexcept { (void)cudaFree(p); }
  };
  const cachegen_profile* host_;
  std::unique_ptr<table, cuda_free> tables_;
  std::unique_ptr<std::uint8_t, cuda_free> classes_;
};

namespace detail {

template <class T>
__device__ inline T load_unaligned(const std::byte* p) {
  T v;
  memcpy(&v, p, sizeof(T));
  return v;
}

// Stores element i of T-typed row data; T is bf16, fp16 or fp32.
template <dtype T>
__device__ inline void store_dev(std::byte* p, std::size_t i, float v) {
  if constexpr (T == dtype::bf16) reinterpret_cast<std::uint16_t*>(p)[i] = float_to_bf16_bits(v);
  else if constexpr (T == dtype::fp16) reinterpret_cast<std::uint16_t*>(p)[i] = float_to_fp16_bits(v);
  else reinterpret_cast<float*>(p)[i] = v;
}

// grid: (blocks per page, pages); block: 256 threads. Page layout: u64 tag | per vector: f32 scale, dim codes.
template <class Format, dtype T>
__global__ void decode_scaled_8bit(const encoded_page* pages, std::uint64_t tag, std::size_t page_tokens,
                                   std::size_t heads, std::size_t dim, transfer::layer_first_buffer pool,
                                   std::size_t kv_planes, std::uint32_t expect_bytes, std::uint8_t* status) {
  const encoded_page pg = pages[blockIdx.y];
  const std::size_t b = blockIdx.x;  // (layer, kv) block of the page
  if (pg.bytes != expect_bytes || load_unaligned<std::uint64_t>(pg.data) != tag) {
    if (threadIdx.x == 0 && b == 0) status[blockIdx.y] = 1;
    return;
  }
  const std::size_t l = b / kv_planes, k = b % kv_planes;
  std::byte* dst = pool.page_row(l, k, pg.slot, page_tokens, 0, 0);  // rows contiguous: (token, head, dim)
  const std::size_t vecs = page_tokens * heads, quads = dim / 4;
  const std::byte* src = pg.data + 8 + b * vecs * (4 + dim);
  for (std::size_t i = threadIdx.x; i < vecs * quads; i += blockDim.x) {
    const std::size_t v = i / quads, q = i % quads;
    const std::byte* vp = src + v * (4 + dim);
    const float scale = load_unaligned<float>(vp);
    const std::uint32_t codes = load_unaligned<std::uint32_t>(vp + 4 + 4 * q);
#pragma unroll
    for (int j = 0; j < 4; ++j)
      store_dev<T>(dst, v * dim + 4 * q + std::size_t(j), __fmul_rn(Format::decode_dev(std::uint8_t(codes >> (8 * j))), scale));
  }
}

// One thread per (page, block). Mirrors detail::cachegen_decode_block.
template <dtype T>
__global__ void decode_cachegen(const encoded_page* pages, std::size_t n_pages, std::uint64_t tag, std::uint64_t raw_tag,
                                const device_cachegen_profile::table* tables, const std::uint8_t* classes,
                                std::size_t blocks, std::size_t page_tokens, std::size_t channels, std::size_t group,
                                double anchor_fraction, bool lossless, transfer::layer_first_buffer pool,
                                std::size_t kv_planes, std::uint8_t* status) {
  const std::size_t gid = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (gid >= n_pages * blocks) return;
  const std::size_t p = gid / blocks, b = gid % blocks;
  const encoded_page pg = pages[p];
  const std::size_t block_elems = page_tokens * channels;
  std::byte* out = pool.page_row(b / kv_planes, b % kv_planes, pg.slot, page_tokens, 0, 0);
  const std::uint64_t tg = pg.bytes >= 8 ? load_unaligned<std::uint64_t>(pg.data) : 0;
  const auto fail = [&] { status[p] = 1; };
  if (tg == raw_tag) {  // stored raw: copy this block's bytes
    if (pg.bytes != 8 + blocks * block_elems * size_of(T)) return fail();
    const std::byte* src = pg.data + 8 + b * block_elems * size_of(T);
    for (std::size_t i = 0; i < block_elems * size_of(T); i += 4) *reinterpret_cast<std::uint32_t*>(out + i) = load_unaligned<std::uint32_t>(src + i);
    return;
  }
  if (tg != tag || pg.bytes < 8 + cachegen_entry_bytes * blocks) return fail();
  // This block's directory entry and where its stream starts.
  const std::byte* dir = pg.data + 8;
  std::size_t offset = 8 + cachegen_entry_bytes * blocks;
  for (std::size_t i = 0; i < b; ++i)
    offset += std::size_t(load_unaligned<std::uint32_t>(dir + 12 * i)) + 4 * std::size_t(load_unaligned<std::uint32_t>(dir + 12 * i + 4));
  const std::uint32_t stream_bytes = load_unaligned<std::uint32_t>(dir + 12 * b);
  const std::uint32_t n_esc = load_unaligned<std::uint32_t>(dir + 12 * b + 4);
  const float step = load_unaligned<float>(dir + 12 * b + 8);
  if (stream_bytes < 8 || offset + stream_bytes + 4 * std::size_t(n_esc) > pg.bytes || !(step > 0) || !isfinite(step)) return fail();
  const std::byte* q = pg.data + offset;
  const std::byte* const end = q + stream_bytes;
  const std::byte* const esc = end;
  std::uint32_t x0 = load_unaligned<std::uint32_t>(q), x1 = load_unaligned<std::uint32_t>(q + 4);
  q += 8;
  const device_cachegen_profile::table* tb = tables + b * cachegen_profile::tables_per_block;
  const std::uint8_t* cls = classes + b * channels;
  std::size_t n = 0;
  bool ok = true;
  const auto next = [&](const device_cachegen_profile::table& t) -> std::uint32_t {
    std::uint32_t& st = (n++ & 1) ? x1 : x0;
    const std::uint32_t slot = st & (rans_total - 1);
    const std::uint32_t s = t.symbol_of[slot];
    st = std::uint32_t(t.freq[s]) * (st >> rans_prob_bits) + slot - t.cum[s];
    while (st < rans_low) {
      if (q == end) { ok = false; return 0; }
      st = (st << 8) | std::uint32_t(*reinterpret_cast<const std::uint8_t*>(q++));
    }
    return s;
  };
  const float astep = cachegen_anchor_step(step, anchor_fraction);
  std::uint32_t used = 0;
  constexpr std::size_t lossless_base = 2 * cachegen_profile::classes;
  for (std::size_t tok = 0; tok < page_tokens && ok; ++tok) {
    const bool is_anchor = tok % group == 0;
    const std::size_t anchor_row = (tok / group) * group * channels;
    for (std::size_t c = 0; c < channels && ok; ++c) {
      if (lossless) {
        const std::uint32_t h = next(tb[lossless_base + (is_anchor ? 0 : 2)]);
        const std::uint32_t lo = next(tb[lossless_base + (is_anchor ? 1 : 3)]);
        const std::uint16_t z = std::uint16_t((h << 8) | lo);
        std::uint16_t v = z;
        if (!is_anchor) {
          const std::uint16_t d = std::uint16_t((z >> 1) ^ std::uint16_t(-std::int16_t(z & 1)));
          v = std::uint16_t(reinterpret_cast<const std::uint16_t*>(out)[anchor_row + c] + d);
        }
        reinterpret_cast<std::uint16_t*>(out)[tok * channels + c] = v;
        continue;
      }
      const std::uint32_t s = next(tb[(is_anchor ? 0 : cachegen_profile::classes) + cls[c]]);
      std::int32_t v;
      if (s == cachegen_escape) {
        if (used == n_esc) { ok = false; break; }
        v = load_unaligned<std::int32_t>(esc + 4 * used++);
      } else {
        v = unzigzag(s);
      }
      float xv;
      if (is_anchor) {
        xv = __fmul_rn(float(v), astep);
      } else {  // the anchor as stored (the encoder's closed loop used the same value)
        float a;
        if constexpr (T == dtype::bf16) a = bf16_bits_to_float(reinterpret_cast<const std::uint16_t*>(out)[anchor_row + c]);
        else if constexpr (T == dtype::fp16) a = fp16_bits_to_float(reinterpret_cast<const std::uint16_t*>(out)[anchor_row + c]);
        else a = reinterpret_cast<const float*>(out)[anchor_row + c];
        xv = __fadd_rn(a, __fmul_rn(float(v), step));
      }
      store_dev<T>(out, tok * channels + c, xv);
    }
  }
  if (!ok || used != n_esc || q != end || x0 != rans_low || x1 != rans_low) fail();
}

}  // namespace detail

// Decodes `count` pages (array in device memory) into `pool` with codec `c` on `stream`; status
// (device, count bytes, zeroed by the caller) gets 1 for every page that failed.
template <class Format>
cudaError_t decode_on_device(const scaled_8bit_codec<Format>& c, const encoded_page* pages, std::size_t count,
                             const transfer::layer_first_buffer& pool, std::uint8_t* status, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const kv_page_geometry& g = c.geometry();
  if (g.shape.head_dim() % 4 != 0) return cudaErrorInvalidValue;
  const dim3 grid(unsigned(g.shape.layers() * g.shape.kv_planes()), unsigned(count));
  const std::uint64_t tag = detail::geometry_tag(g, Format::id);
  const auto bytes = std::uint32_t(c.max_encoded_bytes(g.page_bytes()));
  return detail::with_dtype(g.shape.element_type(), [&](auto t) {
    detail::decode_scaled_8bit<Format, decltype(t)::value><<<grid, 256, 0, stream>>>(
        pages, tag, g.page_tokens, g.shape.heads(), g.shape.head_dim(), pool, g.shape.kv_planes(), bytes, status);
    return cudaGetLastError();
  });
}

inline cudaError_t decode_on_device(const cachegen_codec& c, const device_cachegen_profile& dp, const encoded_page* pages,
                                    std::size_t count, const transfer::layer_first_buffer& pool, std::uint8_t* status,
                                    cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (&dp.host() != c.profile()) return cudaErrorInvalidValue;
  const kv_page_geometry& g = c.geometry();
  const cachegen_profile& p = dp.host();
  const std::size_t blocks = p.blocks(), threads = count * blocks;
  const unsigned block_threads = 64;
  return detail::with_dtype(g.shape.element_type(), [&](auto t) {
    detail::decode_cachegen<decltype(t)::value><<<unsigned((threads + block_threads - 1) / block_threads), block_threads, 0, stream>>>(
        pages, count, c.page_tag(), c.raw_page_tag(), dp.tables(), dp.classes(), blocks, g.page_tokens, p.channels(),
        p.options().group_tokens, p.options().anchor_fraction, p.options().lossless, pool, g.shape.kv_planes(), status);
    return cudaGetLastError();
  });
}

}  // namespace kvtier
