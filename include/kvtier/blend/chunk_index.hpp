#pragma once
// Chunk-keyed reuse: the KV of text chunks (retrieved documents, tool outputs) served wherever they
// appear in a prompt, not only as its prefix.
//
// A chunk is computed on its own, at positions 0.., and its whole pages enter the cache under a
// namespace of their own, derived from the request's namespace and the RoPE spec (chunk_namespace):
// keyed by the chunk's tokens (a chain of page keys from the chunk's first page), never by where it
// sat in a prompt, and K rotated relative to the chunk's start. So a chunk page is an ordinary
// cached page: lookup locks it, prefetch/load bring it from the host or a slow tier (page headers
// and checksums checked on the way), release unlocks it, eviction and write policies apply.
//
// chunk_set is one request's view: lookup() finds every known chunk that starts on a page boundary
// of the prompt (a lease per chunk), load() queues their copies to the device, place() copies each
// chunk page into the request's own slot at the chunk's offset with K rotated by that offset
// (R(offset) · R(local) · k = R(offset + local) · k; V copied as is), and release() gives the leases
// back. The placed KV is each chunk's own KV: the engine then recomputes what deviates (CacheBlend:
// kvtier/blend/select.hpp) and must not commit it as the request's exact prefix. store_chunk() puts
// a chunk the engine computed on its own into the index. Scheduler thread only, as the cache.
//
// place() copies on the CPU (a device pool the CPU can address, as the engine's CPU backend uses);
// the fused GPU copy-and-rotate kernel is not written yet.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "kvtier/codec/kv_page.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/page_key.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/memory/properties.hpp"
#include "kvtier/transfer/rope.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::blend {

// The namespace a request namespace's chunks live in, per rotation: chunk pages never meet prefix
// pages (a chunk's K is rotated from its own start) nor pages stored under another RoPE spec.
inline namespace_id chunk_namespace(namespace_id ns, const transfer::rope_spec& r) noexcept {
  std::uint64_t h = ns.value() ^ 0x6b767469657263ull ^ (r.fingerprint() * 0x9e3779b97f4a7c15ull);  // "kvtierc"
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return namespace_id{h};
}

// A chunk found in a prompt.
struct chunk_hit {
  std::size_t offset = 0;  // prompt position of its first token (a page boundary)
  std::size_t pages = 0;   // pages matched at lookup; after load(), the pages usable (a prefix of them)
};

namespace detail {
// Copies page src_slot of a view to dst_slot of another (or the same), K rotated by delta.
template <dtype T, transfer::kv_view View>
void copy_page_rotated(const View& src, std::size_t src_slot, const View& dst, std::size_t dst_slot, std::size_t P, long delta,
                       const transfer::rope_spec& r, std::span<const float> inv) {
  const auto& e = src.map.extents();
  const std::size_t row_bytes = e.heads() * e.dim() * src.element_bytes;
  for (std::size_t l = 0; l < e.layers(); ++l)
    for (std::size_t k = 0; k < e.kv(); ++k)
      for (std::size_t t = 0; t < P; ++t) {
        std::byte* d = dst.page_row(l, k, dst_slot, P, t, 0);
        std::memmove(d, src.page_row(l, k, src_slot, P, t, 0), row_bytes);
        if (k == 0) transfer::rotate_row<T>(d, e.heads(), r, inv, delta);
      }
}
}  // namespace detail

template <class Cache>
class chunk_set {
 public:
  using lease_type = typename Cache::lease_type;
  using stream_type = typename Cache::stream_type;

  // Throws config_error for a RoPE spec that does not fit the cache's shape.
  chunk_set(Cache& cache, namespace_id ns, const transfer::rope_spec& rope) : cache_(&cache), ns_(chunk_namespace(ns, rope)), rope_(rope) {
    rope_.check();
    const kv_shape& s = cache.configuration().shape;
    if (rope_.head_dim != s.head_dim() || s.kv_planes() < 2)
      throw config_error("kvtier: chunk_set needs a rope_spec of the cache's head dim and a shape with K and V");
  }
  chunk_set(const chunk_set&) = delete;
  chunk_set& operator=(const chunk_set&) = delete;
  ~chunk_set() { (void)release(); }

  namespace_id chunk_ns() const noexcept { return ns_; }
  std::span<const chunk_hit> hits() const noexcept { return hits_; }
  // Lease i (hits()[i]'s pages: device_slots() once loaded, sources() before).
  const lease_type& lease(std::size_t i) const noexcept { return leases_[i]; }
  // Prompt tokens the hits cover (after load(): the usable pages).
  std::size_t reused_tokens() const noexcept {
    std::size_t n = 0;
    for (const auto& h : hits_) n += h.pages * page_tokens();
    return n;
  }

  // Finds the known chunks of `prompt`: at each page boundary, the longest chain of chunk pages that
  // starts there; a hit is taken whole and the search goes on after it. Each hit is locked until
  // release(). Each probe is a cache lookup (cache_stats counts it). invalid_argument while hits
  // from an earlier lookup are held.
  result<void> lookup(std::span<const token_id> prompt) {
    if (!leases_.empty()) return make_error(errc::invalid_argument);
    const std::size_t P = page_tokens();
    for (std::size_t o = 0; o + P <= prompt.size();) {
      lease_type l;
      if (auto r = cache_->lookup(ns_, prompt.subspan(o), l); !r) return r;
      const std::size_t n = l.pages().size();
      if (n == 0) {
        (void)cache_->release(l);
        o += P;
        continue;
      }
      hits_.push_back({o, n});
      leases_.push_back(std::move(l));
      o += n * P;
    }
    return {};
  }

  // Starts the slow-tier reads of every hit (see hierarchical_cache::prefetch); pages requested.
  std::size_t prefetch() {
    std::size_t n = 0;
    for (auto& l : leases_) n += cache_->prefetch(l);
    return n;
  }

  // Queues every hit's host → device copies on `stream`; a hit is cut to the pages that could be
  // served (missing pages, a full device), as for a prefix. The first error is returned.
  result<void> load(stream_type& stream) {
    result<void> first{};
    for (std::size_t i = 0; i < leases_.size(); ++i) {
      const result<void> r = cache_->load(leases_[i], stream);
      if (!r && first) first = r;
      hits_[i].pages = r ? leases_[i].cached_pages() : 0;
    }
    return first;
  }

  // Copies every usable hit page into the request's slot for its prompt page (block_table[offset / P
  // + i]) with K rotated by the hit's offset, after waiting for the loads. Needs a device pool the CPU
  // can address (a host stand-in). invalid_argument for a block table too short or a dtype that is
  // not the cache's.
  result<void> place(std::span<const device_slot> block_table)
    requires memory::has_property<typename Cache::device_pool_type, memory::host_accessible>
  {
    const std::size_t P = page_tokens();
    const kv_shape& s = cache_->configuration().shape;
    for (std::size_t i = 0; i < hits_.size(); ++i)
      if (hits_[i].pages && block_table.size() < hits_[i].offset / P + hits_[i].pages) return make_error(errc::invalid_argument);
    for (std::size_t i = 0; i < leases_.size(); ++i)
      if (hits_[i].pages)
        for (std::size_t layer = 0; layer < s.layers(); ++layer)
          if (auto r = cache_->wait_layer(leases_[i], layer); !r) return r;
    std::vector<float> inv;
    try {
      inv = rope_.inv_freq();
    } catch (...) {
      return make_error(errc::capacity_exhausted);
    }
    const auto& lf = cache_->device_view();  // (layer, kv, slot * P + t, head, dim)
    kvtier::detail::with_dtype(s.element_type(), [&](auto tc) {
      for (std::size_t i = 0; i < hits_.size(); ++i) {
        const std::span<const device_slot> from = leases_[i].device_slots();
        for (std::size_t p = 0; p < hits_[i].pages; ++p)
          detail::copy_page_rotated<decltype(tc)::value>(lf, from[p].value(), lf, block_table[hits_[i].offset / P + p].value(), P,
                                                         long(hits_[i].offset), rope_, inv);
      }
    });
    return {};
  }

  // Unlocks every hit; the set can look up again.
  result<void> release() {
    result<void> first{};
    for (auto& l : leases_)
      if (const result<void> r = cache_->release(l); !r && first) first = r;
    leases_.clear();
    hits_.clear();
    return first;
  }

 private:
  std::size_t page_tokens() const noexcept { return cache_->configuration().pages.tokens(); }

  Cache* cache_;
  namespace_id ns_;
  transfer::rope_spec rope_;
  std::vector<chunk_hit> hits_;
  std::vector<lease_type> leases_;
};

// Puts a chunk the engine computed on its own (positions 0.. of `chunk`, K rotated from there) into
// the index: `slots` are allocate()d slots holding its whole pages in order. Pages already cached keep
// their copy and the engine's duplicates go back to the cache (so the slots are the cache's after
// this call either way). Errors: the cache's (invalid_argument for a slot count that is not the whole
// pages of `chunk`).
template <class Cache>
result<void> store_chunk(Cache& cache, namespace_id ns, const transfer::rope_spec& rope, std::span<const token_id> chunk,
                         std::span<const device_slot> slots) {
  const std::size_t P = cache.configuration().pages.tokens();
  if (slots.size() != chunk.size() / P) return make_error(errc::invalid_argument);
  typename Cache::lease_type l;
  if (auto r = cache.lookup(chunk_namespace(ns, rope), chunk, l); !r) return r;
  const std::size_t u = std::min(l.cached_pages(), slots.size());
  result<void> r = cache.commit(l, chunk.first(slots.size() * P), slots.subspan(u));
  if (r && u) r = cache.free(slots.first(u));
  if (const result<void> rr = cache.release(l); r && !rr) r = rr;
  return r;
}

}  // namespace kvtier::blend
