#pragma once
// device_layer_pool: slots over GPU memory kept layer-first, the way engines keep KV for attention:
// each (layer, kv) plane is its own array of pages, often its own tensor. A slot is one page index
// across every plane, so it is not contiguous; device_plane(s, layer, kv) gives each piece.
//   plane (layer, kv), slot s: plane_table()[layer * kv_planes + kv] + s * plane_slot_stride()
//   inside it: (token, head, dim), plane_bytes() long.
// Engine layouts map onto the plane table: per-layer [2, pages, tokens, heads, dim] tensors (K and
// V outer) give two planes per layer with a packed stride; per-layer [pages, 2, tokens, heads, dim]
// tensors give K at base and V at base + plane_bytes with a stride of 2 × plane_bytes; separate K
// and V tensors per layer give one plane each.
#include <cuda_runtime_api.h>

#include <cassert>
#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/memory/concepts.hpp"
#include "kvtier/memory/cuda_support.cuh"
#include "kvtier/memory/pool_core.hpp"
#include "kvtier/memory/properties.hpp"
#include "kvtier/memory/slot_geometry.hpp"

namespace kvtier::memory {

class device_layer_pool : public detail::pool_core<device_tier> {
 public:
  using kvtier_pool = pool_tag;
  using memory_properties = properties_list<device_accessible>;

  // kvtier allocates one buffer laid out (layer, kv, slot, token, head, dim), on `device` (-1: the
  // current one), and frees it. Throws config_error for a bad size or when cudaMalloc refuses.
  device_layer_pool(kv_shape shape, page_size<> pages, std::size_t capacity_slots, int device = -1)
      : pool_core(slot_geometry(shape, pages), capacity_slots) {
    detail::device_scope on(device);
    device_id_ = on.device();
    stride_ = plane_bytes();
    const std::size_t plane_array = kvtier::detail::checked_mul(capacity_slots, stride_, "plane bytes");
    void* p = nullptr;
    detail::cuda_check(cudaMalloc(&p, capacity_bytes()), "cudaMalloc");
    owned_ = static_cast<std::byte*>(p);
    try {
      planes_.resize(geometry().layers() * geometry().kv_planes());
      for (std::size_t i = 0; i < planes_.size(); ++i) planes_[i] = owned_ + i * plane_array;
      upload_table();
    } catch (...) {
      release();  // the destructor does not run for a constructor that throws
      throw;
    }
  }

  // Adopts planes the engine owns: planes[layer * kv_planes + kv] is slot 0 of plane (layer, kv);
  // slot s starts s × plane_slot_stride bytes later (0: packed, plane_bytes()). kvtier never frees
  // them, and they must outlive the pool. Throws config_error for a table of the wrong length, a
  // null or non-device plane, or a stride shorter than one plane of a page.
  static device_layer_pool adopt(std::span<std::byte* const> planes, std::size_t capacity_slots, kv_shape shape,
                                 page_size<> pages, std::size_t plane_slot_stride = 0) {
    const slot_geometry g(shape, pages);
    if (planes.size() != g.layers() * g.kv_planes())
      throw config_error("kvtier: device_layer_pool::adopt needs one plane per (layer, kv): " +
                         std::to_string(g.layers() * g.kv_planes()) + ", got " + std::to_string(planes.size()));
    const std::size_t stride = plane_slot_stride == 0 ? g.plane_bytes() : plane_slot_stride;
    if (stride < g.plane_bytes())
      throw config_error("kvtier: device_layer_pool::adopt: plane slot stride shorter than one page's plane");
    (void)kvtier::detail::checked_mul(capacity_slots, stride, "plane bytes");
    for (std::byte* p : planes)
      if (p == nullptr || detail::reach_of(p) != detail::device_reach::device)
        throw config_error("kvtier: device_layer_pool::adopt: a plane is null or not device memory");
    int device = 0;
    detail::cuda_check(cudaGetDevice(&device), "cudaGetDevice");
    device_layer_pool pool(g, capacity_slots, device);
    pool.stride_ = stride;
    pool.planes_.assign(planes.begin(), planes.end());
    pool.upload_table();
    return pool;
  }

  device_layer_pool(device_layer_pool&& o) noexcept
      : pool_core(std::move(o)),
        planes_(std::move(o.planes_)),
        stride_(o.stride_),
        owned_(std::exchange(o.owned_, nullptr)),
        table_(std::exchange(o.table_, nullptr)),
        device_id_(o.device_id_) {
    o.planes_.clear();
  }
  device_layer_pool& operator=(device_layer_pool&& o) noexcept {
    if (this != &o) {
      release();
      pool_core::operator=(std::move(o));
      planes_ = std::move(o.planes_);
      o.planes_.clear();
      stride_ = o.stride_;
      owned_ = std::exchange(o.owned_, nullptr);
      table_ = std::exchange(o.table_, nullptr);
      device_id_ = o.device_id_;
    }
    return *this;
  }
  device_layer_pool(const device_layer_pool&) = delete;
  device_layer_pool& operator=(const device_layer_pool&) = delete;
  ~device_layer_pool() { release(); }

  // Plane (layer, kv) of slot s: (token, head, dim), plane_bytes() long. Precondition: contains(s).
  std::byte* device_plane(slot_type s, std::size_t layer, std::size_t kv) const noexcept {
    assert(contains(s) && layer < geometry().layers() && kv < geometry().kv_planes());
    return planes_[layer * geometry().kv_planes() + kv] + std::size_t(s.value()) * stride_;
  }
  // Slot 0 of every plane, (layer, kv) order: a host copy, and the same table in device memory.
  std::span<std::byte* const> plane_table() const noexcept { return planes_; }
  std::byte* const* device_plane_table() const noexcept { return table_; }
  // Bytes from one slot to the next inside a plane.
  std::size_t plane_slot_stride() const noexcept { return stride_; }
  bool owns_memory() const noexcept { return owned_ != nullptr; }
  int device() const noexcept { return device_id_; }

 private:
  device_layer_pool(const slot_geometry& g, std::size_t capacity, int device)
      : pool_core(g, capacity), device_id_(device) {}

  void upload_table() {
    void* t = nullptr;
    detail::cuda_check(cudaMalloc(&t, planes_.size() * sizeof(std::byte*)), "cudaMalloc (plane table)");
    table_ = static_cast<std::byte**>(t);
    detail::cuda_check(cudaMemcpy(table_, planes_.data(), planes_.size() * sizeof(std::byte*), cudaMemcpyHostToDevice),
                       "cudaMemcpy (plane table)");
  }
  void release() noexcept {
    // Errors are ignored: at process exit the CUDA runtime may already be gone.
    if (table_ != nullptr) (void)cudaFree(table_);
    if (owned_ != nullptr) (void)cudaFree(owned_);
    table_ = nullptr;
    owned_ = nullptr;
    planes_.clear();
  }

  std::vector<std::byte*> planes_;  // (layer, kv) → slot 0 of that plane
  std::size_t stride_ = 0;
  std::byte* owned_ = nullptr;      // kvtier's buffer, when kvtier allocated it
  std::byte** table_ = nullptr;     // planes_ in device memory
  int device_id_ = 0;
};

static_assert(device_accessible_pool<device_layer_pool>);
static_assert(!host_accessible_pool<device_layer_pool>);

}  // namespace kvtier::memory
