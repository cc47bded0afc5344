#pragma once
// The simulated engine's device access on a GPU: device pages are read and written with cudaMemcpy,
// one (layer, kv) block of a page at a time, through the cache's layer-first device view.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include "kvtier/testing/reference_kv.hpp"
#include "kvtier/core/strong_id.hpp"

namespace kvtier::testing {

// Reads and writes device pages with cudaMemcpy, one (layer, kv) block of a page at a time.
struct cuda_device_access {
  template <class Cache>
  static void write_rows(Cache& c, device_slot s, std::size_t first, std::size_t count, const reference_kv& gen,
                         std::span<const std::uint64_t> hashes, std::size_t first_pos) {
    const kv_shape& sh = gen.shape();
    std::vector<std::byte> block(count * sh.row_bytes());
    for (std::size_t l = 0; l < sh.layers(); ++l)
      for (std::size_t k = 0; k < sh.kv_planes(); ++k) {
        for (std::size_t t = 0; t < count; ++t)
          gen.fill_row(hashes[first_pos + t], l, k, first_pos + t, {block.data() + t * sh.row_bytes(), sh.row_bytes()});
        std::byte* dst = c.device_view().row(l, k, std::size_t(s.value()) * c.configuration().pages.tokens() + first, 0);
        if (cudaMemcpy(dst, block.data(), block.size(), cudaMemcpyHostToDevice) != cudaSuccess)
          throw std::runtime_error("kvtier: cudaMemcpy to the device failed");
      }
  }
  template <class Cache>
  static std::size_t check_page(Cache& c, device_slot s, const reference_kv& gen, std::span<const std::uint64_t> hashes,
                                std::size_t first_pos) {
    const kv_shape& sh = gen.shape();
    const std::size_t P = c.configuration().pages.tokens();
    std::vector<std::byte> block(P * sh.row_bytes());
    std::size_t bad = 0;
    for (std::size_t l = 0; l < sh.layers(); ++l)
      for (std::size_t k = 0; k < sh.kv_planes(); ++k) {
        const std::byte* src = c.device_view().row(l, k, std::size_t(s.value()) * c.configuration().pages.tokens(), 0);
        if (cudaMemcpy(block.data(), src, block.size(), cudaMemcpyDeviceToHost) != cudaSuccess)
          throw std::runtime_error("kvtier: cudaMemcpy from the device failed");
        for (std::size_t t = 0; t < P; ++t)
          bad += !gen.check_row(hashes[first_pos + t], l, k, first_pos + t, {block.data() + t * sh.row_bytes(), sh.row_bytes()});
      }
    return bad;
  }
};

}  // namespace kvtier::testing
