// The lifecycle fuzzer: random interleavings of lookup, prefetch, load, wait_layer, allocate,
// commit (and decode commits), free, release and poll on one cache, with invalid calls mixed in
// (repeated slots, another lease's slots, slots never handed out, tokens of another prompt, leases
// of another cache, layers out of range, a second lookup into an active lease), over two slow
// tiers that fail, stall and recover. Checked against a reference model:
//  - every byte the engine reads through a lease is what reference_kv says it must be;
//  - every invalid call returns invalid_argument, and audit() keeps agreeing with the index;
//  - allocate never refuses while enough device pages are evictable (neither locked by a lease,
//    nor being loaded, nor held by the engine).
// KVTIER_FUZZ_OPS (default 2000000), KVTIER_FUZZ_SECONDS (default 20: CI stops there) and
// KVTIER_FUZZ_SEED (default 1) steer it; it prints the count and the time.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include "kvtier/cache.hpp"
#include "kvtier/testing/faulty_tier.hpp"
#include "kvtier/testing/reference_kv.hpp"
#include "kvtier/testing/simulated_engine.hpp"

using namespace kvtier;
using namespace kvtier::testing;

namespace {

const kv_shape shape = kv_shape::mha(2, 1, 4, dtype::fp32);  // 16-byte rows
constexpr std::size_t P = 4;
constexpr std::size_t device_pages = 12, host_pages = 12, slow_pages = 48;

template <class C>
struct fuzz_tier : faulty_tier<C> {
  using faulty_tier<C>::faulty_tier;
};
using fuzz_cache = cache_builder<page_size<P>, device_memory<>, host_memory<>,
                                 slow_tiers<slow_tier<fuzz_tier>, slow_tier<fuzz_tier>>, auto_choice,
                                 write_policies<write_through, write_back>, prefetch_timeout>::cache_type;

std::size_t env_or(const char* name, std::size_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::size_t(std::strtoull(v, nullptr, 10)) : fallback;
}

struct lease_model {
  fuzz_cache::lease_type l;
  std::vector<token_id> tokens;    // the prompt, then what commits added
  std::uint64_t ns = 1;
  std::vector<device_slot> fresh;  // the engine's slots (allocate), not committed yet
  bool loaded = false;
};

struct counts {
  std::size_t ops = 0, invalid_calls = 0, invalid_accepted = 0, pages_checked = 0, rows_wrong = 0;
  std::size_t refusals = 0, refused_while_evictable = 0, audits_failed = 0, faults = 0, unexpected_errors = 0;
};

class fuzzer {
 public:
  explicit fuzzer(std::uint64_t seed)
      : rng_(seed),
        c_(make_config(), make_tier(f0_), make_tier(f1_)),
        other_(make_config(), make_tier(f2_), make_tier(f3_)) {
    for (int b = 0; b < 6; ++b) {
      std::vector<token_id> t(44);
      for (std::size_t i = 0; i < t.size(); ++i) t[i] = token_id{std::int32_t(b * 1000 + int(i))};
      bases_.push_back(std::move(t));
    }
  }

  void step() {
    ++n_.ops;
    const std::size_t i = pick(leases_.size());
    lease_model& m = leases_[i];
    switch (pick(100)) {
      case 0: flip_fault(); break;
      default: {
        const std::size_t op = pick(11);
        last_op_ = op * 10 + i;
        if (op == 0) lookup(m);
        else if (op == 1) (void)c_.prefetch(m.l);
        else if (op == 2) load(m);
        else if (op == 3) wait_and_read(m);
        else if (op == 4) allocate(m);
        else if (op == 5 || op == 6) commit(m);
        else if (op == 7) free_fresh(m);
        else if (op == 8) release(m);
        else if (op == 9) c_.poll();
        else invalid(i);
      }
    }
    if (n_.ops % audit_every_ == 0 && !c_.audit() && n_.audits_failed++ == 0) { std::printf("audit failed after op %zu (%zu)\n", n_.ops, last_op_); dump(0); }
  }
  std::size_t audit_every_ = env_or("KVTIER_FUZZ_AUDIT_EVERY", 509);
  std::size_t last_op_ = 0;

  // Everything healthy again, every lease released: the cache drains and still serves right KV.
  void finish() {
    for (auto* f : {f0_.get(), f1_.get(), f2_.get(), f3_.get()}) f->set(tier_fault::healthy);
    for (auto& m : leases_) release(m);
    c_.drain();
    if (!c_.audit()) ++n_.audits_failed;
    for (const auto& b : bases_) {
      lease_model m;
      m.tokens = b;
      expect_ok(c_.lookup(namespace_id{1}, m.tokens, m.l));
      load(m);
      wait_and_read(m);
      release(m);
    }
  }
  const counts& figures() const { return n_; }

 private:
  static fuzz_cache::config make_config() {
    fuzz_cache::config cfg{shape, {}, device_pages, host_pages};
    cfg.prefetch = prefetch_timeout(std::chrono::microseconds(20), std::chrono::microseconds(5), std::chrono::microseconds(200));
    return cfg;
  }
  std::unique_ptr<fuzz_tier<identity_codec>> make_tier(std::shared_ptr<fault_switch>& f) {
    f = std::make_shared<fault_switch>();
    return std::make_unique<fuzz_tier<identity_codec>>(memory_tier_config{shape, shape.bytes_per_page(P), slow_pages, false}, f);
  }
  std::size_t pick(std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }
  void expect_ok(const result<void>& r, int line = __builtin_LINE()) {
    if (!r && n_.unexpected_errors++ < 3) std::printf("unexpected error %d at line %d\n", int(r.code()), line);
  }
  void expect_invalid(const result<void>& r, int line = __builtin_LINE()) {
    ++n_.invalid_calls;
    if (r.code() != errc::invalid_argument && n_.invalid_accepted++ < 3)
      std::printf("invalid call answered %d at line %d\n", int(r.code()), line);
  }
  std::size_t needed(const lease_model& m) const { return m.tokens.size() / P - m.l.cached_pages(); }

  void flip_fault() {
    ++n_.faults;
    const std::size_t r = pick(10);
    (pick(2) ? f0_ : f1_)->set(r < 6 ? tier_fault::healthy : r < 8 ? tier_fault::failing : tier_fault::stalled);
  }

  void lookup(lease_model& m) {
    if (m.l.active()) {
      expect_invalid(c_.lookup(namespace_id{m.ns}, m.tokens, m.l));  // release it first
      return;
    }
    // Prompts share prefixes: one of six conversations, cut anywhere, sometimes with a new tail.
    const auto& b = bases_[pick(bases_.size())];
    m.tokens.assign(b.begin(), b.begin() + std::ptrdiff_t(1 + pick(b.size())));
    if (pick(4) == 0) m.tokens.back() = token_id{std::int32_t(900000 + pick(1000))};
    m.ns = 1 + pick(2);
    m.loaded = false;
    expect_ok(c_.lookup(namespace_id{m.ns}, m.tokens, m.l));
  }
  void load(lease_model& m) {
    if (!m.l.active() || m.loaded) {
      expect_invalid(c_.load(m.l, stream_));
      return;
    }
    m.loaded = true;
    expect_ok(c_.load(m.l, stream_));
    loaded_paths_.emplace_back(m.l.pages().begin(), m.l.pages().end());
  }
  // What the engine reads: every cached page, once every layer is on the device.
  void wait_and_read(lease_model& m) {
    if (!m.l.active()) {
      expect_invalid(c_.wait_layer(m.l, 0));
      return;
    }
    for (std::size_t layer = 0; layer < shape.layers(); ++layer) expect_ok(c_.wait_layer(m.l, layer));
    const auto hashes = gen_.prefix_hashes(m.ns, m.tokens);
    for (std::size_t i = 0; i < m.l.cached_pages(); ++i) {
      const std::size_t bad = host_device_access::check_page(c_, m.l.device_slots()[i], gen_, hashes, i * P);
      if (bad > 0 && n_.rows_wrong == 0) {
        const page_info inf = *c_.index().info(m.l.pages().size() > i ? m.l.pages()[i] : page_id{});
        std::printf("wrong rows: op %zu, page %zu of %zu (loaded %d, matched %zu, sources %d), slot %u, page tiers %x "
                    "in flight %x device %u\n",
                    n_.ops, i, m.l.cached_pages(), int(m.loaded), m.l.pages().size(),
                    m.l.pages().size() > i ? int(m.l.sources()[i]) : -1, m.l.device_slots()[i].value(),
                    unsigned(inf.residency.tiers.bits), unsigned(inf.residency.in_flight.bits), inf.residency.device.value());
      }
      n_.rows_wrong += bad;
      ++n_.pages_checked;
    }
  }
  // Slots for the pages past the cached prefix, "computed" (reference_kv) into them. A refusal is
  // allowed only while too few device pages are evictable.
  void allocate(lease_model& m) {
    if (!m.l.active() || !m.fresh.empty()) return;
    if (m.tokens.size() / P == m.l.cached_pages()) m.tokens.resize(m.tokens.size() + P, token_id{std::int32_t(800000 + pick(1000))});
    std::vector<device_slot> s(needed(m));
    if (!c_.allocate(s)) {
      ++n_.refusals;
        if (pinned() + s.size() <= device_pages && n_.refused_while_evictable++ == 0) dump(s.size());
      return;
    }
    const auto hashes = gen_.prefix_hashes(m.ns, m.tokens);
    for (std::size_t k = 0; k < s.size(); ++k)
      host_device_access::write_rows(c_, s[k], 0, P, gen_, hashes, (m.l.cached_pages() + k) * P);
    m.fresh = std::move(s);
  }
  void commit(lease_model& m) {
    if (!m.l.active() || m.fresh.empty()) return;
    if (m.fresh.size() != needed(m)) {  // a load grew the prefix since: the engine recomputes
      expect_ok(c_.free(m.fresh));
      m.fresh.clear();
      return;
    }
    expect_ok(c_.commit(m.l, m.tokens, m.fresh));
    m.fresh.clear();
  }
  void free_fresh(lease_model& m) {
    if (m.fresh.empty()) return;
    expect_ok(c_.free(m.fresh));
    m.fresh.clear();
  }
  void release(lease_model& m) {
    free_fresh(m);
    expect_ok(c_.release(m.l));
  }

  // Device slots nothing may evict now: the engine's, the leases' private duplicates, pages locked
  // or being loaded, and (eviction goes leaves first) the pages before a page being loaded on its
  // path, which a lease released before its load finished no longer locks.
  std::size_t pinned() {
    std::set<std::uint32_t> held, mapped;
    for (const auto& m : leases_) {
      for (device_slot s : m.fresh) held.insert(s.value());
    }
    for (std::uint32_t p = 0; p < 4096; ++p) {
      if (!c_.index().contains(page_id{p})) continue;
      const page_info inf = *c_.index().info(page_id{p});
      if (!inf.residency.tiers.has(tier_id::device)) continue;
      mapped.insert(inf.residency.device.value());
      if (inf.locks > 0 || inf.residency.in_flight.has(tier_id::device)) held.insert(inf.residency.device.value());
    }
    for (const auto& m : leases_)
      if (m.l.active())
        for (device_slot s : m.l.device_slots())
          if (!mapped.contains(s.value())) held.insert(s.value());  // a private duplicate
    std::erase_if(loaded_paths_, [&](const std::vector<page_id>& path) {
      std::size_t last = path.size();
      for (std::size_t k = 0; k < path.size(); ++k)
        if (c_.index().contains(path[k]) && c_.index().info(path[k])->residency.in_flight.has(tier_id::device)) last = k;
      if (last == path.size()) return true;  // nothing of it in flight any more
      for (std::size_t k = 0; k <= last; ++k)
        if (c_.index().contains(path[k]) && c_.index().info(path[k])->residency.tiers.has(tier_id::device))
          held.insert(c_.index().info(path[k])->residency.device.value());
      return false;
    });
    return held.size();
  }

  void dump(std::size_t want) {
    std::printf("refused %zu slots with %zu pinned; device pages (page: locks tiers in_flight):", want, pinned());
    for (std::uint32_t p = 0; p < 4096; ++p) {
      if (!c_.index().contains(page_id{p})) continue;
      const page_info inf = *c_.index().info(page_id{p});
      if (inf.residency.tiers.has(tier_id::device))
        std::printf(" %u:%u/%x/%x@%u%s", p, inf.locks, unsigned(inf.residency.tiers.bits), unsigned(inf.residency.in_flight.bits),
                    inf.residency.device.value(), c_.device_pool().is_allocated(inf.residency.device) ? "" : "(free!)");
    }
    std::printf("; available %zu; fresh:", c_.device_pool().available());
    for (const auto& m : leases_)
      for (device_slot d : m.fresh) std::printf(" %u", d.value());
    std::printf("; lease slots:");
    for (const auto& m : leases_) {
      std::printf(" [");
      if (m.l.active())
        for (device_slot d : m.l.device_slots()) std::printf(" %u", d.value());
      std::printf("]");
    }
    std::printf("\n");
  }

  void invalid(std::size_t i) {
    lease_model& m = leases_[i];
    lease_model& n = leases_[(i + 1) % leases_.size()];
    switch (pick(9)) {
      case 0:  // a slot repeated
        if (m.l.active() && m.fresh.size() >= 2) {
          std::vector<device_slot> s = m.fresh;
          s.back() = s.front();
          expect_invalid(c_.commit(m.l, m.tokens, s));
        }
        break;
      case 1:  // another lease's slots
        if (m.l.active() && !m.fresh.empty() && n.l.active() && n.l.cached_pages() >= m.fresh.size())
          expect_invalid(c_.commit(m.l, m.tokens, n.l.device_slots().first(m.fresh.size())));
        break;
      case 2:  // tokens of another prompt
        if (m.l.active() && !m.fresh.empty() && m.l.cached_pages() > 0) {
          std::vector<token_id> t = m.tokens;
          t[pick(m.l.cached_pages() * P)] = token_id{-7};
          expect_invalid(c_.commit(m.l, t, m.fresh));
        }
        break;
      case 3:  // free() of slots a lease holds
        if (m.l.active() && m.l.cached_pages() > 0) expect_invalid(c_.free(m.l.device_slots().first(1 + pick(m.l.cached_pages()))));
        break;
      case 4: {  // free() or commit of a slot nobody handed out
        std::set<std::uint32_t> engine;
        for (const auto& k : leases_)
          for (device_slot s : k.fresh) engine.insert(s.value());
        const std::uint32_t s = std::uint32_t(pick(device_pages + 4));
        if (!engine.contains(s)) expect_invalid(c_.free(std::vector<device_slot>{device_slot{s}}));
        break;
      }
      case 5:  // a lease of this cache on the other one
        if (m.l.active()) {
          expect_invalid(other_.release(m.l));
          expect_invalid(other_.load(m.l, stream_));
          expect_invalid(other_.wait_layer(m.l, 0));
          expect_invalid(other_.commit(m.l, m.tokens, m.fresh));
        }
        break;
      case 6:  // a layer out of range
        if (m.l.active()) expect_invalid(c_.wait_layer(m.l, shape.layers() + pick(1000)));
        break;
      case 7:  // a second lookup into an active lease
        if (m.l.active()) expect_invalid(c_.lookup(namespace_id{m.ns}, m.tokens, m.l));
        break;
      default:  // counts that disagree
        if (m.l.active() && !m.fresh.empty() && m.fresh.size() == needed(m))
          expect_invalid(c_.commit(m.l, m.tokens, std::span<const device_slot>(m.fresh).first(m.fresh.size() - 1)));
        break;
    }
  }

  std::mt19937_64 rng_;
  const reference_kv gen_{shape};
  std::shared_ptr<fault_switch> f0_, f1_, f2_, f3_;
  fuzz_cache c_;
  fuzz_cache other_;
  transfer::cpu_stream stream_;
  std::array<lease_model, 3> leases_;
  std::vector<std::vector<token_id>> bases_;
  std::vector<std::vector<page_id>> loaded_paths_;  // lookup paths of loads that may be in flight
  counts n_;
};

}  // namespace

BOOST_AUTO_TEST_CASE(random_lifecycles_with_failing_and_stalling_tiers) {
  const std::size_t ops = env_or("KVTIER_FUZZ_OPS", 2000000);
  const auto budget = std::chrono::seconds(env_or("KVTIER_FUZZ_SECONDS", 20));
  const std::uint64_t seed = env_or("KVTIER_FUZZ_SEED", 1);
  fuzzer f(seed);
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t k = 0; k < ops; ++k) {
    f.step();
    if (k % 4096 == 0 && std::chrono::steady_clock::now() - t0 > budget) break;
  }
  f.finish();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const counts& n = f.figures();
  std::printf("lifecycle_fuzz: seed %llu, %zu operations in %.1f s (%.0f/s); %zu pages read back, %zu wrong rows; "
              "%zu invalid calls, %zu accepted; %zu refusals, %zu while evictable; %zu fault flips; %zu audits failed; "
              "%zu unexpected errors\n",
              (unsigned long long)seed, n.ops, s, double(n.ops) / s, n.pages_checked, n.rows_wrong, n.invalid_calls,
              n.invalid_accepted, n.refusals, n.refused_while_evictable, n.faults, n.audits_failed, n.unexpected_errors);
  BOOST_TEST(n.rows_wrong == 0u);
  BOOST_TEST(n.invalid_accepted == 0u);
  BOOST_TEST(n.refused_while_evictable == 0u);
  BOOST_TEST(n.audits_failed == 0u);
  BOOST_TEST(n.unexpected_errors == 0u);
  BOOST_TEST(n.pages_checked > 0u);
  BOOST_TEST(n.invalid_calls > 0u);
}
