// The Redis Cluster tier against a real cluster on loopback (three masters, three replicas, started
// by the test): hash slots, routing of batches across every slot, MOVED and ASK during a
// resharding, failover of a killed master, a restarted node, foreign values, AUTH/ACL and TTL.
// Every read is checked against the bytes written: no wrong page is ever served.
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <set>
#include <thread>
#include <vector>

#include "kvtier/storage/redis_cluster_tier.hpp"
#include "kvtier/testing/redis_cluster.hpp"
#include "kvtier/testing/test_pages.hpp"

using namespace kvtier;
using namespace std::chrono_literals;
namespace test = kvtier::testing;

namespace {
constexpr std::size_t page = 32 * 1024;

redis_cluster_tier_config config(const test::redis_cluster& c, std::string prefix = "kvc") {
  redis_cluster_tier_config cfg{.shape = shapes::llama3_8b(), .page_bytes = page, .seeds = c.seeds()};
  cfg.prefix = std::move(prefix);
  cfg.password = c.opts().password;
  cfg.io_timeout = 5000ms;  // the 2-core CI machine may starve a node for a second
  cfg.reconnect_min = 10ms;
  cfg.reconnect_max = 100ms;
  cfg.refresh_min = 20ms;
  return cfg;
}

// Test pages of namespace ns (indices `ids`, or [first, first + n)), with their put and get requests.
struct pages {
  pages(std::uint64_t ns, std::size_t first, std::size_t n) : pages(ns, range(first, n)) {}
  pages(std::uint64_t ns, std::vector<std::size_t> ids) : buf(ids.size(), page), ns(ns), ids(std::move(ids)) {
    refill();
    for (std::size_t i = 0; i < this->ids.size(); ++i) {
      const std::size_t id = this->ids[i];
      writes.push_back({test::address_of(ns, id), test::tokens_of(ns, id), buf[i]});
      reads.push_back({test::address_of(ns, id), test::tokens_of(ns, id), buf[i]});
    }
  }
  static std::vector<std::size_t> range(std::size_t first, std::size_t n) {
    std::vector<std::size_t> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = first + i;
    return v;
  }
  void refill() {
    for (std::size_t i = 0; i < ids.size(); ++i) test::fill_page(buf[i], ns, ids[i]);
  }
  void scrub() { std::memset(buf.raw.get(), 0xee, buf.pages * page); }
  test::ledger check(const storage_batch& b) const {
    test::ledger l;
    for (std::size_t i = 0; i < ids.size(); ++i) l.check(b[i], buf[i], ns, ids[i]);
    return l;
  }
  test::page_buffer buf;
  std::uint64_t ns;
  std::vector<std::size_t> ids;
  std::vector<page_write> writes;
  std::vector<page_read> reads;
};

template <class Tier>
void put_all(Tier& t, pages& p) {
  p.refill();
  storage_batch b;
  BOOST_REQUIRE(t.put(p.writes, b).has_value());
  BOOST_REQUIRE(t.wait(b, 10s).has_value());
  BOOST_REQUIRE_MESSAGE(b.all_ok(), "puts ok: " << b.count(errc::ok) << " of " << b.size());
}

template <class Tier>
test::ledger get_all(Tier& t, pages& p) {
  p.scrub();
  storage_batch b;
  BOOST_REQUIRE(t.get(p.reads, b).has_value());
  BOOST_REQUIRE(t.wait(b, 10s).has_value());
  return p.check(b);
}

// Reads p until no request fails for want of a node (connection lost, timeout, cluster down),
// for at most `limit`: the cluster is settling after a fault.
template <class Tier>
test::ledger get_when_settled(Tier& t, pages& p, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    p.scrub();
    storage_batch b;
    BOOST_REQUIRE(t.get(p.reads, b).has_value());
    BOOST_REQUIRE(t.wait(b, 10s).has_value());
    const std::size_t unsettled = b.count(errc::connection_lost) + b.count(errc::timeout) + b.count(errc::busy);
    if (unsettled == 0 || std::chrono::steady_clock::now() >= end) return p.check(b);
    std::this_thread::sleep_for(50ms);
  }
}

// Indices i of namespace ns whose page keys hash to `slot` (n of them, searched from `from`).
template <class Tier>
std::vector<std::size_t> ids_in_slot(const Tier& t, std::uint64_t ns, std::uint16_t slot, std::size_t n, std::size_t from = 0) {
  std::vector<std::size_t> ids;
  for (std::size_t i = from; ids.size() < n; ++i)
    if (t.slot_of(test::address_of(ns, i)) == slot) ids.push_back(i);
  return ids;
}

void add(test::ledger& total, const test::ledger& l) {
  total.tried += l.tried;
  total.served += l.served;
  total.missed += l.missed;
  total.corrupted += l.corrupted;
  total.wrong += l.wrong;
}

}  // namespace

bool init_unit_test();  // defined by BOOST_TEST_MODULE

// Without redis-server or redis-cli there is no cluster to test against: say so, exit 77 (skipped).
int main(int argc, char* argv[]) {
  if (::access(KVTIER_REDIS_SERVER, X_OK) != 0 || std::system("redis-cli --version >/dev/null 2>&1") != 0) {
    std::printf("SKIPPED: redis-server (%s) or redis-cli not found; the Redis Cluster tests did not run\n",
                KVTIER_REDIS_SERVER);
    return 77;
  }
  return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}

BOOST_AUTO_TEST_CASE(hash_slots_match_redis) {
  // The spec's check value, hash tags, and CLUSTER KEYSLOT of a live node for tier keys.
  BOOST_TEST(detail::crc16_xmodem("123456789") == 0x31c3);
  BOOST_TEST(detail::cluster_hash_slot("{user1000}.following") == detail::cluster_hash_slot("{user1000}.followers"));
  BOOST_TEST(detail::cluster_hashed_part("foo{}{bar}") == "foo{}{bar}");  // an empty first tag: the whole key
  BOOST_TEST(detail::cluster_hashed_part("foo{{bar}}zap") == "{bar");
  BOOST_TEST(detail::cluster_hashed_part("foo{bar") == "foo{bar");
  BOOST_TEST(detail::cluster_hash_slot("foo{bar}{zap}") == detail::cluster_hash_slot("bar"));
  const auto moved = detail::parse_redirect("MOVED 3999 127.0.0.1:6381", "h");
  BOOST_REQUIRE(moved.has_value());
  BOOST_TEST(!moved->ask);
  BOOST_TEST(moved->slot == 3999);
  BOOST_TEST(moved->to.port == 6381);
  const auto ask = detail::parse_redirect("ASK 12 :7000", "10.0.0.1");
  BOOST_REQUIRE(ask.has_value());
  BOOST_TEST(ask->ask);
  BOOST_TEST(ask->to.host == "10.0.0.1");
  BOOST_TEST(!detail::parse_redirect("MOVED 16384 h:1", "h").has_value());
  BOOST_TEST(!detail::parse_redirect("ERR wrong", "h").has_value());
}

BOOST_AUTO_TEST_CASE(batches_route_across_every_slot) {
  const auto start = std::chrono::steady_clock::now();
  test::redis_cluster cluster({});
  BOOST_TEST_MESSAGE("cluster of " << cluster.size() << " nodes up in "
                     << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s");
  redis_cluster_tier<> t(config(cluster));
  // CLUSTER SHARDS and CLUSTER SLOTS (the older servers' command) give the same slot map.
  auto slot_ports = [](const std::vector<detail::cluster_shard>& shards) {
    std::vector<int> port(detail::cluster_slots, 0);
    for (const auto& sh : shards)
      for (auto [lo, hi] : sh.ranges)
        for (std::uint32_t x = lo; x <= hi; ++x) port[x] = sh.master.port;
    return port;
  };
  test::reply_ptr shards_reply = cluster.command(0, {"CLUSTER", "SHARDS"});
  test::reply_ptr slots_reply = cluster.command(0, {"CLUSTER", "SLOTS"});
  const auto by_shards = detail::parse_cluster_shards(shards_reply.get(), "127.0.0.1");
  const auto by_slots = detail::parse_cluster_slots(slots_reply.get(), "127.0.0.1");
  BOOST_REQUIRE(by_shards.has_value());
  BOOST_REQUIRE(by_slots.has_value());
  BOOST_TEST(by_shards->size() == 3u);  // shards with slots (routing uses masters only)
  const auto owner = slot_ports(*by_shards);
  BOOST_TEST((owner == slot_ports(*by_slots)));
  BOOST_TEST(std::count(owner.begin(), owner.end(), 0) == 0);
  // Tier keys hash like CLUSTER KEYSLOT says.
  for (std::size_t i = 0; i < 20; ++i) {
    const page_address a = test::address_of(1, i);
    test::reply_ptr r = cluster.command(0, {"CLUSTER", "KEYSLOT", t.key_of(a)});
    BOOST_REQUIRE(r);
    BOOST_TEST(r->integer == t.slot_of(a));
  }
  // 4096 pages cover most slots of all three masters; one batch, every page verified.
  pages a(1, 0, 4096);
  put_all(t, a);
  BOOST_TEST(t.mapped_slots() == 16384u);
  std::set<std::uint16_t> slots;
  std::set<int> ports;
  for (const auto& w : a.writes) {
    slots.insert(t.slot_of(w.where));
    ports.insert(t.node_for_slot(t.slot_of(w.where))->port);
  }
  BOOST_TEST(ports.size() == 3u);
  BOOST_TEST_MESSAGE(slots.size() << " distinct slots over " << ports.size() << " masters");
  a.scrub();
  storage_batch rb;
  BOOST_REQUIRE(t.get(a.reads, rb).has_value());
  BOOST_REQUIRE(t.wait(rb, 20s).has_value());
  const auto l = a.check(rb);
  BOOST_TEST_MESSAGE("read back: ok " << rb.count(errc::ok) << ", timeout " << rb.count(errc::timeout) << ", lost "
                     << rb.count(errc::connection_lost) << ", io " << rb.count(errc::io_error) << ", node failures "
                     << t.cluster_stats().node_failures);
  BOOST_TEST(l.served == 4096u);
  BOOST_TEST(l.wrong == 0u);
  // Each key is on the master of its slot (asked behind the tier's back).
  for (std::size_t i = 0; i < 64; ++i) {
    const std::size_t m = cluster.master_of_slot(t.slot_of(a.writes[i].where));
    test::reply_ptr r = cluster.command(m, {"EXISTS", t.key_of(a.writes[i].where)});
    BOOST_REQUIRE(r);
    BOOST_TEST(r->integer == 1);
  }
  BOOST_TEST(t.cluster_stats().moved == 0u);
  BOOST_TEST(t.stats().hits == 4096u);

  // Another process (another engine) writes pages through its own tier: this one reads them.
  const pid_t child = ::fork();
  BOOST_REQUIRE(child >= 0);
  if (child == 0) {  // _Exit: no destructor of the parent's cluster runs here
    redis_cluster_tier<> other(config(cluster));
    pages shared(7, 0, 256);
    storage_batch b;
    std::_Exit(other.put(shared.writes, b) && other.wait(b, 20s) && b.all_ok() ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  BOOST_REQUIRE(WIFEXITED(status));
  BOOST_REQUIRE(WEXITSTATUS(status) == 0);
  pages shared(7, 0, 256);
  const auto from_other = get_all(t, shared);
  BOOST_TEST(from_other.served == 256u);
  BOOST_TEST(from_other.wrong == 0u);

  // Every one of the 16384 slots in one batch (1 KiB pages: one page whose key hashes to each slot).
  constexpr std::size_t small = 1024;
  redis_cluster_tier_config cfg = config(cluster, "kvc-small");
  cfg.page_bytes = small;
  redis_cluster_tier<> tiny(cfg);
  std::vector<std::size_t> id_of_slot(detail::cluster_slots, SIZE_MAX);
  std::size_t found = 0;
  for (std::size_t i = 0; found < detail::cluster_slots; ++i) {
    std::size_t& id = id_of_slot[tiny.slot_of(test::address_of(9, i))];
    if (id == SIZE_MAX) id = i, ++found;
  }
  test::page_buffer buf(detail::cluster_slots, small);
  std::vector<page_write> w;
  std::vector<page_read> r;
  for (std::size_t s = 0; s < detail::cluster_slots; ++s) {
    test::fill_page(buf[s], 9, id_of_slot[s]);
    w.push_back({test::address_of(9, id_of_slot[s]), test::tokens_of(9, id_of_slot[s]), buf[s]});
    r.push_back({test::address_of(9, id_of_slot[s]), test::tokens_of(9, id_of_slot[s]), buf[s]});
  }
  storage_batch all;
  BOOST_REQUIRE(tiny.put(w, all).has_value());
  BOOST_REQUIRE(tiny.wait(all, 20s).has_value());
  BOOST_TEST(all.count(errc::ok) == detail::cluster_slots);
  std::memset(buf.raw.get(), 0xee, detail::cluster_slots * small);
  BOOST_REQUIRE(tiny.get(r, all).has_value());
  BOOST_REQUIRE(tiny.wait(all, 20s).has_value());
  test::ledger every;
  for (std::size_t s = 0; s < detail::cluster_slots; ++s) every.check(all[s], buf[s], 9, id_of_slot[s]);
  BOOST_TEST(every.served == detail::cluster_slots);
  BOOST_TEST(every.wrong == 0u);
  // Each master holds one small page per slot it owns, plus the pages above that it serves.
  for (std::size_t m : cluster.masters()) {
    std::size_t owned = 0, big = 0;
    for (const auto& n : cluster.nodes_seen_by(m))
      if (n.myself)
        for (auto [lo, hi] : n.ranges) owned += std::size_t(hi - lo + 1);
    for (const auto* set : {&a.writes, &shared.writes})
      for (const auto& wr : *set) big += t.node_for_slot(t.slot_of(wr.where))->port == cluster.port(m);
    test::reply_ptr keys = cluster.command(m, {"DBSIZE"});
    BOOST_REQUIRE(keys);
    BOOST_TEST(std::size_t(keys->integer) == owned + big);
  }
}

BOOST_AUTO_TEST_CASE(master_killed_mid_batch_replica_promoted_node_restarted) {
  test::redis_cluster cluster({});
  redis_cluster_tier<> t(config(cluster));
  test::ledger total;
  pages a(2, 0, 600);
  BOOST_REQUIRE(cluster.wait_replicas_synced(20s));
  put_all(t, a);
  for (std::size_t m : cluster.masters()) {  // a is on the replicas too before the fault
    test::reply_ptr r = cluster.command(m, {"WAIT", "1", "1500"});
    BOOST_REQUIRE(r);
    BOOST_REQUIRE(r->integer >= 1);
  }
  const std::size_t victim = cluster.master_of_slot(t.slot_of(a.writes[0].where));
  const std::size_t heir = cluster.replica_of(victim);

  // A write batch and a read batch in flight when the master dies: every request completes, ok or
  // an error value; whatever is served is exactly what was written.
  pages b(2, 10'000, 600);
  storage_batch wb, rb;
  BOOST_REQUIRE(t.put(b.writes, wb).has_value());
  a.scrub();
  BOOST_REQUIRE(t.get(a.reads, rb).has_value());
  cluster.kill(victim);
  BOOST_REQUIRE(t.wait(wb, 10s).has_value());
  BOOST_REQUIRE(t.wait(rb, 10s).has_value());
  auto l = a.check(rb);
  add(total, l);
  BOOST_TEST_MESSAGE("killed mid-batch: read " << l.served << " of 600 served, " << rb.count(errc::connection_lost)
                     << " connection lost, wrong " << l.wrong << "; writes ok " << wb.count(errc::ok) << ", lost "
                     << wb.count(errc::connection_lost));
  BOOST_TEST(l.served + rb.count(errc::connection_lost) + rb.count(errc::timeout) + rb.count(errc::busy) == 600u);
  BOOST_TEST(wb.count(errc::ok) + wb.count(errc::connection_lost) + wb.count(errc::timeout) + wb.count(errc::busy) == 600u);

  // The replica takes over: the tier follows it, and every page replicated before the fault is served.
  const auto killed_at = std::chrono::steady_clock::now();
  BOOST_REQUIRE(cluster.wait_converged(20s));
  BOOST_TEST_MESSAGE("replica promoted after " << std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count() << " s");
  BOOST_TEST(cluster.master_of_slot(t.slot_of(a.writes[0].where)) == heir);
  l = get_when_settled(t, a, 10s);
  add(total, l);
  BOOST_TEST(l.served == 600u);
  BOOST_TEST(t.node_for_slot(t.slot_of(a.writes[0].where))->port == cluster.port(heir));
  // Pages of the batch cut by the fault: served if they reached the replica, else misses.
  l = get_when_settled(t, b, 5s);
  add(total, l);
  BOOST_TEST_MESSAGE("the batch in flight at the fault: " << l.served << " of 600 served after failover, "
                     << l.missed << " lost, wrong " << l.wrong);
  BOOST_TEST(l.served + l.missed == 600u);

  // The dead master restarts: it rejoins as a replica of its heir, then takes its slots back in a
  // manual failover (MOVED, followed); nothing is lost in a manual failover.
  cluster.restart(victim);
  BOOST_REQUIRE(cluster.wait_converged(20s));
  BOOST_REQUIRE(cluster.wait_replicas_synced(20s));
  pages c(2, 20'000, 300);
  put_all(t, c);
  const auto moved_before = t.cluster_stats().moved;
  BOOST_REQUIRE(cluster.text(victim, {"CLUSTER", "FAILOVER"}) == "OK");
  for (int i = 0; i < 200 && cluster.master_of_slot(t.slot_of(a.writes[0].where)) != victim; ++i)
    std::this_thread::sleep_for(50ms);
  BOOST_REQUIRE(cluster.master_of_slot(t.slot_of(a.writes[0].where)) == victim);
  l = get_when_settled(t, a, 10s);
  add(total, l);
  BOOST_TEST(l.served == 600u);
  l = get_when_settled(t, c, 10s);
  add(total, l);
  BOOST_TEST(l.served == 300u);
  BOOST_TEST(t.cluster_stats().moved > moved_before);
  BOOST_TEST_MESSAGE("total: tried " << total.tried << ", served " << total.served << ", missed " << total.missed
                     << ", wrong " << total.wrong << "; moved " << t.cluster_stats().moved << ", refreshes "
                     << t.cluster_stats().refreshes << ", node failures " << t.cluster_stats().node_failures);
  BOOST_TEST(total.wrong == 0u);
}

BOOST_AUTO_TEST_CASE(resharding_ask_and_moved_while_reading_and_writing) {
  test::redis_cluster cluster({});
  redis_cluster_tier<> t(config(cluster));
  pages bulk(3, 0, 1024);
  put_all(t, bulk);
  // One slot (holding none of the bulk pages) moves from its master (source) to another (target),
  // step by step.
  std::set<std::uint16_t> bulk_slots;
  for (const auto& w : bulk.writes) bulk_slots.insert(t.slot_of(w.where));
  std::uint16_t slot = 0;
  for (std::size_t i = 100'000; bulk_slots.count(slot = t.slot_of(test::address_of(3, i))) != 0; ++i) {
  }
  const std::size_t source = cluster.master_of_slot(slot);
  std::size_t target = 0;
  for (std::size_t m : cluster.masters())
    if (m != source) target = m;
  pages old_keys(3, ids_in_slot(t, 3, slot, 8, 100'000));
  put_all(t, old_keys);
  BOOST_REQUIRE(cluster.text(target, {"CLUSTER", "SETSLOT", std::to_string(slot), "IMPORTING", cluster.id_of(source)}) == "OK");
  BOOST_REQUIRE(cluster.text(source, {"CLUSTER", "SETSLOT", std::to_string(slot), "MIGRATING", cluster.id_of(target)}) == "OK");
  auto migrate = [&](std::size_t first, std::size_t n) {
    std::vector<std::string> args = {"MIGRATE", "127.0.0.1", std::to_string(cluster.port(target)), "", "0", "5000", "KEYS"};
    for (std::size_t i = first; i < first + n; ++i) args.push_back(t.key_of(old_keys.writes[i].where));
    BOOST_REQUIRE(cluster.text(source, args) == "OK");
  };
  migrate(0, 4);
  // Half the slot's keys moved: those are found through ASK, the others where they were.
  test::ledger l = get_all(t, old_keys);
  BOOST_TEST(l.served == 8u);
  BOOST_TEST(t.cluster_stats().asked >= 4u);
  // New keys of the migrating slot: the source does not have them, ASK sends them to the target.
  pages new_keys(3, ids_in_slot(t, 3, slot, 4, old_keys.ids.back() + 1));
  const auto asked_before = t.cluster_stats().asked;
  put_all(t, new_keys);
  BOOST_TEST(t.cluster_stats().asked == asked_before + 4);
  test::reply_ptr r = cluster.command(target, {"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)});
  BOOST_TEST(r->integer == 8);  // 4 migrated + 4 new
  migrate(4, 4);
  BOOST_TEST(get_all(t, old_keys).served == 8u);
  BOOST_TEST(get_all(t, new_keys).served == 4u);
  BOOST_TEST(get_all(t, bulk).served == 1024u);
  const auto asked = t.cluster_stats().asked;
  BOOST_TEST_MESSAGE("ASK redirections followed during the migration: " << asked);
  // The slot is handed over: the source answers MOVED, the tier updates its map.
  for (std::size_t m : cluster.masters())
    BOOST_REQUIRE(cluster.text(m, {"CLUSTER", "SETSLOT", std::to_string(slot), "NODE", cluster.id_of(target)}) == "OK");
  BOOST_TEST(get_all(t, old_keys).served == 8u);
  BOOST_TEST(t.cluster_stats().moved >= 1u);
  BOOST_TEST(t.node_for_slot(slot)->port == cluster.port(target));

  // A bulk resharding by redis-cli (300 slots, keys and all) while the tier reads and writes.
  const std::string from = cluster.id_of(target), to = cluster.id_of(source);
  std::atomic<bool> resharded{false};
  std::thread reshard([&] {
    const std::string cmd = "redis-cli --cluster reshard 127.0.0.1:" + std::to_string(cluster.port(target)) +
                            " --cluster-from " + from + " --cluster-to " + to +
                            " --cluster-slots 300 --cluster-yes --cluster-pipeline 16 >/dev/null 2>&1";
    (void)std::system(cmd.c_str());
    resharded = true;
  });
  test::ledger total;
  std::size_t rounds = 0, put_failures = 0;
  for (; rounds < 2 || (!resharded && rounds < 2000); ++rounds) {
    pages fresh(4, rounds * 64, 64);
    storage_batch b;
    BOOST_REQUIRE(t.put(fresh.writes, b).has_value());
    BOOST_REQUIRE(t.wait(b, 10s).has_value());
    put_failures += fresh.writes.size() - b.count(errc::ok);
    add(total, get_all(t, bulk));
  }
  reshard.join();
  BOOST_TEST_MESSAGE("during a 300-slot resharding: " << rounds << " rounds, " << total.tried << " reads, "
                     << total.served << " served, wrong " << total.wrong << ", put failures " << put_failures
                     << "; asked " << t.cluster_stats().asked << ", moved " << t.cluster_stats().moved);
  BOOST_TEST(total.wrong == 0u);
  BOOST_TEST(total.served == total.tried);
  BOOST_TEST(put_failures == 0u);
}

BOOST_AUTO_TEST_CASE(foreign_page_acl_user_and_ttl) {
  test::redis_cluster::options o;
  o.password = "cluster-secret";
  test::redis_cluster cluster(o);
  for (std::size_t i = 0; i < cluster.size(); ++i)  // ACLs are per node: the same user on every node
    BOOST_REQUIRE(cluster.text(i, {"ACL", "SETUSER", "kv", "on", ">kv-secret", "~kvacl:*", "+@all"}) == "OK");
  redis_cluster_tier_config cfg = config(cluster, "kvacl");
  cfg.user = "kv";
  cfg.password = "kv-secret";
  cfg.ttl = std::chrono::seconds(60);
  redis_cluster_tier<> t(cfg);
  pages a(5, 0, 64);
  put_all(t, a);
  BOOST_TEST(get_all(t, a).served == 64u);
  // TTL: every key expires (EX 60), on its slot's master.
  const std::string key = t.key_of(a.writes[0].where);
  test::reply_ptr ttl = cluster.command(cluster.master_of_slot(t.slot_of(a.writes[0].where)), {"TTL", key});
  BOOST_REQUIRE(ttl);
  BOOST_TEST((ttl->integer > 0 && ttl->integer <= 60));

  // A page copied under another page's key (on that key's master): intact, but foreign, a miss.
  for (std::size_t i = 0; i < 8; ++i) {
    const std::string from = t.key_of(a.writes[i].where), to = t.key_of(a.writes[i + 8].where);
    const std::string value = cluster.text(cluster.master_of_slot(detail::cluster_hash_slot(from)), {"GET", from});
    BOOST_REQUIRE(value.size() == page_header_bytes + page);
    BOOST_REQUIRE(cluster.text(cluster.master_of_slot(detail::cluster_hash_slot(to)), {"SET", to, value}) == "OK");
  }
  auto l = get_all(t, a);
  BOOST_TEST(l.served == 56u);
  BOOST_TEST(l.corrupted == 8u);
  BOOST_TEST(l.wrong == 0u);
  BOOST_TEST(t.stats().foreign == 8u);

  // Wrong credentials: nothing is served, every request fails cleanly.
  redis_cluster_tier_config bad = cfg;
  bad.password = "wrong";
  redis_cluster_tier<> intruder(bad);
  a.scrub();
  storage_batch b;
  BOOST_REQUIRE(intruder.get(a.reads, b).has_value());
  BOOST_REQUIRE(intruder.wait(b, 10s).has_value());
  BOOST_TEST(b.count(errc::connection_lost) == 64u);
  // The ACL user reaches only its own keys: another prefix is refused (NOPERM).
  redis_cluster_tier_config other = cfg;
  other.prefix = "elsewhere";
  redis_cluster_tier<> outside(other);
  BOOST_REQUIRE(outside.put(a.writes, b).has_value());
  BOOST_REQUIRE(outside.wait(b, 10s).has_value());
  BOOST_TEST(b.count(errc::ok) == 0u);
}

// read_from_replicas: GETs and EXISTS go to the replicas (READONLY), writes to the masters; a
// replica killed leaves its reads to its master. Every page read is checked: none is wrong.
BOOST_AUTO_TEST_CASE(reads_from_replicas) {
  test::redis_cluster cluster({});
  redis_cluster_tier<> writer(config(cluster));
  pages a(11, 0, 600);
  put_all(writer, a);
  // Replication is asynchronous: wait until every replica holds its master's keys (the slots of a
  // master without a replica, if any, are read from the master).
  auto dbsize = [&](std::size_t i) {
    const test::reply_ptr r = cluster.command(i, {"DBSIZE"});
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
  };
  auto master_port_of = [&](std::size_t i) {  // 0 for a master
    const std::string info = cluster.text(i, {"INFO", "replication"});
    const std::size_t at = info.find("master_port:");
    return info.find("role:slave") == std::string::npos || at == std::string::npos ? 0 : std::atoi(info.c_str() + at + 12);
  };
  auto replicated = [&] {  // keys of masters that have a replica, once every replica has them all; -1 before
    long long n = 0;
    std::set<int> counted;
    for (std::size_t i = 0; i < cluster.size(); ++i) {
      const int m = cluster.running(i) ? master_port_of(i) : 0;
      if (m == 0) continue;
      const long long want = dbsize(cluster.index_of(m));
      if (dbsize(i) != want) return -1LL;
      if (counted.insert(m).second) n += want;
    }
    return n;
  };
  long long on_replicas = -1;
  for (int i = 0; i < 200 && (on_replicas = replicated()) < 0; ++i) std::this_thread::sleep_for(50ms);
  BOOST_REQUIRE(on_replicas == 600);  // the harness gives every master a replica
  auto gets_served = [&](bool replicas) {  // GET calls the masters (or the replicas) have served
    long long n = 0;
    for (std::size_t i = 0; i < cluster.size(); ++i) {
      if (!cluster.running(i)) continue;
      const std::string info = cluster.text(i, {"INFO", "replication"}) + cluster.text(i, {"INFO", "commandstats"});
      if ((info.find("role:slave") != std::string::npos) != replicas) continue;
      const std::size_t at = info.find("cmdstat_get:calls=");
      if (at != std::string::npos) n += std::atoll(info.c_str() + at + 18);
    }
    return n;
  };

  redis_cluster_tier_config cfg = config(cluster);
  cfg.read_from_replicas = true;
  redis_cluster_tier<> reader(cfg);
  const test::ledger l = get_all(reader, a);
  BOOST_TEST(l.served == 600u);
  BOOST_TEST(l.wrong == 0u);
  BOOST_TEST(gets_served(true) == 600);  // every read on a replica
  BOOST_TEST(gets_served(false) == 0);   // none on a master
  storage_batch b;
  std::vector<page_address> where;
  for (const auto& w : a.writes) where.push_back(w.where);
  BOOST_REQUIRE(reader.contains(where, b).has_value());
  BOOST_REQUIRE(reader.wait(b, 10s).has_value());
  BOOST_TEST(b.count(errc::ok) == 600u);
  put_all(reader, a);  // writes still go to the masters (a replica would answer MOVED)
  BOOST_TEST(reader.cluster_stats().moved == 0u);

  // A replica killed: reads in flight on it fail, later ones go to its master; never a wrong page.
  const long long master_gets = gets_served(false);
  std::size_t victim = 0;
  while (master_port_of(victim) == 0) ++victim;
  cluster.kill(victim);
  test::ledger after = get_when_settled(reader, a, 10s);
  BOOST_TEST_MESSAGE("replica reads after a replica was killed: " << after.served << " served, " << after.missed << " missed");
  BOOST_TEST(after.served == 600u);
  BOOST_TEST(after.wrong == 0u);
  BOOST_TEST(gets_served(false) > master_gets);  // the killed replica's master took its reads
}
