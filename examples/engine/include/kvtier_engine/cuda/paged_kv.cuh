#pragma once
// How the CUDA kernels address one layer of kvtier's layer-first device pool (device_layer_pool):
// plane (layer, kv) of slot s starts at plane_base + s * slot_stride bytes and holds one page,
//   // (token, head, dim)
// and sequence q's token t lives in slot block_tables[q * table_stride + t / page_tokens], row
// t % page_tokens. The block tables are the leases' device_slots(), copied to the device as int32.
#include <cstddef>
#include <cstdint>

namespace kvtier_engine::cuda {

template <class T>
struct paged_kv_layer {
  std::byte* k_plane = nullptr;   // slot 0 of plane (layer, K)
  std::byte* v_plane = nullptr;   // slot 0 of plane (layer, V)
  std::size_t slot_stride = 0;    // bytes from one slot to the next inside a plane
  int page_tokens = 0;
  int kv_heads = 0;
  int head_dim = 0;
  const std::int32_t* block_tables = nullptr;  // (sequence, page) → device slot
  int table_stride = 0;                        // pages per sequence row of block_tables

  // Planes whose slots hold page_tokens rows of (kv_heads, head_dim) elements back to back.
  static paged_kv_layer packed(std::byte* k_plane, std::byte* v_plane, int page_tokens, int kv_heads, int head_dim,
                               const std::int32_t* block_tables, int table_stride) {
    paged_kv_layer kv;
    kv.k_plane = k_plane;
    kv.v_plane = v_plane;
    kv.slot_stride = std::size_t(page_tokens) * kv_heads * head_dim * sizeof(T);
    kv.page_tokens = page_tokens;
    kv.kv_heads = kv_heads;
    kv.head_dim = head_dim;
    kv.block_tables = block_tables;
    kv.table_stride = table_stride;
    return kv;
  }

  // Element offset of (token row, head) inside a page.
  __host__ __device__ std::size_t in_page(int t, int h) const {
    return (std::size_t(t % page_tokens) * kv_heads + h) * head_dim;
  }
  __device__ T* k_row(int seq, int t, int h) const {
    const std::int32_t slot = block_tables[std::size_t(seq) * table_stride + t / page_tokens];
    return reinterpret_cast<T*>(k_plane + std::size_t(slot) * slot_stride) + in_page(t, h);
  }
  __device__ T* v_row(int seq, int t, int h) const {
    const std::int32_t slot = block_tables[std::size_t(seq) * table_stride + t / page_tokens];
    return reinterpret_cast<T*>(v_plane + std::size_t(slot) * slot_stride) + in_page(t, h);
  }
};

}  // namespace kvtier_engine::cuda
