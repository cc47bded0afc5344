#pragma once
// The copy_strategy concept: how hierarchical_cache moves pages between its host pool (page first)
// and the engine's device KV (layer first) without waiting. The tag, the opt-in and one clause per
// call the cache makes are kept together here (as stdexec's __sender_concepts.hpp keeps a
// concept's pieces). Models: cpu_copy (transfer/cpu_copy.hpp), gpu_copy (transfer/gpu_copy.cuh).
#include <concepts>
#include <span>

#include "kvtier/core/error.hpp"
#include "kvtier/layout/page_first.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer {

// Opt-in tag: a copy strategy declares `using kvtier_copy_strategy = copy_strategy_tag;`.
struct copy_strategy_tag {};

// True for a type that declares the tag; specialise it to opt a type in from outside.
template <class C>
inline constexpr bool enable_copy_strategy =
    requires { requires std::same_as<typename C::kvtier_copy_strategy, copy_strategy_tag>; };

namespace detail {
// The views a cache of the library hands a copy strategy.
using default_host_view = kv_buffer<layout::page_first::mapping>;  // (layer, kv, token, head, dim), page first
using default_device_view = layer_first_buffer;                     // (layer, kv, token, head, dim), layer first
}  // namespace detail

// clang-format off
// Where copies queue (in order) and what tells that one is done.
template <class C>
concept copy_stream_types =
  requires {
    typename C::stream_type;
    typename C::event_type;
    { C::needs_device_memory } -> std::convertible_to<bool>;  // the device side must be device memory
  } &&
  std::copyable<typename C::event_type>;

// load(stream, host, device, pairs, layer_events): host pages → device slots, queued layer by
// layer; layer_events[l] passes when layer l of every page has landed. Refusal: an error value.
template <class C, class Host, class Device>
concept copy_loads =
  requires(typename C::stream_type& s, const Host& h, const Device& d, std::span<const page_pair> pairs,
           std::span<typename C::event_type> layer_events) {
    { C::load(s, h, d, pairs, layer_events) } -> std::same_as<result<void>>;
  };

// backup(stream, device, host, pairs): device slots → host pages, all layers; the event passes
// when every page has landed.
template <class C, class Host, class Device>
concept copy_backs_up =
  requires(typename C::stream_type& s, const Device& d, const Host& h, std::span<const page_pair> pairs) {
    { C::backup(s, d, h, pairs) } -> std::same_as<result<typename C::event_type>>;
  };

// query(stream, event): whether the event has passed; never waits.
template <class C>
concept copy_queries =
  requires(const typename C::stream_type& s, typename C::event_type e) {
    { C::query(s, e) } noexcept -> std::same_as<bool>;
  };

// synchronize(stream, event): waits until the event has passed.
template <class C>
concept copy_synchronizes =
  requires(const typename C::stream_type& s, typename C::event_type e) {
    { C::synchronize(s, e) } -> std::same_as<void>;
  };

// A copy strategy for a cache whose host pages are seen through Host and device KV through Device.
template <class C, class Host, class Device>
concept copy_strategy_for =
  enable_copy_strategy<C> &&
  copy_stream_types<C> &&
  copy_loads<C, Host, Device> &&
  copy_backs_up<C, Host, Device> &&
  copy_queries<C> &&
  copy_synchronizes<C>;

// A copy strategy for the library's views (page-first host pages, layer-first device KV).
template <class C>
concept copy_strategy = copy_strategy_for<C, detail::default_host_view, detail::default_device_view>;
// clang-format on

}  // namespace kvtier::transfer
