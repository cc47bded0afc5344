#pragma once
// layer_first: the engine's GPU layout, physical order (layer, kv, token, head, dim) row-major.
// Each (layer, kv) plane of `tokens` rows is contiguous, so an engine that allocates one tensor per
// layer (or per layer and kv) is the same layout split over a plane table (transfer::plane_table,
// in transfer/views.hpp).
#include <cstddef>

#include "kvtier/core/config.hpp"
#include "kvtier/layout/concepts.hpp"
#include "kvtier/layout/extents.hpp"

namespace kvtier::layout {

struct layer_first {
  class mapping {
   public:
    using kvtier_layout = layout_tag;
    using extents_type = kv_extents;
    using layout_type = layer_first;
    static constexpr bool heads_contiguous = true;  // (head, dim) of one token row are contiguous

    constexpr mapping() noexcept = default;
    constexpr explicit mapping(const kv_extents& e) noexcept : e_(e) {}

    KVTIER_HOST_DEVICE constexpr const kv_extents& extents() const noexcept { return e_; }
    // Elements of one (layer, kv) plane: (token, head, dim).
    KVTIER_HOST_DEVICE constexpr std::size_t plane_size() const noexcept { return e_.tokens() * e_.row_elements(); }
    KVTIER_HOST_DEVICE constexpr std::size_t planes() const noexcept { return e_.layers() * e_.kv(); }
    // Offset inside the (layer, kv) plane.
    KVTIER_HOST_DEVICE constexpr std::size_t in_plane(std::size_t t, std::size_t h, std::size_t d) const noexcept {
      return (t * e_.heads() + h) * e_.dim() + d;
    }
    // (layer, kv, token, head, dim) -> element offset.
    KVTIER_HOST_DEVICE constexpr std::size_t operator()(std::size_t l, std::size_t k, std::size_t t, std::size_t h,
                                                        std::size_t d) const noexcept {
      return (l * e_.kv() + k) * plane_size() + in_plane(t, h, d);
    }
    KVTIER_HOST_DEVICE constexpr kv_index index_of(std::size_t off) const noexcept {
      kv_index i;
      i.dim = off % e_.dim(); off /= e_.dim();
      i.head = off % e_.heads(); off /= e_.heads();
      i.token = off % e_.tokens(); off /= e_.tokens();
      i.kv = off % e_.kv(); off /= e_.kv();
      i.layer = off;
      return i;
    }
    KVTIER_HOST_DEVICE constexpr std::size_t token_stride_in_page() const noexcept { return e_.row_elements(); }
    KVTIER_HOST_DEVICE constexpr std::size_t required_span_size() const noexcept { return e_.size(); }

    static constexpr bool is_always_unique() noexcept { return true; }
    static constexpr bool is_always_exhaustive() noexcept { return true; }
    static constexpr bool is_always_strided() noexcept { return true; }
    static constexpr bool is_unique() noexcept { return true; }
    static constexpr bool is_exhaustive() noexcept { return true; }
    static constexpr bool is_strided() noexcept { return true; }
    // Stride of logical rank r (layer, kv, token, head, dim).
    constexpr std::size_t stride(std::size_t r) const noexcept {
      std::size_t s = 1;
      for (std::size_t q = 4; q > r; --q) s *= e_.extent(q);
      return s;
    }

    friend constexpr bool operator==(const mapping&, const mapping&) = default;

   private:
    kv_extents e_{};
  };
};

static_assert(kv_layout<layer_first>);

}  // namespace kvtier::layout
