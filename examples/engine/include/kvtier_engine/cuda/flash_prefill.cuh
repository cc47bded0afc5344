#pragma once
// Causal prefill attention for head_dim 128 in bf16, FlashAttention-2 style, over kvtier's paged
// layer-first pool: a block takes 128 query rows of one query head (4 warps of 32 rows: two m16 tiles per warp, so
// every K and V fragment read from shared memory feeds two MMAs); key tiles
// of 64 rows come through the block table into swizzled shared memory with cp.async, two stages
// deep; S = Q K^T and O += P V run on mma.sync m16n8k16 (bf16 in, fp32 out) with ldmatrix
// fragments; the softmax is online (running max and sum per row, exp2 with the scale folded in).
// Rows are chunk rows at positions causal_start + row; any prefix before causal_start is read from
// the pool like the chunk's own keys (the chunk's K and V are written there first). With row_pos
// (partial prefill: selected rows at ascending positions anywhere in the sequence) row r is at
// position row_pos[r] and sees keys [0, row_pos[r]]; the other positions' K/V are whatever the pool
// holds. A row's arithmetic is the same either way (same tiles, same order; tiles past its position
// add exact zeros), so a row gives the same bits at the same position whatever rows surround it.
// flash_prefill_varlen runs the chunks of several sequences (prefill_batch) in one launch: a table
// of query tiles of at most 128 rows, none across two chunks, each with its sequence's block-table
// row; a chunk's tiles start at its first row, so its rows' arithmetic is that of its chunk alone.
#include <algorithm>
#include <cstdint>

#include "kvtier_engine/cuda/common.cuh"
#include "kvtier_engine/cuda/paged_attention.cuh"
#include "kvtier_engine/cuda/paged_kv.cuh"

namespace kvtier_engine::cuda {
namespace detail {

inline constexpr int fa_dim = 128;        // head_dim this kernel is built for
inline constexpr int fa_rows = 128;       // query rows per block
inline constexpr int fa_keys = 64;        // keys per tile
inline constexpr int fa_warp_rows = 32;   // two m16 tiles per warp: each K/V fragment feeds two MMAs
inline constexpr int fa_warps = fa_rows / fa_warp_rows;
inline constexpr int fa_threads = fa_warps * 32;
inline constexpr int fa_smem_bytes = (fa_rows + 4 * fa_keys) * fa_dim * 2;  // Q + 2 × (K, V)

// A query tile of a multi-sequence launch: batch rows [row0, row0 + rows) at positions pos0 + r of
// sequence seq (its block table at row seq of kv.block_tables, kv.table_stride apart).
struct flash_tile {
  std::int32_t row0 = 0, rows = 0, pos0 = 0, seq = 0;
};

__device__ __forceinline__ int swz(int r, int c) { return r * fa_dim + ((c ^ (r & 7)) << 3); }

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
// d += a (16×16, row) · b (16×8, col); bf16 in, fp32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 2^x on the special-function unit, denormals flushed (exp2(-inf) = 0 for masked scores).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&v);
}

template <bool Positional>  // rows at a.row_pos (else causal_start + row): two instantiations, the
__global__ void __launch_bounds__(fa_threads, 2)  // contiguous one free of the position registers
    flash_prefill_kernel(attention_rows<__nv_bfloat16> a, paged_kv_layer<__nv_bfloat16> kv, int page_shift,
                         int tiles_per_split, float* part_o, float* part_lse, const flash_tile* q_tiles) {
  using bf16 = __nv_bfloat16;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // (row, dim) swizzled
  bf16* sK = sQ + fa_rows * fa_dim;              // (stage, key, dim) swizzled
  bf16* sV = sK + 2 * fa_keys * fa_dim;

  const int head = blockIdx.x;
  const int q_tile = gridDim.y - 1 - blockIdx.y;  // the longest (last) query tiles start first
  const int kvh = head / (a.q_heads / kv.kv_heads);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // This block's query rows: tile q_tile of q_tiles (several sequences), else rows [128 q_tile, 128
  // q_tile + 128) of the one chunk (sequence 0). Rows below are local to the tile: batch row row0 + r.
  int row0 = q_tile * fa_rows, tile_rows = min(fa_rows, a.rows - row0), pos0 = a.causal_start + row0, seq = 0;
  if (q_tiles != nullptr) {
    const flash_tile t = q_tiles[q_tile];
    row0 = t.row0, tile_rows = t.rows, pos0 = t.pos0, seq = t.seq;
  }
  const std::int32_t* block_table = kv.block_tables + std::size_t(seq) * kv.table_stride;
  const int last_row = tile_rows - 1;
  // Position of tile row r (rows past the tile: past the last row, results discarded).
  auto pos_of = [&](int r) {
    if constexpr (Positional) return a.row_pos[min(row0 + r, a.rows - 1)];
    else return pos0 + r;
  };
  const int total_keys = pos_of(last_row) + 1;  // keys the block's last row sees
  const int tiles = (total_keys + fa_keys - 1) / fa_keys;
  const float scale_log2 = a.scale * 1.4426950408889634f;
  // Split-KV (few query tiles over a long prefix): this block takes key tiles [t_begin, t_end).
  const int t_begin = blockIdx.z * tiles_per_split, t_end = min(tiles, t_begin + tiles_per_split);

  // Q tile: 128 rows × 16 chunks; rows past the chunk are zero-filled.
  for (int c = tid; c < fa_rows * 16; c += fa_threads) {
    const int r = c / 16, ch = c % 16, qr = row0 + min(r, last_row);
    cp_async16(sQ + swz(r, ch), a.q + (std::size_t(qr) * a.q_heads + head) * fa_dim + ch * 8, r < tile_rows);
  }
  // K/V tiles: thread tid copies 16-byte chunk tid % 16 of rows tid / 16 + 8 i; one block-table
  // read gives the row's offset in both planes (page size a power of two: shifts, no division).
  const bf16* k_base = reinterpret_cast<const bf16*>(kv.k_plane);
  const bf16* v_base = reinterpret_cast<const bf16*>(kv.v_plane);
  const std::size_t slot_elems = kv.slot_stride / sizeof(bf16);
  const int ld_ch = tid % 16, ld_row = tid / 16, page_mask = (1 << page_shift) - 1;
  auto load_kv = [&](int tile, int stage) {
    const int k0 = tile * fa_keys;
#pragma unroll
    for (int i = 0; i < fa_keys / (fa_threads / 16); ++i) {
      const int r = ld_row + i * (fa_threads / 16), key = k0 + r, kk = min(key, total_keys - 1);
      const std::size_t off = std::size_t(block_table[kk >> page_shift]) * slot_elems +
                              std::size_t(((kk & page_mask) * kv.kv_heads + kvh) * fa_dim + ld_ch * 8);
      const int so = stage * fa_keys * fa_dim + swz(r, ld_ch);
      cp_async16(sK + so, k_base + off, key < total_keys);
      cp_async16(sV + so, v_base + off, key < total_keys);
    }
  };
  if (t_begin < t_end) load_kv(t_begin, 0);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();

  float o[2][16][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int i = 0; i < 16; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
  // Softmax state of this thread's four rows: (m-tile, upper/lower 8) → index mt * 2 + half.
  float m_run[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY}, l_run[4] = {0.f, 0.f, 0.f, 0.f};
  const int g = lane / 4, t4 = lane % 4;
  const int warp_row0 = warp * fa_warp_rows;  // tile row of this warp's first query
  const int warp_first_pos = pos_of(warp_row0), warp_last_pos = pos_of(warp_row0 + fa_warp_rows - 1);
  // Positional: this thread's four rows' positions (m-tile, upper/lower 8), the causal mask's bounds.
  int row_pos[4] = {0, 0, 0, 0};
  if constexpr (Positional) {
#pragma unroll
    for (int r = 0; r < 4; ++r) row_pos[r] = pos_of(warp_row0 + (r / 2) * 16 + g + (r % 2) * 8);
  }

  for (int it = t_begin; it < t_end; ++it) {
    const int stage = (it - t_begin) & 1;
    if (it + 1 < t_end) load_kv(it + 1, stage ^ 1);
    cp_async_commit();
    const int k0 = it * fa_keys;
    if (k0 <= warp_last_pos) {  // else every key of the tile is in this warp's future
      const bf16* k_tile = sK + stage * fa_keys * fa_dim;
      const bf16* v_tile = sV + stage * fa_keys * fa_dim;
      float s[2][8][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int i = 0; i < 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
      for (int ks = 0; ks < 8; ++ks) {
        unsigned qf[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
          ldmatrix_x4(qf[mt], sQ + swz(warp * fa_warp_rows + mt * 16 + (lane % 16), ks * 2 + lane / 16));
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          unsigned b[4];
          ldmatrix_x4(b, k_tile + swz(np * 16 + (lane % 8) + (lane / 16) * 8, ks * 2 + (lane / 8) % 2));
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            mma_bf16(s[mt][2 * np], qf[mt], b[0], b[1]);
            mma_bf16(s[mt][2 * np + 1], qf[mt], b[2], b[3]);
          }
        }
      }
      const bool needs_mask = k0 + fa_keys - 1 > warp_first_pos;
      float mx[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = mt * 2 + e / 2;
            const int key = k0 + nt * 8 + 2 * t4 + (e & 1);
            const int pos = Positional ? row_pos[r] : warp_first_pos + mt * 16 + g + (e / 2) * 8;
            if (needs_mask && key > pos) s[mt][nt][e] = -INFINITY;
            mx[r] = fmaxf(mx[r], s[mt][nt][e]);  // raw scores: the scale (> 0) is applied below
          }
      float corr[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float mn = fmaxf(m_run[r], mx[r] * scale_log2);  // running max in scaled log2 units
        const float base = mn == -INFINITY ? 0.f : mn;  // a row with nothing visible yet stays at zero
        corr[r] = fast_exp2(m_run[r] - base);
        m_run[r] = mn;
        mx[r] = base;
      }
      float rs[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = mt * 2 + e / 2;
            const float p = fast_exp2(fmaf(s[mt][nt][e], scale_log2, -mx[r]));
            s[mt][nt][e] = p;
            rs[r] += p;
          }
#pragma unroll
      for (int r = 0; r < 4; ++r) l_run[r] = l_run[r] * corr[r] + rs[r];
      // Once the row maxima settle, corr is 1 for the whole warp: skip the rescale of O.
      if (__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f || corr[2] != 1.f || corr[3] != 1.f)) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int i = 0; i < 16; ++i) {
            o[mt][i][0] *= corr[mt * 2]; o[mt][i][1] *= corr[mt * 2];
            o[mt][i][2] *= corr[mt * 2 + 1]; o[mt][i][3] *= corr[mt * 2 + 1];
          }
      }
      // P as bf16 A fragments (keys 16j .. 16j+15 → pf[mt][j]); S's fp32 registers die here.
      unsigned pf[2][4][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          pf[mt][j][0] = pack_bf16(s[mt][2 * j][0], s[mt][2 * j][1]);
          pf[mt][j][1] = pack_bf16(s[mt][2 * j][2], s[mt][2 * j][3]);
          pf[mt][j][2] = pack_bf16(s[mt][2 * j + 1][0], s[mt][2 * j + 1][1]);
          pf[mt][j][3] = pack_bf16(s[mt][2 * j + 1][2], s[mt][2 * j + 1][3]);
        }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int dp = 0; dp < 8; ++dp) {
          unsigned b[4];
          ldmatrix_x4_trans(b, v_tile + swz(j * 16 + (lane % 8) + ((lane / 8) % 2) * 8, dp * 2 + lane / 16));
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            mma_bf16(o[mt][2 * dp], pf[mt][j], b[0], b[1]);
            mma_bf16(o[mt][2 * dp + 1], pf[mt][j], b[2], b[3]);
          }
        }
      }
    }
    cp_async_wait_all();
    __syncthreads();
  }
  // Normalise by the row sums (reduced across the quad) and store bf16 pairs.
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int mt = r / 2, local = warp_row0 + mt * 16 + g + (r % 2) * 8, row = row0 + local;
    if (local >= tile_rows) continue;
    const float inv = l_run[r] > 0.f ? 1.0f / l_run[r] : 0.f;
    if (gridDim.z == 1) {
      bf16* dst = a.out + (std::size_t(row) * a.q_heads + head) * fa_dim;
#pragma unroll
      for (int nt = 0; nt < 16; ++nt)
        *reinterpret_cast<__nv_bfloat162*>(dst + nt * 8 + 2 * t4) =
            __floats2bfloat162_rn(o[mt][nt][2 * (r % 2)] * inv, o[mt][nt][2 * (r % 2) + 1] * inv);
    } else {  // this split's normalised O and log-sum-exp (log2 units), merged by combine_splits_kernel
      const std::size_t idx = (std::size_t(blockIdx.z) * a.rows + row) * a.q_heads + head;
      float* dst = part_o + idx * fa_dim;
#pragma unroll
      for (int nt = 0; nt < 16; ++nt)
        *reinterpret_cast<float2*>(dst + nt * 8 + 2 * t4) =
            make_float2(o[mt][nt][2 * (r % 2)] * inv, o[mt][nt][2 * (r % 2) + 1] * inv);
      if (t4 == 0) part_lse[idx] = l_run[r] > 0.f ? m_run[r] + log2f(l_run[r]) : -INFINITY;
    }
  }
}

// Key splits for `blocks` (query tiles × heads) over `keys` keys: one unless they leave the GPU
// under-filled, then enough to fill it about twice, each at least 8 key tiles.
inline int flash_splits_for(int blocks, int keys, int sms, int max_splits) {
  const int tiles = (keys + fa_keys - 1) / fa_keys;
  if (blocks >= sms) return 1;
  return std::max(1, std::min({max_splits, (2 * sms + blocks - 1) / blocks, tiles / 8}));
}

// The launch behind flash_prefill and flash_prefill_varlen (their checks done): grid (head, query
// tile, split) over `keys` keys, q_tiles null (one chunk, n_tiles tiles of 128 rows) or the varlen
// tile table; the splits merged by combine_splits_kernel.
inline void launch_flash_prefill(const attention_rows<__nv_bfloat16>& a, const paged_kv_layer<__nv_bfloat16>& kv, int keys,
                                 int n_tiles, const flash_tile* q_tiles, cudaStream_t s, int splits, float* workspace,
                                 int tiles_per_split) {
  int shift = 0;
  while ((1 << shift) < kv.page_tokens) ++shift;
  const int tiles = (keys + fa_keys - 1) / fa_keys;
  const int per_split = tiles_per_split > 0 ? tiles_per_split : (tiles + splits - 1) / splits;
  splits = (tiles + per_split - 1) / per_split;
  float* part_o = workspace;
  float* part_lse = workspace == nullptr ? nullptr : workspace + std::size_t(splits) * a.rows * a.q_heads * fa_dim;
  const auto kernel = a.row_pos != nullptr ? flash_prefill_kernel<true> : flash_prefill_kernel<false>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, fa_smem_bytes),
        "cudaFuncSetAttribute (flash_prefill)");
  kernel<<<dim3(a.q_heads, n_tiles, splits), fa_threads, fa_smem_bytes, s>>>(a, kv, shift, per_split, part_o, part_lse, q_tiles);
  check_launch("flash_prefill");
  if (splits > 1) {
    combine_splits_kernel<__nv_bfloat16><<<dim3(a.rows, a.q_heads), 128, 0, s>>>(a, fa_dim, splits, part_o, part_lse);
    check_launch("flash_prefill combine");
  }
}

}  // namespace detail

// Key splits for a chunk: one unless the query tiles × heads leave the GPU under-filled (a short
// suffix after a long cached prefix), then enough to fill it about twice, each at least 8 key tiles.
inline int flash_prefill_splits(int rows, int causal_start, int q_heads, int sms, int max_splits) {
  return detail::flash_splits_for(q_heads * ((rows + detail::fa_rows - 1) / detail::fa_rows), causal_start + rows, sms,
                                  max_splits);
}
// Whether flash_prefill takes this pool: head_dim 128 and a power-of-two page size.
inline bool flash_prefill_supports(const paged_kv_layer<__nv_bfloat16>& kv) {
  return kv.head_dim == detail::fa_dim && kv.page_tokens > 0 && (kv.page_tokens & (kv.page_tokens - 1)) == 0;
}

// Causal prefill attention of a chunk (rows at positions causal_start + row of sequence 0, or at
// row_pos[row] with max_keys = the last position + 1) over the paged pool, head_dim 128, bf16. The
// rows' own K and V must already be in the pool. With splits > 1,
// workspace holds paged_attention_workspace(rows, q_heads, 128, splits) floats. tiles_per_split > 0
// fixes each split's key range in absolute positions (split z: key tiles [z t, (z + 1) t)), so a
// row's partition of its keys does not depend on the chunk (batch-invariant); splits must then be
// ceil(tiles / tiles_per_split).
inline void flash_prefill(const attention_rows<__nv_bfloat16>& a, const paged_kv_layer<__nv_bfloat16>& kv,
                          cudaStream_t s, int splits = 1, float* workspace = nullptr, int tiles_per_split = 0) {
  if (a.rows == 0) return;
  if (!flash_prefill_supports(kv) || a.q_heads % kv.kv_heads != 0 || (splits > 1 && workspace == nullptr))
    throw std::invalid_argument("kvtier_engine: flash_prefill needs head_dim 128, whole query groups, a power-of-two page");
  const int keys = a.row_pos != nullptr ? a.max_keys : a.causal_start + a.rows;
  detail::launch_flash_prefill(a, kv, keys, (a.rows + detail::fa_rows - 1) / detail::fa_rows, nullptr, s, splits, workspace,
                               tiles_per_split);
}

// Causal prefill attention of several sequences' chunks in one launch (prefill_batch): a.rows batch
// rows in all, chunk after chunk; q_tiles (device memory) the n_tiles query tiles, each of at most
// 128 rows of one chunk at consecutive positions (a chunk's tiles starting at its first row, as
// flash_prefill cuts one chunk), reading its sequence's block-table row (kv.table_stride apart);
// max_keys: the most keys a row sees. a.causal_start and a.row_pos are not read. Splits as
// flash_prefill: tiles_per_split > 0 fixes them at absolute key positions (splits must then be
// ceil(max_keys / 64 / tiles_per_split)); a chunk that needs fewer gets empty splits, which the
// merge adds as exact zeros, so every row gets flash_prefill's bits for its chunk alone.
inline void flash_prefill_varlen(const attention_rows<__nv_bfloat16>& a, const paged_kv_layer<__nv_bfloat16>& kv,
                                 const detail::flash_tile* q_tiles, int n_tiles, int max_keys, cudaStream_t s,
                                 int splits = 1, float* workspace = nullptr, int tiles_per_split = 0) {
  if (a.rows == 0 || n_tiles == 0) return;
  if (!flash_prefill_supports(kv) || a.q_heads % kv.kv_heads != 0 || (splits > 1 && workspace == nullptr) ||
      q_tiles == nullptr || a.row_pos != nullptr)
    throw std::invalid_argument("kvtier_engine: flash_prefill_varlen needs head_dim 128, whole query groups, a power-of-two page, a tile table");
  detail::launch_flash_prefill(a, kv, max_keys, n_tiles, q_tiles, s, splits, workspace, tiles_per_split);
}

}  // namespace kvtier_engine::cuda
