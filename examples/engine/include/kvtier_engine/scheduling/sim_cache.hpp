#pragma once
// sim_cache: kvtier's real prefix index (radix_index with look_ahead<lru> eviction) driven as the
// hierarchical cache drives it, with page contents instead of KV bytes, for the simulator.
//  - device and host slots come from free lists; each slot remembers the content (the chained
//    token hash of the page written there) so that a reader can check it got its own prefix;
//  - device → host: write-through at commit (a host copy per new page), and a victim with no host
//    copy is backed up before it leaves, as the cache's write_through does; device-only mode drops;
//  - host → slow tier (file mode): write-back, a host victim with no slow copy is written first;
//  - copies in flight (loads, fetches) are marked in the index and land at a simulated time.
// Time is not kept here: the simulator charges the links (cost model) and calls land(now).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <queue>
#include <span>
#include <unordered_map>
#include <vector>

#include "kvtier/core/page_key.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/index/radix_index.hpp"
#include "kvtier/policy/eviction/look_ahead.hpp"
#include "kvtier/policy/eviction/lru.hpp"

namespace kvtier_engine::scheduling {

enum class sim_mode : std::uint8_t { none, device, host, file };

struct sim_cache_config {
  std::size_t page_tokens = 16;
  std::size_t device_pages = 4096, host_pages = 16384, disk_pages = 65536;
  sim_mode mode = sim_mode::host;
};

class sim_cache {
 public:
  using index_type = kvtier::radix_index<kvtier::look_ahead<kvtier::lru>>;
  static constexpr std::uint64_t no_content = 0;

  explicit sim_cache(const sim_cache_config& c)
      : cfg_(c), index_(kvtier::page_size<>(c.page_tokens)), dev_content_(c.device_pages, no_content), host_content_(c.host_pages, no_content) {
    for (std::size_t i = c.device_pages; i-- > 0;) dev_free_.push_back(std::uint32_t(i));
    for (std::size_t i = c.host_pages; i-- > 0;) host_free_.push_back(std::uint32_t(i));
  }

  index_type& index() noexcept { return index_; }
  const sim_cache_config& config() const noexcept { return cfg_; }
  bool caching() const noexcept { return cfg_.mode != sim_mode::none; }
  bool has_host() const noexcept { return cfg_.mode == sim_mode::host || cfg_.mode == sim_mode::file; }
  bool has_disk() const noexcept { return cfg_.mode == sim_mode::file; }
  std::size_t device_free() const noexcept { return dev_free_.size(); }

  // Device slots for `n` pages, evicting unlocked pages (backed up first when a host tier exists).
  // Returns the slots written into `out` (appended), or false with nothing taken.
  // An eviction pass that came up short is not repeated until pages are unlocked (unlocked()):
  // with most pages locked by running requests, each pass would scan the whole device tier.
  bool allocate_device(std::size_t n, std::vector<std::uint32_t>& out) {
    if (dev_free_.size() < n && !(short_epoch_ == epoch_ && n >= short_need_)) evict_device(n - dev_free_.size());
    if (dev_free_.size() < n) {
      short_epoch_ = epoch_;
      short_need_ = n;
      return false;
    }
    for (std::size_t i = 0; i < n; ++i) out.push_back(dev_free_.back()), dev_free_.pop_back();
    return true;
  }
  // Bumped by every change a lookup or an allocation could see (copies placed, dropped, landed,
  // slots freed): the simulator reuses a queued request's peek while it stays the same.
  std::uint64_t version() const noexcept { return version_; }
  void changed() noexcept { ++version_; }

  void free_device(std::uint32_t slot) {
    ++version_;
    dev_content_[slot] = no_content;
    dev_free_.push_back(slot);
  }
  void unlocked() noexcept { ++epoch_, ++version_; }
  std::uint64_t& device_content(std::uint32_t slot) noexcept { return dev_content_[slot]; }
  std::uint64_t host_content(std::uint32_t slot) const noexcept { return host_content_[slot]; }
  std::uint64_t disk_content(kvtier::page_id p) {
    const auto it = disk_.find(key_of(p));
    return it == disk_.end() ? no_content : it->second;
  }

  // A host copy of `page` (content `c`), evicting host pages for room; false when none is free.
  bool backup_to_host(kvtier::page_id page, std::uint64_t c, bool in_flight = false) {
    if (!has_host()) return false;
    if (host_free_.empty()) evict_host(std::max<std::size_t>(1, cfg_.host_pages / 64));
    if (host_free_.empty()) return false;
    const std::uint32_t h = host_free_.back();
    host_free_.pop_back();
    host_content_[h] = c;
    ++version_;
    (void)index_.place_copy(page, kvtier::host_slot{h}, in_flight);
    ++backups_;
    return true;
  }

  // A page's copy in `tier` becomes ready (a load or fetch landed).
  void land(kvtier::page_id page, kvtier::tier_id tier) {
    ++version_;
    (void)index_.set_in_flight(page, tier, false);
  }

  std::uint64_t backups() const noexcept { return backups_; }
  std::uint64_t disk_writes() const noexcept { return disk_writes_; }
  std::uint64_t dropped() const noexcept { return dropped_; }

 private:
  struct key_hash {
    std::size_t operator()(const kvtier::page_key& k) const noexcept { return std::size_t(k.hi ^ (k.lo * 0x9e3779b97f4a7c15ull)); }
  };
  kvtier::page_key key_of(kvtier::page_id p) const {
    const auto i = index_.info(p);
    return i ? i->key : kvtier::page_key{};
  }

  void evict_device(std::size_t n) {
    // A victim with no host copy is kept on the first pass and backed up (outside the pass: a
    // backup may evict host pages), then offered again.
    unbacked_.clear();
    std::size_t got = index_.evict(kvtier::tier_id::device, n, [&](const kvtier::victim& v) {
      if (has_host() && !v.residency.tiers.has(kvtier::tier_id::host)) {
        unbacked_.push_back(v.page);
        return false;
      }
      free_device(v.residency.device.value());
      return true;
    });
    if (got >= n || unbacked_.empty()) return;
    for (kvtier::page_id p : unbacked_) {
      const auto r = index_.residency(p);
      if (r) (void)backup_to_host(p, dev_content_[r->device.value()]);
    }
    index_.evict(kvtier::tier_id::device, n - got, [&](const kvtier::victim& v) {
      if (!v.residency.tiers.has(kvtier::tier_id::host) && !v.residency.tiers.has(kvtier::tier_id::disk)) ++dropped_;
      free_device(v.residency.device.value());
      return true;
    });
  }

  void evict_host(std::size_t n) {
    if (has_disk()) {  // write-back: host victims with no slow-tier copy are written first
      victims_.clear();
      index_.collect_victims(kvtier::tier_id::host, n, victims_);
      for (kvtier::page_id p : victims_) {
        const auto r = index_.residency(p);
        if (!r || r->tiers.has(kvtier::tier_id::disk)) continue;
        if (index_.pages_in(kvtier::tier_id::disk) >= cfg_.disk_pages)
          index_.evict(kvtier::tier_id::disk, std::max<std::size_t>(1, cfg_.disk_pages / 64), [&](const kvtier::victim& v) {
            disk_.erase(key_of(v.page));
            return true;
          });
        if (index_.pages_in(kvtier::tier_id::disk) >= cfg_.disk_pages) continue;
        disk_[key_of(p)] = host_content_[r->host.value()];
        (void)index_.add_tier(p, kvtier::tier_id::disk);
        ++disk_writes_;
      }
    }
    ++version_;
    index_.evict(kvtier::tier_id::host, n, [&](const kvtier::victim& v) {
      if (!v.residency.tiers.has(kvtier::tier_id::device) && !v.residency.tiers.has(kvtier::tier_id::disk)) ++dropped_;
      host_content_[v.residency.host.value()] = no_content;
      host_free_.push_back(v.residency.host.value());
      return true;
    });
  }

  sim_cache_config cfg_;
  index_type index_;
  std::vector<std::uint64_t> dev_content_, host_content_;
  std::vector<std::uint32_t> dev_free_, host_free_;
  std::unordered_map<kvtier::page_key, std::uint64_t, key_hash> disk_;
  std::vector<kvtier::page_id> victims_, unbacked_;
  std::uint64_t backups_ = 0, disk_writes_ = 0, dropped_ = 0;
  std::uint64_t epoch_ = 0, short_epoch_ = UINT64_MAX, version_ = 0;
  std::size_t short_need_ = 0;
};

}  // namespace kvtier_engine::scheduling
