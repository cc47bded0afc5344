#pragma once
// Decoding KV pages on the GPU, straight into the engine's layer-first pool, so pages can stay
// compressed in host memory and cross PCIe compressed: the host → device copy moves encoded bytes
// (copy engine), these kernels expand them in HBM.
//
//  - int8 / fp8: one thread block per (page, layer, kv) block; each thread expands 4 codes at a time.
//  - cachegen: one thread per (page, layer, kv, channel segment) stream: each rANS stream is
//    sequential, but a batch has many (1 GiB of Llama-3-8B KV at 8 streams a block: 262,144), enough
//    to fill the GPU. Each thread writes its segment of each row 16 bytes at a time and reads its
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

// One encoded page in device memory and the pool slot its decoded KV goes to. The decoders read
// whole aligned 4-byte words: the memory must stay readable up to the 4-byte boundary after the
// page (allocations are; packed pages should be padded, as the bench and tests pad to 16).
struct encoded_page {
  const std::byte* data = nullptr;
  std::uint32_t bytes = 0;
  std::uint32_t slot = 0;
};

// A cachegen profile's tables in device memory (RAII; build once per model and codec).
class device_cachegen_profile {
 public:
  struct table {  // one rans_table, as the kernel reads it (copied into shared memory)
    std::uint32_t freq_cum[256];  // freq | cum << 16
    std::uint8_t symbol_of[detail::rans_total];
  };

  explicit device_cachegen_profile(const cachegen_profile& p) : host_(&p) {
    const std::size_t nb = p.blocks(), nt = nb * cachegen_profile::tables_per_block;
    std::vector<table> t(nt);
    for (std::size_t b = 0; b < nb; ++b)
      for (std::size_t k = 0; k < cachegen_profile::tables_per_block; ++k) {
        const detail::rans_table& r = p.tables(b)[k];
        table& d = t[b * cachegen_profile::tables_per_block + k];
        for (int s = 0; s < 256; ++s) d.freq_cum[s] = std::uint32_t(r.freq[std::size_t(s)]) | std::uint32_t(r.cum[std::size_t(s)]) << 16;
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

// Collects consecutive 16-bit outputs of one row segment and stores them 16 bytes at a time.
struct row_writer16 {
  std::uint16_t* base;  // the row segment's first element
  std::uint32_t buf[4];
  unsigned n = 0;       // elements buffered
  std::size_t at = 0;   // index of the first buffered element
  __device__ void put(std::uint16_t v) {
    const unsigned w = n >> 1;
    if (n & 1) buf[w] |= std::uint32_t(v) << 16;
    else buf[w] = v;
    if (++n == 8) flush();
  }
  __device__ void flush() {
    std::uint16_t* p = base + at;
    if (n == 8 && (reinterpret_cast<std::uintptr_t>(p) & 15) == 0) {
      *reinterpret_cast<uint4*>(p) = make_uint4(buf[0], buf[1], buf[2], buf[3]);
    } else {
      for (unsigned i = 0; i < n; ++i) p[i] = std::uint16_t(buf[i >> 1] >> (16 * (i & 1)));
    }
    at += n;
    n = 0;
  }
};

// Tables a decoding CTA keeps in shared memory: the 8 lossy or the 4 lossless tables of one
// (layer, kv) block, and the block's channel classes.
inline constexpr std::size_t cachegen_smem_tables = 2 * cachegen_profile::classes;

// grid: (CTAs over pages × segments, blocks); every thread of a CTA decodes streams of the same
// (layer, kv) block, so the block's tables sit in shared memory. Mirrors detail::cachegen_decode_segment.
template <dtype T>
__global__ void __launch_bounds__(256) decode_cachegen(
    const encoded_page* pages, std::size_t n_pages, std::uint64_t tag, std::uint64_t raw_tag,
    const device_cachegen_profile::table* tables, const std::uint8_t* classes, std::size_t blocks, std::size_t segments,
    std::size_t page_tokens, std::size_t channels, std::size_t group, double anchor_fraction, bool lossless,
    transfer::layer_first_buffer pool, std::size_t kv_planes, std::uint8_t* status) {
  extern __shared__ __align__(16) unsigned char smem[];
  using table = device_cachegen_profile::table;
  table* tab = reinterpret_cast<table*>(smem);
  std::uint8_t* cls = smem + cachegen_smem_tables * sizeof(table);
  const std::size_t b = blockIdx.y;
  {  // stage this block's tables and classes
    const std::size_t first = lossless ? 2 * cachegen_profile::classes : 0, count = lossless ? 4 : cachegen_smem_tables;
    const uint4* src = reinterpret_cast<const uint4*>(tables + b * cachegen_profile::tables_per_block + first);
    uint4* dst = reinterpret_cast<uint4*>(tab);
    for (std::size_t i = threadIdx.x; i < count * sizeof(table) / 16; i += blockDim.x) dst[i] = src[i];
    for (std::size_t i = threadIdx.x; i < channels; i += blockDim.x) cls[i] = classes[b * channels + i];
  }
  __syncthreads();
  const std::size_t gid = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (gid >= n_pages * segments) return;
  const std::size_t sg = gid % segments, p = gid / segments;
  const encoded_page pg = pages[p];
  const std::size_t block_elems = page_tokens * channels;
  std::byte* out = pool.page_row(b / kv_planes, b % kv_planes, pg.slot, page_tokens, 0, 0);
  const std::uint64_t tg = pg.bytes >= 8 ? load_unaligned<std::uint64_t>(pg.data) : 0;
  const std::size_t c0 = segment_begin(sg, segments, channels), c1 = segment_begin(sg + 1, segments, channels);
  if (tg == raw_tag) {  // stored raw: copy this segment's part of each row
    if (pg.bytes != 8 + blocks * block_elems * size_of(T)) { status[p] = 1; return; }
    const std::byte* src = pg.data + 8 + b * block_elems * size_of(T);
    for (std::size_t tok = 0; tok < page_tokens; ++tok)
      for (std::size_t i = (tok * channels + c0) * size_of(T); i < (tok * channels + c1) * size_of(T); ++i) out[i] = src[i];
    return;
  }
  const std::size_t dir_bytes = blocks * cachegen_block_dir_bytes(segments);
  if (tg != tag || pg.bytes < 8 + dir_bytes) { status[p] = 1; return; }
  const std::byte* d = pg.data + 8 + b * cachegen_block_dir_bytes(segments);
  const float step = load_unaligned<float>(d);
  const std::uint32_t offset = load_unaligned<std::uint32_t>(d + 4 + 12 * sg);
  const std::uint32_t stream_bytes = load_unaligned<std::uint32_t>(d + 8 + 12 * sg);
  const std::uint32_t n_esc = load_unaligned<std::uint32_t>(d + 12 + 12 * sg);
  if (stream_bytes < 8 || offset < 8 + dir_bytes || std::size_t(offset) + stream_bytes + 4 * std::size_t(n_esc) > pg.bytes ||
      !(step > 0) || !isfinite(step)) { status[p] = 1; return; }
  const std::byte* const esc = pg.data + offset + stream_bytes;
  std::uint32_t x0 = load_unaligned<std::uint32_t>(pg.data + offset), x1 = load_unaligned<std::uint32_t>(pg.data + offset + 4);
  // The renormalisation bytes, read one aligned 32-bit word at a time (a byte load per byte would
  // cost a cache-line request per lane).
  std::size_t pos = std::size_t(offset) + 8;
  const std::size_t end = std::size_t(offset) + stream_bytes;
  const std::uint32_t* words = reinterpret_cast<const std::uint32_t*>(reinterpret_cast<std::uintptr_t>(pg.data) & ~std::uintptr_t{3});
  const std::size_t skew = reinterpret_cast<std::uintptr_t>(pg.data) & 3;  // pg.data's offset in its word
  std::size_t word_at = ~std::size_t{0};
  std::uint32_t word = 0;
  std::size_t n = 0;
  bool ok = true;
  const auto next_byte = [&]() -> std::uint32_t {
    const std::size_t a = pos + skew;
    if ((a >> 2) != word_at) {
      word_at = a >> 2;
      word = __ldg(words + word_at);
    }
    ++pos;
    return (word >> (8 * (a & 3))) & 0xffu;
  };
  const auto next = [&](const table& t) -> std::uint32_t {
    std::uint32_t& st = (n++ & 1) ? x1 : x0;
    const std::uint32_t slot = st & (rans_total - 1);
    const std::uint32_t s = t.symbol_of[slot];
    const std::uint32_t fc = t.freq_cum[s];
    st = (fc & 0xffffu) * (st >> rans_prob_bits) + slot - (fc >> 16);
    while (st < rans_low) {
      if (pos == end) { ok = false; return 0; }
      st = (st << 8) | next_byte();
    }
    return s;
  };
  const float astep = cachegen_anchor_step(step, anchor_fraction);
  std::uint32_t used = 0;
  // A symbol's quantized value: zig-zag decoded, or the next escape; false past the escapes.
  const auto value_of = [&](std::uint32_t s, std::int32_t& v) -> bool {
    if (s != cachegen_escape) {
      v = unzigzag(s);
      return true;
    }
    if (used == n_esc) return false;
    v = load_unaligned<std::int32_t>(esc + 4 * used++);
    return true;
  };
  for (std::size_t tok = 0; tok < page_tokens && ok; ++tok) {
    const bool is_anchor = tok % group == 0;
    const std::size_t anchor_row = (tok / group) * group * channels;
    if constexpr (T == dtype::fp32) {
      for (std::size_t c = c0; c < c1 && ok; ++c) {
        std::int32_t v;
        if (!value_of(next(tab[(is_anchor ? 0 : cachegen_profile::classes) + cls[c]]), v)) { ok = false; break; }
        float* o = reinterpret_cast<float*>(out);
        o[tok * channels + c] = is_anchor ? __fmul_rn(float(v), astep) : __fadd_rn(o[anchor_row + c], __fmul_rn(float(v), step));
      }
    } else {
      std::uint16_t* o16 = reinterpret_cast<std::uint16_t*>(out);
      row_writer16 w{o16 + tok * channels + c0};
      std::uint16_t anchors[8];  // the anchor row's values for channels [c & ~7, + 8), read 16 bytes at a time
      std::size_t anchors_at = ~std::size_t{0};
      for (std::size_t c = c0; c < c1 && ok; ++c) {
        std::uint16_t a16 = 0;
        if (!is_anchor) {
          const std::size_t base = c & ~std::size_t{7};
          if (base != anchors_at) {
            const std::uint16_t* ap = o16 + anchor_row + base;
            if ((reinterpret_cast<std::uintptr_t>(ap) & 15) == 0 && base + 8 <= channels) {
              const uint4 v4 = *reinterpret_cast<const uint4*>(ap);
              memcpy(anchors, &v4, 16);
            } else {
              for (std::size_t i = 0; i < 8 && base + i < channels; ++i) anchors[i] = ap[i];
            }
            anchors_at = base;
          }
          a16 = anchors[c & 7];
        }
        std::uint16_t bits;
        if (lossless) {
          const std::uint32_t h = next(tab[is_anchor ? 0 : 2]);
          const std::uint32_t lo = next(tab[is_anchor ? 1 : 3]);
          const std::uint16_t z = std::uint16_t((h << 8) | lo);
          bits = is_anchor ? z : std::uint16_t(a16 + std::uint16_t((z >> 1) ^ std::uint16_t(-std::int16_t(z & 1))));
        } else {
          std::int32_t v;
          if (!value_of(next(tab[(is_anchor ? 0 : cachegen_profile::classes) + cls[c]]), v)) { ok = false; break; }
          float xv;
          if (is_anchor) {
            xv = __fmul_rn(float(v), astep);
          } else {  // the anchor as stored (the encoder's closed loop used the same value)
            const float a = T == dtype::bf16 ? bf16_bits_to_float(a16) : fp16_bits_to_float(a16);
            xv = __fadd_rn(a, __fmul_rn(float(v), step));
          }
          bits = T == dtype::bf16 ? float_to_bf16_bits(xv) : float_to_fp16_bits(xv);
        }
        w.put(bits);
      }
      if (w.n) w.flush();
    }
  }
  if (!ok || used != n_esc || pos != end || x0 != rans_low || x1 != rans_low) status[p] = 1;
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
  const std::size_t blocks = p.blocks(), segments = p.options().streams_per_block;
  const unsigned block_threads = 256;
  const dim3 grid(unsigned((count * segments + block_threads - 1) / block_threads), unsigned(blocks));
  const std::size_t smem = detail::cachegen_smem_tables * sizeof(device_cachegen_profile::table) + (p.channels() + 15) / 16 * 16;
  return detail::with_dtype(g.shape.element_type(), [&](auto t) {
    constexpr dtype T = decltype(t)::value;
    cudaError_t e = cudaFuncSetAttribute(detail::decode_cachegen<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return e;
    detail::decode_cachegen<T><<<grid, block_threads, smem, stream>>>(
        pages, count, c.page_tag(), c.raw_page_tag(), dp.tables(), dp.classes(), blocks, segments, g.page_tokens, p.channels(),
        p.options().group_tokens, p.options().anchor_fraction, p.options().lossless, pool, g.shape.kv_planes(), status);
    return cudaGetLastError();
  });
}

}  // namespace kvtier
