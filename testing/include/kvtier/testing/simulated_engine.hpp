#pragma once
// A simulated engine: the loop a serving engine runs around the cache, with reference_kv standing
// in for the model. For each request it looks up, prefetches, loads, waits layer by layer, reads
// every cached page back and compares it byte for byte with reference_kv, "computes" the rest
// (reference_kv into fresh device slots), commits and releases. Shared by the end-to-end tests,
// the demo and the GPU check; the Access policy reads and writes device pages (host memory here,
// cudaMemcpy on a GPU).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "kvtier/cache.hpp"
#include "kvtier/testing/chat_workload.hpp"
#include "kvtier/testing/reference_kv.hpp"

namespace kvtier::testing {

// Reads and writes device pages of a stand-in device (plain host memory, layer first).
struct host_device_access {
  template <class Cache>
  static void write_rows(Cache& c, device_slot s, std::size_t first_token_in_page, std::size_t count,
                         const reference_kv& gen, std::span<const std::uint64_t> hashes, std::size_t first_pos) {
    const auto& view = c.device_view();
    const kv_shape& sh = gen.shape();
    const std::size_t P = c.configuration().pages.tokens();
    for (std::size_t l = 0; l < sh.layers(); ++l)
      for (std::size_t k = 0; k < sh.kv_planes(); ++k)
        for (std::size_t t = 0; t < count; ++t) {
          const std::size_t pos = first_pos + t;
          std::byte* row = view.row(l, k, std::size_t(s.value()) * P + first_token_in_page + t, 0);
          gen.fill_row(hashes[pos], l, k, pos, {row, sh.row_bytes()});
        }
  }
  // Returns the number of rows of the page that differ from the reference.
  template <class Cache>
  static std::size_t check_page(Cache& c, device_slot s, const reference_kv& gen, std::span<const std::uint64_t> hashes,
                                std::size_t first_pos) {
    const auto& view = c.device_view();
    const kv_shape& sh = gen.shape();
    const std::size_t P = c.configuration().pages.tokens();
    std::size_t bad = 0;
    for (std::size_t l = 0; l < sh.layers(); ++l)
      for (std::size_t k = 0; k < sh.kv_planes(); ++k)
        for (std::size_t t = 0; t < P; ++t) {
          const std::size_t pos = first_pos + t;
          const std::byte* row = view.row(l, k, std::size_t(s.value()) * P + t, 0);
          bad += !gen.check_row(hashes[pos], l, k, pos, {row, sh.row_bytes()});
        }
    return bad;
  }
};

struct simulated_engine_report {
  std::size_t requests = 0;
  std::size_t pages_checked = 0;     // cached pages read back and compared
  std::size_t rows_mismatched = 0;   // must be 0
  std::size_t pages_computed = 0;
  std::size_t errors = 0;            // API calls that returned an error (must be 0)
  std::size_t device_full = 0;       // allocations refused (the request was skipped)
};

// Runs requests from `next` (a callable returning std::optional<chat_request>) through the cache as
// an engine would, until it returns nullopt or `requests` requests ran (0: no limit). Like a real
// scheduler it looks one request ahead: the next request is looked up and its slow-tier pages
// prefetched while the current one is loaded and computed.
template <class Access = host_device_access, class Cache, class Next>
simulated_engine_report run_simulated_engine(Cache& cache, Next&& next, const reference_kv& gen,
                                             typename Cache::stream_type& stream, std::size_t requests = 0,
                                             bool verify = true) {
  simulated_engine_report rep;
  using lease_type = typename Cache::lease_type;
  lease_type leases[2];
  std::optional<chat_request> reqs[2];
  std::vector<token_id> seq;
  std::vector<device_slot> slots;
  const std::size_t P = cache.configuration().pages.tokens();
  std::size_t taken = 0;
  auto admit = [&](int k) {
    reqs[k].reset();
    if (requests && taken == requests) return;
    reqs[k] = next();
    if (!reqs[k]) return;
    ++taken;
    if (!cache.lookup(namespace_id{reqs[k]->name_space}, reqs[k]->prompt, leases[k])) ++rep.errors;
    cache.prefetch(leases[k]);
  };
  admit(0);
  for (int cur = 0; reqs[cur]; cur ^= 1) {
    admit(cur ^ 1);  // the queued request: looked up, prefetching in the background
    const chat_request& req = *reqs[cur];
    lease_type& lease = leases[cur];
    ++rep.requests;
    if (!cache.load(lease, stream)) ++rep.errors;
    // The whole sequence this turn produces: the prompt, then the reply (decode).
    seq = req.prompt;
    seq.insert(seq.end(), req.reply.begin(), req.reply.end());
    const std::vector<std::uint64_t> hashes = gen.prefix_hashes(req.name_space, seq);
    const std::size_t cached = lease.cached_pages();
    for (std::size_t layer = 0; layer < gen.shape().layers(); ++layer)
      if (!cache.wait_layer(lease, layer)) ++rep.errors;
    if (verify)
      for (std::size_t i = 0; i < cached; ++i) {
        rep.rows_mismatched += Access::check_page(cache, lease.device_slots()[i], gen, hashes, i * P);
        ++rep.pages_checked;
      }
    // Compute the rest (prefill of the uncached prompt, then decode) into fresh slots.
    const std::size_t covering = (seq.size() + P - 1) / P;
    slots.resize(covering - cached);
    if (!cache.allocate(slots)) {
      ++rep.device_full;
      if (!cache.release(lease)) ++rep.errors;
      cache.poll();
      continue;
    }
    for (std::size_t i = cached; i < covering; ++i) {
      const std::size_t n = std::min(P, seq.size() - i * P);
      Access::write_rows(cache, slots[i - cached], 0, n, gen, hashes, i * P);
      ++rep.pages_computed;
    }
    const std::size_t whole = seq.size() / P;
    if (!cache.commit(lease, seq, std::span<const device_slot>(slots.data(), whole - cached))) ++rep.errors;
    if (whole < covering) (void)cache.free(std::span<const device_slot>(slots.data() + (whole - cached), 1));
    if (!cache.release(lease)) ++rep.errors;
    cache.poll();
    if (rep.requests % 97 == 0 && !cache.audit()) ++rep.errors;  // bookkeeping agrees with the index
  }
  if (!cache.audit()) ++rep.errors;
  return rep;
}

// The same over a chat workload.
template <class Access = host_device_access, class Cache>
simulated_engine_report run_chat_workload(Cache& cache, chat_workload& work, const reference_kv& gen,
                                          typename Cache::stream_type& stream, std::size_t requests = 0,
                                          bool verify = true) {
  return run_simulated_engine<Access>(cache, [&] { return work.next(); }, gen, stream, requests, verify);
}

}  // namespace kvtier::testing
