#pragma once
// The storage_backend concept: an asynchronous, batched page store below host DRAM.
#include <chrono>
#include <concepts>
#include <cstddef>
#include <span>
#include <type_traits>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/request.hpp"
#include "kvtier/storage/stats.hpp"

namespace kvtier {

// Opt-in tag: a backend declares `using kvtier_storage_backend = storage_backend_tag;`
// (or specializes enable_storage_backend).
struct storage_backend_tag {};

template <class T>
inline constexpr bool enable_storage_backend =
    requires { requires std::is_same_v<typename T::kvtier_storage_backend, storage_backend_tag>; };

// Submitting never blocks on I/O completion and never throws: a refused batch (in flight,
// too large, out of memory) is an error value and the batch stays untouched; an accepted batch
// completes each request exactly once with a status.
template <class B>
concept storage_submit =
    requires(B& b, storage_batch& batch, std::span<const page_write> writes,
             std::span<const page_read> reads, std::span<const page_address> addresses) {
      { b.put(writes, batch) } noexcept -> std::same_as<result<void>>;
      { b.get(reads, batch) } noexcept -> std::same_as<result<void>>;
      { b.contains(addresses, batch) } noexcept -> std::same_as<result<void>>;
      { b.erase(addresses, batch) } noexcept -> std::same_as<result<void>>;
    };

// poll() advances every batch in flight without blocking and returns the requests it completed;
// wait() blocks until the batch is done or the timeout passes (errc::timeout, batch still in flight).
template <class B>
concept storage_progress =
    requires(B& b, storage_batch& batch, std::chrono::milliseconds timeout) {
      { b.poll() } noexcept -> std::same_as<std::size_t>;
      { b.wait(batch, timeout) } noexcept -> std::same_as<result<void>>;
    };

template <class B>
concept storage_observable =
    requires(const B& b) {
      { b.shape() } noexcept -> std::same_as<kv_shape>;
      { b.usage() } noexcept -> std::same_as<storage_usage>;
      { b.stats() } noexcept -> std::same_as<storage_stats>;
    };

template <class B>
concept storage_backend =
    enable_storage_backend<B> &&
    storage_submit<B> &&
    storage_progress<B> &&
    storage_observable<B>;

}  // namespace kvtier
