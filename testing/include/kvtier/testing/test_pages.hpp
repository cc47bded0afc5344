#pragma once
// Deterministic test pages for the slow tiers: addresses, token fingerprints and bytes that depend
// on (namespace, index, version), aligned page buffers, the put/get requests of a run of pages, and
// the "no wrong page" ledger every fault test keeps.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <span>
#include <vector>

#include "kvtier/storage.hpp"

namespace kvtier::testing {

// The key and bytes of test page i of namespace ns: every byte depends on (ns, i, version).
inline page_address address_of(std::uint64_t ns, std::uint64_t i) {
  return {namespace_id{ns}, page_key{0x9e3779b97f4a7c15ull * (i + 1), i ^ 0xabcdefull}};
}
inline std::uint64_t tokens_of(std::uint64_t ns, std::uint64_t i) {
  std::vector<token_id> t;
  for (int k = 0; k < 16; ++k) t.push_back(token_id{std::int32_t(ns * 1000003 + i * 16 + std::uint64_t(k))});
  return tokens_fingerprint(t);
}
inline void fill_page(std::span<std::byte> out, std::uint64_t ns, std::uint64_t i, std::uint64_t version = 0) {
  std::uint64_t x = (ns + 1) * 0x2545f4914f6cdd1dull ^ (i + 1) * 0x9e3779b97f4a7c15ull ^ (version + 7);
  for (std::size_t b = 0; b < out.size(); b += 8) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;  // xorshift64
    const std::size_t n = std::min<std::size_t>(8, out.size() - b);
    std::memcpy(out.data() + b, &x, n);
  }
}

// A page-aligned buffer holding n pages of page_bytes each.
struct page_buffer {
  page_buffer(std::size_t n, std::size_t page_bytes)
      : page(page_bytes), pages(n), raw(static_cast<std::byte*>(std::aligned_alloc(4096, n * page_bytes + 4096))) {
    if (!raw) throw std::bad_alloc();
  }
  std::span<std::byte> operator[](std::size_t i) const { return {raw.get() + i * page, page}; }
  std::size_t page, pages;
  struct deleter { void operator()(std::byte* p) const { std::free(p); } };
  std::unique_ptr<std::byte, deleter> raw;
};

// Fills buf's first n pages with test pages [first, first + n) of namespace ns (at `version`) and
// returns the put requests that write them.
inline std::vector<page_write> page_writes(const page_buffer& buf, std::uint64_t ns, std::size_t first, std::size_t n,
                                           std::uint64_t version = 0) {
  std::vector<page_write> w;
  for (std::size_t i = 0; i < n; ++i) {
    fill_page(buf[i], ns, first + i, version);
    w.push_back({address_of(ns, first + i), tokens_of(ns, first + i), buf[i]});
  }
  return w;
}

// The get requests that read test pages [first, first + n) of namespace ns into buf's first n pages.
inline std::vector<page_read> page_reads(const page_buffer& buf, std::uint64_t ns, std::size_t first, std::size_t n) {
  std::vector<page_read> r;
  for (std::size_t i = 0; i < n; ++i) r.push_back({address_of(ns, first + i), tokens_of(ns, first + i), buf[i]});
  return r;
}

// Counts pages tried, served, missed and wrong; a fault test ends with wrong == 0.
struct ledger {
  std::size_t tried = 0, served = 0, missed = 0, corrupted = 0, wrong = 0;
  // Checks one get outcome against the bytes that were written (any of `versions`).
  void check(error status, std::span<const std::byte> got, std::uint64_t ns, std::uint64_t i,
             std::initializer_list<std::uint64_t> versions = {0}) {
    ++tried;
    if (status.code != errc::ok) {
      ++missed;
      if (status.code == errc::corrupted) ++corrupted;
      return;
    }
    std::vector<std::byte> want(got.size());
    for (std::uint64_t v : versions) {
      fill_page(want, ns, i, v);
      if (std::memcmp(want.data(), got.data(), got.size()) == 0) {
        ++served;
        return;
      }
    }
    ++wrong;
  }
};

}  // namespace kvtier::testing
