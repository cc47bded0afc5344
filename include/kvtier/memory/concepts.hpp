#pragma once
// What a pool is, and in which memory space its slots live, as C++20 concepts. A type is a pool
// only when it says so (`using kvtier_pool = pool_tag;`) and declares its memory properties
// (`using memory_properties = properties_list<…>;`), so nothing models a pool by accident.
#include <concepts>
#include <cstddef>
#include <span>

#include "kvtier/core/error.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/memory/pool_stats.hpp"
#include "kvtier/memory/properties.hpp"

namespace kvtier::memory {

// Opt-in tag: a pool declares `using kvtier_pool = pool_tag;`.
struct pool_tag {};

namespace detail {
template <class P>
concept declares_pool = std::same_as<typename P::kvtier_pool, pool_tag>;

template <class P>
concept declares_memory_space =
  is_properties_list<typename P::memory_properties> &&
  (has_property<P, host_accessible> || has_property<P, device_accessible>);

template <class P>
concept slots_of_its_tier = std::same_as<typename P::slot_type, slot_id<typename P::tier_type>>;
}  // namespace detail

// clang-format off

// Fixed-size slots of one tier, handed out and taken back in O(1), with errors as values.
template <class P>
concept pool =
  std::is_object_v<P> &&
  std::move_constructible<P> &&
  detail::declares_pool<P> &&
  detail::declares_memory_space<P> &&
  detail::slots_of_its_tier<P> &&
  requires(P& p, const P& cp, typename P::slot_type s,
           std::span<typename P::slot_type> out, std::span<const typename P::slot_type> in) {
    { p.allocate() } noexcept -> std::same_as<result<typename P::slot_type>>;
    { p.allocate(out) } noexcept -> std::same_as<result<void>>;  // all or nothing
    { p.free(s) } noexcept -> std::same_as<result<void>>;
    { p.free(in) } noexcept -> std::same_as<result<void>>;       // all or nothing
    { cp.is_allocated(s) } noexcept -> std::same_as<bool>;
    { cp.slot_bytes() } noexcept -> std::same_as<std::size_t>;   // one page, all layers
    { cp.capacity() } noexcept -> std::same_as<std::size_t>;     // slots
    { cp.capacity_bytes() } noexcept -> std::same_as<std::size_t>;
    { cp.used() } noexcept -> std::same_as<std::size_t>;
    { cp.available() } noexcept -> std::same_as<std::size_t>;
    { cp.stats() } noexcept -> std::same_as<pool_stats>;
  };

// A pool whose slots the CPU reads and writes through host pointers.
template <class P>
concept host_accessible_pool =
  pool<P> &&
  has_property<P, host_accessible> &&
  requires(const P& p, typename P::slot_type s, std::size_t layer, std::size_t kv) {
    { p.host_span(s) } noexcept -> std::same_as<std::span<std::byte>>;   // the whole page
    { p.host_plane(s, layer, kv) } noexcept -> std::same_as<std::byte*>; // one (layer, kv) plane
  };

// A pool whose slots GPU kernels read and write through device pointers.
template <class P>
concept device_accessible_pool =
  pool<P> &&
  has_property<P, device_accessible> &&
  requires(const P& p, typename P::slot_type s, std::size_t layer, std::size_t kv) {
    { p.device_plane(s, layer, kv) } noexcept -> std::same_as<std::byte*>;
  };

// Pinned host memory mapped into the GPU's address space: the CPU and kernels both reach it, and
// copy engines run at full PCIe rate.
template <class P>
concept mapped_host_pool =
  host_accessible_pool<P> &&
  device_accessible_pool<P> &&
  has_property<P, page_locked>;

// clang-format on

}  // namespace kvtier::memory
