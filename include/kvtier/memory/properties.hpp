#pragma once
// Memory-space properties: compile-time tags a pool declares about its memory, so that a routine
// needing GPU-reachable memory rejects a host-only pool when it is compiled, not when it runs.
// (Modelled on CCCL's cuda::mr::host_accessible / device_accessible properties.)
#include <concepts>

namespace kvtier::memory {

// The CPU can load and store the memory through an ordinary pointer.
struct host_accessible {};
// GPU kernels can load and store the memory through a device pointer.
struct device_accessible {};
// Host memory locked in RAM (pinned): DMA engines reach it at full PCIe rate and it is never swapped.
struct page_locked {};

// The set of properties a pool declares: `using memory_properties = properties_list<host_accessible>;`.
template <class... Properties>
struct properties_list {
  template <class Property>
  static constexpr bool contains = (std::same_as<Property, Properties> || ...);
};

namespace detail {
template <class T>
inline constexpr bool is_properties_list = false;
template <class... Ps>
inline constexpr bool is_properties_list<properties_list<Ps...>> = true;
}  // namespace detail

// T declares a properties_list and Property is in it.
// clang-format off
template <class T, class Property>
concept has_property =
  requires { typename T::memory_properties; } &&
  detail::is_properties_list<typename T::memory_properties> &&
  T::memory_properties::template contains<Property>;
// clang-format on

}  // namespace kvtier::memory
