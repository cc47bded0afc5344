#pragma once
// pinned_host_pool: page-first slots in pinned (page-locked) host memory mapped into the GPU's
// address space. The CPU writes pages through host pointers; copy kernels read and write the same
// bytes through device pointers with 16-byte accesses over PCIe; copy engines DMA at full rate.
// CUDA runtime API only: never included by host-only users (they use host_pool).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <utility>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/memory/concepts.hpp"
#include "kvtier/memory/cuda_support.cuh"
#include "kvtier/memory/host_mapping.hpp"
#include "kvtier/memory/pool_core.hpp"
#include "kvtier/memory/properties.hpp"
#include "kvtier/memory/slot_access.hpp"
#include "kvtier/memory/slot_geometry.hpp"

namespace kvtier::memory {

// Where the pinned memory comes from.
enum class pinned_backing : std::uint8_t {
  cuda_host_alloc,       // cudaHostAlloc(mapped | portable)
  registered,            // kvtier mmaps it, then cudaHostRegister(mapped | portable)
  registered_huge_pages, // as registered, on 2 MiB pages: MAP_HUGETLB, else THP (madvise)
};

constexpr std::string_view to_string(pinned_backing b) noexcept {
  switch (b) {
    case pinned_backing::cuda_host_alloc: return "cudaHostAlloc";
    case pinned_backing::registered: return "mmap+cudaHostRegister";
    case pinned_backing::registered_huge_pages: return "mmap(2MiB)+cudaHostRegister";
  }
  return "?";
}

struct pinned_host_pool_options {
  pinned_backing backing = pinned_backing::cuda_host_alloc;
  std::size_t slot_alignment = 1;  // of every slot's start; 1 packs slots into an exact page_first array
};

class pinned_host_pool : public detail::pool_core<host_tier>,
                         public detail::host_slot_access<pinned_host_pool, host_tier>,
                         public detail::device_slot_access<pinned_host_pool, host_tier> {
 public:
  using kvtier_pool = pool_tag;
  using memory_properties = properties_list<host_accessible, device_accessible, page_locked>;

  // capacity_slots pages of `shape` with `pages` tokens each. Throws config_error for a bad size,
  // or when CUDA or mmap refuses (the message names the call and the reason).
  pinned_host_pool(kv_shape shape, page_size<> pages, std::size_t capacity_slots, pinned_host_pool_options opt = {})
      : pool_core(slot_geometry(shape, pages, opt.slot_alignment), capacity_slots), backing_(opt.backing) {
    constexpr unsigned alloc_flags = cudaHostAllocMapped | cudaHostAllocPortable;
    constexpr unsigned register_flags = cudaHostRegisterMapped | cudaHostRegisterPortable;
    if (backing_ == pinned_backing::cuda_host_alloc) {
      void* p = nullptr;
      detail::cuda_check(cudaHostAlloc(&p, capacity_bytes(), alloc_flags), "cudaHostAlloc");
      host_ = static_cast<std::byte*>(p);
    } else {
      mapping_.emplace(capacity_bytes(), backing_ == pinned_backing::registered_huge_pages);
      host_ = mapping_->data();
      const cudaError_t e = cudaHostRegister(host_, mapping_->size(), register_flags);
      if (e != cudaSuccess) {
        host_ = nullptr;
        mapping_.reset();
        detail::cuda_check(e, "cudaHostRegister");
      }
    }
    void* d = nullptr;
    const cudaError_t e = cudaHostGetDevicePointer(&d, host_, 0);
    if (e != cudaSuccess) {
      release();
      detail::cuda_check(e, "cudaHostGetDevicePointer");
    }
    device_ = static_cast<std::byte*>(d);
  }

  pinned_host_pool(pinned_host_pool&& o) noexcept
      : pool_core(std::move(o)),
        backing_(o.backing_),
        mapping_(std::exchange(o.mapping_, std::nullopt)),
        host_(std::exchange(o.host_, nullptr)),
        device_(std::exchange(o.device_, nullptr)) {}
  pinned_host_pool& operator=(pinned_host_pool&& o) noexcept {
    if (this != &o) {
      release();
      pool_core::operator=(std::move(o));
      backing_ = o.backing_;
      mapping_ = std::exchange(o.mapping_, std::nullopt);
      host_ = std::exchange(o.host_, nullptr);
      device_ = std::exchange(o.device_, nullptr);
    }
    return *this;
  }
  pinned_host_pool(const pinned_host_pool&) = delete;
  pinned_host_pool& operator=(const pinned_host_pool&) = delete;
  ~pinned_host_pool() { release(); }

  // Slot 0 of the pinned memory on the host, and the same bytes as kernels address them
  // (cudaHostGetDevicePointer). host_address, host_span, host_plane, host_region and
  // device_address, device_plane, device_region come from detail::host_slot_access and
  // detail::device_slot_access (slot_access.hpp).
  std::byte* host_data() const noexcept { return host_; }
  std::byte* device_data() const noexcept { return device_; }

  pinned_backing backing() const noexcept { return backing_; }
  // What backs the memory: none for cudaHostAlloc; for mmap backings, what the kernel granted.
  huge_page_mode huge_pages() const noexcept { return mapping_ ? mapping_->mode() : huge_page_mode::none; }
  // Bytes pinned: capacity_bytes(), rounded up to 2 MiB with huge pages.
  std::size_t pinned_bytes() const noexcept { return mapping_ ? mapping_->size() : (host_ ? capacity_bytes() : 0); }

 private:
  void release() noexcept {
    if (host_ != nullptr) {
      // Errors are ignored: at process exit the CUDA runtime may already be gone.
      if (mapping_) (void)cudaHostUnregister(host_);
      else (void)cudaFreeHost(host_);
    }
    mapping_.reset();  // munmap after unregistering
    host_ = nullptr;
    device_ = nullptr;
  }

  pinned_backing backing_;
  std::optional<host_mapping> mapping_;
  std::byte* host_ = nullptr;
  std::byte* device_ = nullptr;
};

static_assert(mapped_host_pool<pinned_host_pool>);

}  // namespace kvtier::memory
