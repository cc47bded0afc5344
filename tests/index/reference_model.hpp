#pragma once
// A reference model of the prefix index (a plain ordered map from (namespace, page-prefix) to the
// page's residency and lock count) and a driver that runs random operations on the model and on
// radix_index side by side, checking every answer. Shared by the randomized test and the fuzzer.
#include <cstdint>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "kvtier/index.hpp"

namespace kvtier::testing {

// Thrown on the first disagreement between the model and the index.
struct model_mismatch : std::logic_error {
  using std::logic_error::logic_error;
};

// A source of choices: random numbers in the test, fuzzer bytes in the fuzz target.
struct choice_source {
  virtual ~choice_source() = default;
  virtual std::uint32_t next(std::uint32_t bound) = 0;  // in [0, bound)
  virtual bool exhausted() const = 0;
};

struct random_choices final : choice_source {
  explicit random_choices(std::uint64_t seed) : rng(seed) {}
  std::uint32_t next(std::uint32_t bound) override {
    return bound <= 1 ? 0 : std::uniform_int_distribution<std::uint32_t>(0, bound - 1)(rng);
  }
  bool exhausted() const override { return false; }
  std::mt19937_64 rng;
};

struct byte_choices final : choice_source {
  byte_choices(const std::uint8_t* d, std::size_t n) : data(d), size(n) {}
  std::uint32_t next(std::uint32_t bound) override {
    if (bound <= 1) return 0;
    std::uint32_t v = 0;
    for (int k = 0; k < 2 && pos < size; ++k) v = (v << 8) | data[pos++];
    return v % bound;
  }
  bool exhausted() const override { return pos >= size; }
  const std::uint8_t* data;
  std::size_t size;
  std::size_t pos = 0;
};

template <class Index>
class model_driver {
 public:
  explicit model_driver(Index& index, choice_source& choices)
      : idx_(index), ch_(choices), ps_(index.page_size().tokens()) {
    prompts_.push_back({});
  }

  // One random operation, checked. Returns its name (for failure messages).
  const char* step() {
    switch (ch_.next(16)) {
      case 0: case 1: case 2: insert(false); return "insert";
      case 3: insert(true); return "match_and_insert";
      case 4: case 5: case 6: match(); return "match";
      case 7: unlock_one(); return "unlock";
      case 8: case 9: evict(); return "evict";
      case 10: remove_tier(); return "remove_tier";
      case 11: flip_in_flight(); return "in_flight";
      case 12: add_tier(); return "add_tier";
      case 13: look_ahead(); return "look_ahead";
      case 14: collect(); return "collect_victims";
      default: check_all(); return "check_all";
    }
  }

  // Unlocks everything still held and checks the whole model once more.
  void finish() {
    while (!leases_.empty()) unlock_one();
    check_all();
  }

 private:
  struct entry {
    page_residency res{};
    std::uint32_t locks = 0;
    page_id handle{};  // trusted while res has a tier or locks > 0
  };
  using key = std::pair<std::uint64_t, std::vector<std::int32_t>>;  // namespace, prefix tokens

  [[noreturn]] void fail(const std::string& what) const {
    throw model_mismatch("model mismatch: " + what);
  }
  void expect(bool ok, const char* what) const {
    if (!ok) fail(what);
  }
  static bool alive(const entry& e) { return !e.res.tiers.empty() || e.locks > 0; }

  namespace_id pick_ns() { return namespace_id{1 + ch_.next(3)}; }

  // A prompt that shares a random prefix with an earlier one; tokens from a tiny vocabulary so
  // prompts also diverge inside pages.
  std::vector<token_id> make_prompt() {
    const auto& base = prompts_[ch_.next(std::uint32_t(prompts_.size()))];
    std::size_t keep = base.empty() ? 0 : ch_.next(std::uint32_t(base.size() + 1));
    std::vector<token_id> p(base.begin(), base.begin() + std::ptrdiff_t(keep));
    const std::size_t extra = ch_.next(std::uint32_t(4 * ps_ + 2));
    for (std::size_t i = 0; i < extra; ++i) p.push_back(token_id{std::int32_t(ch_.next(3))});
    if (prompts_.size() < 64) prompts_.push_back(p);
    else prompts_[ch_.next(64)] = p;
    return p;
  }
  std::vector<token_id> pick_prompt() {
    if (ch_.next(3) == 0) return make_prompt();
    return prompts_[ch_.next(std::uint32_t(prompts_.size()))];
  }
  key prefix_key(namespace_id ns, const std::vector<token_id>& t, std::size_t pages) const {
    key k{ns.value(), {}};
    k.second.reserve(pages * ps_);
    for (std::size_t i = 0; i < pages * ps_; ++i) k.second.push_back(t[i].value());
    return k;
  }
  page_residency random_residency(bool allow_empty) {
    page_residency r;
    r.tiers.bits = std::uint8_t(ch_.next(16));
    if (!allow_empty && r.tiers.empty()) r.tiers.add(tier_id(ch_.next(4)));
    if (ch_.next(4) == 0) r.in_flight.bits = std::uint8_t(ch_.next(16) & r.tiers.bits);
    if (r.tiers.has(tier_id::device)) r.device = device_slot{ch_.next(1000)};
    if (r.tiers.has(tier_id::host)) r.host = host_slot{ch_.next(1000)};
    return r;
  }
  entry* by_handle(page_id h) {
    auto it = handles_.find(h.value());
    if (it == handles_.end()) return nullptr;
    auto m = model_.find(it->second);
    if (m == model_.end() || !alive(m->second) || m->second.handle != h) return nullptr;
    return &m->second;
  }
  void remember(const key& k, entry& e) {
    if (alive(e)) handles_[e.handle.value()] = k;
  }
  void compare_page(const entry& e, page_id h, const char* where) {
    auto info = idx_.info(h);
    if (!info) fail(std::string(where) + ": handle unknown to the index");
    if (!(info->residency == e.res)) fail(std::string(where) + ": residency differs");
    if (info->locks != e.locks) fail(std::string(where) + ": lock count differs");
  }

  // With `with_match`: match_and_insert, checked as a match against the model as it was, then as
  // the insert.
  void insert(bool with_match) {
    const namespace_id ns = pick_ns();
    const auto t = pick_prompt();
    const bool lock = ch_.next(4) == 0;
    std::vector<page_residency> given;
    const std::size_t n = t.size() / ps_;
    // Half the time one residency for every page (the overload that sets a run from one record).
    const bool same = ch_.next(2) == 0;
    for (std::size_t i = 0; i < n; ++i)
      given.push_back(same && i > 0 ? given[0] : random_residency(!lock && ch_.next(8) == 0));
    std::vector<page_id> path;
    const insert_options options{.lock = lock, .priority = std::uint8_t(ch_.next(3))};
    insert_result r;
    if (with_match) {
      const bool match_lock = ch_.next(3) == 0;
      const match_options m{.lock = match_lock, .touch = ch_.next(4) != 0, .priority = std::uint8_t(ch_.next(3))};
      r = same && n > 0 ? idx_.match_and_insert(ns, t, result_, given[0], m, options, &path)
                        : idx_.match_and_insert(ns, t, result_, [&](std::size_t i) { return given.at(i); }, m,
                                                options, &path);
      check_match(ns, t, match_lock, false);
    } else {
      r = same && n > 0 ? idx_.insert(ns, t, given[0], options, &path)
                        : idx_.insert(ns, t, [&](std::size_t i) { return given.at(i); }, options, &path);
    }
    std::size_t existing = 0, inserted = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const key k = prefix_key(ns, t, i + 1);
      entry& e = model_[k];
      if (e.res.tiers.empty()) {
        e.res = given[i];
        e.res.in_flight.bits &= e.res.tiers.bits;
        inserted += e.res.tiers.empty() ? 0 : 1;
      } else {
        ++existing;
      }
      if (i < path.size()) {
        e.handle = path[i];
        if (lock) ++e.locks;
        remember(k, e);
      }
    }
    expect(r.pages == n, "insert: page count");
    expect(r.existing == existing, "insert: existing pages");
    expect(r.inserted == inserted, "insert: inserted pages");
    if (lock) {
      expect(path.size() == n, "insert: locked path is complete");
      leases_.push_back(path);
    }
    for (std::size_t i = 0; i < path.size(); ++i) compare_page(model_[prefix_key(ns, t, i + 1)], path[i], "insert");
  }

  void match() {
    const namespace_id ns = pick_ns();
    const auto t = pick_prompt();
    const bool lock = ch_.next(3) == 0;
    idx_.match(ns, t, result_, match_options{.lock = lock, .touch = ch_.next(4) != 0, .priority = std::uint8_t(ch_.next(3))});
    check_match(ns, t, lock, true);
  }
  // result_ against the model (before any insert of the same call); `pages`: compare each matched
  // page's residency and locks too (not after match_and_insert: its insert part has run).
  void check_match(namespace_id ns, const std::vector<token_id>& t, bool lock, bool pages) {
    std::size_t i = 0, dev = 0, host = 0, storage = 0;
    for (; i < t.size() / ps_; ++i) {
      auto it = model_.find(prefix_key(ns, t, i + 1));
      if (it == model_.end()) break;
      const page_residency& r = it->second.res;
      if (r.ready(tier_id::device)) ++dev;
      else if (r.ready(tier_id::host)) ++host;
      else if (r.ready(tier_id::disk) || r.ready(tier_id::remote)) ++storage;
      else break;
      if (i >= result_.size()) fail("match: index prefix shorter than the model's");
      if (!(result_.pages[i] == it->second.handle)) fail("match: handle differs");
      if (lock) ++it->second.locks;
      if (pages) compare_page(it->second, result_.pages[i], "match");
    }
    if (result_.size() != i) fail("match: length " + std::to_string(result_.size()) + " vs model " + std::to_string(i));
    expect(result_.device_pages == dev && result_.host_pages == host && result_.storage_pages == storage,
           "match: tier breakdown");
    if (lock && !result_.pages.empty()) leases_.push_back(result_.pages);
  }

  void unlock_one() {
    if (leases_.empty()) {
      // Unlocking something not locked must fail and change nothing.
      if (!handles_.empty()) {
        const page_id h{handles_.begin()->first};
        entry* e = by_handle(h);
        if (e && e->locks == 0) {
          const page_id bad[] = {h};
          expect(idx_.unlock(bad).code() == errc::invalid_argument, "unlock of an unlocked page");
        }
      }
      return;
    }
    const std::size_t k = ch_.next(std::uint32_t(leases_.size()));
    std::vector<page_id> pages = std::move(leases_[k]);
    leases_.erase(leases_.begin() + std::ptrdiff_t(k));
    std::vector<key> keys;
    for (page_id p : pages) {
      entry* e = by_handle(p);
      if (!e || e->locks == 0) fail("unlock: model lost a locked page");
      keys.push_back(handles_[p.value()]);
    }
    expect(idx_.unlock(pages).has_value(), "unlock");
    for (std::size_t i = 0; i < pages.size(); ++i) {
      entry& e = model_[keys[i]];
      --e.locks;
      if (!alive(e)) handles_.erase(pages[i].value());
    }
  }

  // Is the page a leaf of tier t in the model: no page right after it holds t?
  bool tier_leaf(const key& k, tier_id t) const {
    for (auto it = model_.upper_bound(k); it != model_.end(); ++it) {
      const auto& [ns, toks] = it->first;
      if (ns != k.first || toks.size() < k.second.size() ||
          !std::equal(k.second.begin(), k.second.end(), toks.begin()))
        break;
      if (toks.size() == k.second.size() + ps_ && it->second.res.tiers.has(t)) return false;
    }
    return true;
  }
  bool evictable(const key& k, const entry& e, tier_id t) const {
    return e.res.tiers.has(t) && e.locks == 0 && e.res.in_flight.empty() && tier_leaf(k, t);
  }

  void evict() {
    const tier_id t = tier_id(ch_.next(4));
    const std::size_t want = ch_.next(12);
    bool refused = false;
    const std::size_t got = idx_.evict(t, want, [&](const victim& v) {
      entry* e = by_handle(v.page);
      if (!e) fail("evict: victim unknown to the model");
      const key k = handles_[v.page.value()];
      if (v.tier != t) fail("evict: wrong tier");
      if (!evictable(k, *e, t)) fail("evict: victim is not evictable (locked, in flight or not a leaf)");
      if (!(v.residency == e->res)) fail("evict: victim residency differs");
      if (ch_.next(8) == 0) {
        refused = true;
        return false;
      }
      e->res.tiers.remove(t);
      if (t == tier_id::device) e->res.device = device_slot{};
      if (t == tier_id::host) e->res.host = host_slot{};
      if (!alive(*e)) handles_.erase(v.page.value());
      return true;
    });
    expect(got <= want, "evict: more than asked");
    if (got < want && !refused)
      for (const auto& [k, e] : model_)
        if (evictable(k, e, t))
          fail("evict: stopped early with an evictable page left (tier " + std::to_string(int(t)) + ", page " +
               std::to_string(k.second.size() / ps_) + " of its prefix, asked " + std::to_string(want) + ", got " +
               std::to_string(got) + ", tiers " + std::to_string(e.res.tiers.bits) + ")");
  }

  void collect() {
    const tier_id t = tier_id(ch_.next(4));
    std::vector<page_id> out;
    const std::size_t got = idx_.collect_victims(t, ch_.next(6), out);
    expect(got == out.size(), "collect: count");
    // Each must be evictable once the ones before it are dropped: check the first one exactly.
    if (!out.empty()) {
      entry* e = by_handle(out[0]);
      if (!e) fail("collect: unknown page");
      if (!evictable(handles_[out[0].value()], *e, t)) fail("collect: first victim not evictable");
    }
    // The cache looks first, then evicts: an evict() that accepts every victim takes exactly the
    // collected pages, in the collected order (every one checked against the model as it goes).
    if (ch_.next(2) == 0) return;
    std::vector<page_id> taken;
    const std::size_t dropped = idx_.evict(t, out.size(), [&](const victim& v) {
      entry* e = by_handle(v.page);
      if (!e) fail("collect then evict: victim unknown to the model");
      const key k = handles_[v.page.value()];
      if (!evictable(k, *e, t)) fail("collect then evict: victim is not evictable");
      taken.push_back(v.page);
      e->res.tiers.remove(t);
      if (t == tier_id::device) e->res.device = device_slot{};
      if (t == tier_id::host) e->res.host = host_slot{};
      if (!alive(*e)) handles_.erase(v.page.value());
      return true;
    });
    expect(dropped == taken.size(), "collect then evict: count");
    if (taken != out) fail("collect then evict: evict took other pages than collect_victims named");
  }

  template <class F>
  page_id pick_live(F&& accept) {
    if (handles_.empty()) return page_id{};
    auto it = handles_.begin();
    std::advance(it, ch_.next(std::uint32_t(std::min<std::size_t>(handles_.size(), 64))));
    for (std::size_t tries = 0; tries < handles_.size(); ++tries) {
      entry* e = by_handle(page_id{it->first});
      if (e && accept(*e)) return page_id{it->first};
      if (++it == handles_.end()) it = handles_.begin();
    }
    return page_id{};
  }

  void remove_tier() {
    const tier_id t = tier_id(ch_.next(4));
    const page_id h = pick_live([](const entry&) { return true; });
    if (!h.valid()) return;
    entry& e = *by_handle(h);
    const auto r = idx_.remove_tier(h, t);
    if (!e.res.tiers.has(t)) {
      expect(r.code() == errc::not_found, "remove_tier: not_found");
      return;
    }
    expect(r.has_value(), "remove_tier");
    e.res.tiers.remove(t);
    e.res.in_flight.remove(t);
    if (t == tier_id::device) e.res.device = device_slot{};
    if (t == tier_id::host) e.res.host = host_slot{};
    if (!alive(e)) handles_.erase(h.value());
    else compare_page(e, h, "remove_tier");
  }

  void flip_in_flight() {
    const tier_id t = tier_id(ch_.next(4));
    const page_id h = pick_live([](const entry&) { return true; });
    if (!h.valid()) return;
    entry& e = *by_handle(h);
    const bool on = ch_.next(2) == 0;
    const auto r = idx_.set_in_flight(h, t, on);
    if (!e.res.tiers.has(t)) {
      expect(r.code() == errc::not_found, "set_in_flight: not_found");
      return;
    }
    expect(r.has_value(), "set_in_flight");
    on ? e.res.in_flight.add(t) : e.res.in_flight.remove(t);
    compare_page(e, h, "set_in_flight");
  }

  void add_tier() {
    const tier_id t = tier_id(ch_.next(4));
    const page_id h = pick_live([](const entry&) { return true; });
    if (!h.valid()) return;
    entry& e = *by_handle(h);
    const bool flight = ch_.next(2) == 0;
    expect(idx_.add_tier(h, t, flight).has_value(), "add_tier");
    e.res.tiers.add(t);
    flight ? e.res.in_flight.add(t) : e.res.in_flight.remove(t);
    if (t == tier_id::device) {
      const device_slot s{ch_.next(1000)};
      expect(idx_.set_device_slot(h, s).has_value(), "set_device_slot");
      e.res.device = s;
    } else if (t == tier_id::host) {
      const host_slot s{ch_.next(1000)};
      expect(idx_.set_host_slot(h, s).has_value(), "set_host_slot");
      e.res.host = s;
    }
    remember(handles_[h.value()], e);
    compare_page(e, h, "add_tier");
  }

  void look_ahead() {
    if constexpr (look_ahead_policy<typename Index::policy_type>) {
      const namespace_id ns = pick_ns();
      const auto t = pick_prompt();
      ch_.next(2) == 0 ? idx_.expect(ns, t) : idx_.unexpect(ns, t);
    }
  }

  void check_all() {
    std::array<std::size_t, tier_count> held{};
    for (const auto& [k, e] : model_) {
      for (std::size_t t = 0; t < tier_count; ++t) held[t] += e.res.tiers.has(tier_id(t)) ? 1 : 0;
      if (!alive(e)) continue;
      compare_page(e, e.handle, "check_all");
      // The key chains the prefix's pages.
      const std::size_t pages = k.second.size() / ps_;
      std::vector<token_id> toks;
      for (auto v : k.second) toks.push_back(token_id{v});
      page_key parent = root_page_key;
      for (std::size_t i = 0; i < pages; ++i)
        parent = chain_page_key(namespace_id{k.first}, idx_.model(), parent, std::span(toks).subspan(i * ps_, ps_));
      if (!(idx_.info(e.handle)->key == parent)) fail("check_all: page key is not the chained hash");
      auto tt = idx_.tokens_of(e.handle);
      if (!std::equal(tt.begin(), tt.end(), toks.end() - std::ptrdiff_t(ps_))) fail("check_all: page tokens differ");
    }
    for (std::size_t t = 0; t < tier_count; ++t)
      if (idx_.pages_in(tier_id(t)) != held[t]) fail("check_all: pages in tier " + std::to_string(t));
  }

  Index& idx_;
  choice_source& ch_;
  std::size_t ps_;
  std::map<key, entry> model_;
  std::unordered_map<std::uint32_t, key> handles_;  // trusted handles
  std::vector<std::vector<token_id>> prompts_;
  std::vector<std::vector<page_id>> leases_;
  match_result result_;
};

}  // namespace kvtier::testing
