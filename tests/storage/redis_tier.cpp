// The Redis tier against a real redis-server on a free loopback port.
#include <boost/test/unit_test.hpp>

#include <hiredis/hiredis.h>
#include <sys/wait.h>

#include <vector>

#include "kvtier/storage/redis_tier.hpp"
#include "kvtier/testing/redis_server.hpp"
#include "kvtier/testing/test_pages.hpp"

using namespace kvtier;
using namespace std::chrono_literals;

namespace {
constexpr std::size_t page = 64 * 1024;

redis_tier_config config(int port, std::string prefix = "kvtier-test") {
  redis_tier_config c{.shape = shapes::llama3_8b(), .page_bytes = page};
  c.port = port;
  c.prefix = std::move(prefix);
  return c;
}

template <class Tier>
std::vector<error> put_pages(Tier& t, std::uint64_t ns, std::size_t first, std::size_t n) {
  testing::page_buffer buf(n, page);
  auto w = testing::page_writes(buf, ns, first, n);
  storage_batch b;
  BOOST_REQUIRE(t.put(w, b).has_value());
  BOOST_REQUIRE(t.wait(b, 10s).has_value());
  return {b.status().begin(), b.status().end()};
}

template <class Tier>
testing::ledger get_pages(Tier& t, std::uint64_t ns, std::size_t first, std::size_t n) {
  testing::page_buffer buf(n, page);
  auto r = testing::page_reads(buf, ns, first, n);
  storage_batch b;
  BOOST_REQUIRE(t.get(r, b).has_value());
  BOOST_REQUIRE(t.wait(b, 10s).has_value());
  testing::ledger l;
  for (std::size_t i = 0; i < n; ++i) l.check(b[i], buf[i], ns, first + i);
  return l;
}

std::size_t count_ok(const std::vector<error>& s) {
  return std::size_t(std::count_if(s.begin(), s.end(), [](const error& e) { return e.code == errc::ok; }));
}

// A plain hiredis connection for looking at the server behind the tier's back.
struct raw_client {
  explicit raw_client(int port) : c(redisConnect("127.0.0.1", port)) { BOOST_REQUIRE(c && !c->err); }
  ~raw_client() { redisFree(c); }
  redisReply* cmd(std::vector<std::string> args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return static_cast<redisReply*>(redisCommandArgv(c, int(args.size()), argv.data(), lens.data()));
  }
  redisContext* c;
};
}  // namespace

BOOST_AUTO_TEST_CASE(pipelined_round_trip_contains_erase) {
  testing::redis_server server;
  redis_tier<> t(config(server.port()));
  BOOST_TEST(count_ok(put_pages(t, 1, 0, 64)) == 64u);
  auto l = get_pages(t, 1, 0, 64);
  BOOST_TEST(l.served == 64u);
  BOOST_TEST(l.wrong == 0u);
  std::vector<page_address> a{testing::address_of(1, 0), testing::address_of(1, 1), testing::address_of(1, 500), testing::address_of(2, 0)};
  storage_batch b;
  BOOST_REQUIRE(t.contains(a, b).has_value());
  BOOST_REQUIRE(t.wait(b, 5s).has_value());
  BOOST_TEST((b[0].code == errc::ok));
  BOOST_TEST((b[2].code == errc::not_found));
  BOOST_TEST((b[3].code == errc::not_found));
  BOOST_REQUIRE(t.erase(std::span(a).first(3), b).has_value());
  BOOST_REQUIRE(t.wait(b, 5s).has_value());
  BOOST_TEST((b[0].code == errc::ok));
  BOOST_TEST((b[2].code == errc::not_found));
  auto after = get_pages(t, 1, 0, 4);
  BOOST_TEST(after.served == 2u);
  BOOST_TEST(t.stats().hits == 66u);
  // Keys are <prefix>:<namespace>:<key>.
  raw_client raw(server.port());
  auto* r = raw.cmd({"EXISTS", t.key_of(testing::address_of(1, 5))});
  BOOST_TEST(r->integer == 1);
  freeReplyObject(r);
  BOOST_TEST(t.key_of(testing::address_of(1, 5)).starts_with("kvtier-test:0000000000000001:"));
  // Completions can also be polled.
  testing::page_buffer buf(1, page);
  std::vector<page_read> one{{testing::address_of(1, 7), testing::tokens_of(1, 7), buf[0]}};
  BOOST_REQUIRE(t.get(one, b).has_value());
  for (int i = 0; i < 10'000 && !b.done(); ++i) {
    t.poll();
    std::this_thread::sleep_for(100us);
  }
  BOOST_TEST(b.all_ok());
}

BOOST_AUTO_TEST_CASE(two_processes_share_pages) {
  testing::redis_server server;
  const pid_t child = ::fork();
  BOOST_REQUIRE(child >= 0);
  if (child == 0) {  // another engine process writes namespace 5
    redis_tier<> t(config(server.port()));
    testing::page_buffer buf(16, page);
    auto w = testing::page_writes(buf, 5, 0, 16);
    storage_batch b;
    std::_Exit(t.put(w, b) && t.wait(b, 10s) && b.all_ok() ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  BOOST_REQUIRE(WIFEXITED(status));
  BOOST_REQUIRE(WEXITSTATUS(status) == 0);
  redis_tier<> mine(config(server.port()));
  auto l = get_pages(mine, 5, 0, 16);
  BOOST_TEST(l.served == 16u);
  BOOST_TEST(l.wrong == 0u);
  // Two tiers in one process see each other's writes too; another prefix does not.
  redis_tier<> other(config(server.port()));
  BOOST_TEST(count_ok(put_pages(other, 6, 0, 4)) == 4u);
  BOOST_TEST(get_pages(mine, 6, 0, 4).served == 4u);
  redis_tier<> elsewhere(config(server.port(), "another-prefix"));
  BOOST_TEST(get_pages(elsewhere, 6, 0, 4).served == 0u);
}

BOOST_AUTO_TEST_CASE(ttl_is_set) {
  testing::redis_server server;
  auto c = config(server.port());
  c.ttl = 100s;
  redis_tier<> t(c);
  BOOST_TEST(count_ok(put_pages(t, 1, 0, 2)) == 2u);
  raw_client raw(server.port());
  auto* r = raw.cmd({"TTL", t.key_of(testing::address_of(1, 0))});
  BOOST_TEST(r->integer > 90);
  BOOST_TEST(r->integer <= 100);
  freeReplyObject(r);
  redis_tier<> forever(config(server.port()));
  BOOST_TEST(count_ok(put_pages(forever, 1, 10, 1)) == 1u);
  r = raw.cmd({"TTL", t.key_of(testing::address_of(1, 10))});
  BOOST_TEST(r->integer == -1);  // no expiry
  freeReplyObject(r);
  // A short TTL really expires (bounded wait).
  c.ttl = 1s;
  redis_tier<> brief(c);
  BOOST_TEST(count_ok(put_pages(brief, 1, 20, 1)) == 1u);
  std::size_t served = 1;
  for (int i = 0; i < 40 && served != 0; ++i) {
    std::this_thread::sleep_for(100ms);
    served = get_pages(brief, 1, 20, 1).served;
  }
  BOOST_TEST(served == 0u);
}

BOOST_AUTO_TEST_CASE(auth_with_password_and_acl_user) {
  testing::redis_server server({"--requirepass", "s3cret", "--user", "engine", "on", ">wonder", "~kvtier-test:*", "+@all"});
  auto c = config(server.port());
  {
    redis_tier<> anonymous(c);  // no AUTH: every request fails cleanly
    const auto s = put_pages(anonymous, 1, 0, 2);
    BOOST_TEST_MESSAGE("anonymous: " << s[0].message() << ", " << s[1].message());
    BOOST_TEST(count_ok(s) == 0u);
    BOOST_TEST((s[0].code == errc::connection_lost));
    BOOST_TEST(s[0].sys_errno == EACCES);
  }
  c.password = "wrong";
  {
    redis_tier<> wrong(c);
    const auto s = put_pages(wrong, 1, 0, 2);
    BOOST_TEST((s[0].code == errc::connection_lost));
    BOOST_TEST(!wrong.connected());
  }
  c.password = "s3cret";
  redis_tier<> with_password(c);
  BOOST_TEST(count_ok(put_pages(with_password, 1, 0, 4)) == 4u);
  c.user = "engine";
  c.password = "wonder";
  redis_tier<> acl_user(c);
  auto l = get_pages(acl_user, 1, 0, 4);
  BOOST_TEST(l.served == 4u);
  BOOST_TEST(l.wrong == 0u);
  auto outside = config(server.port(), "other-app");  // the ACL allows kvtier-test:* only
  outside.user = "engine";
  outside.password = "wonder";
  redis_tier<> denied(outside);
  const auto s = put_pages(denied, 1, 0, 1);
  BOOST_TEST_MESSAGE("denied: " << s[0].message());
  BOOST_TEST((s[0].code == errc::connection_lost));
  BOOST_TEST(s[0].sys_errno == EACCES);
}

BOOST_AUTO_TEST_CASE(bad_configuration_throws) {
  auto c = config(6379);
  c.page_bytes = 0;
  BOOST_CHECK_THROW(redis_tier<>{c}, config_error);
  c = config(0);
  BOOST_CHECK_THROW(redis_tier<>{c}, config_error);
  c = config(6379, "");
  BOOST_CHECK_THROW(redis_tier<>{c}, config_error);
  c = config(6379);
  c.user = "u";
  BOOST_CHECK_THROW(redis_tier<>{c}, config_error);
  // An unreachable server is not a configuration error: requests fail with values.
  c = config(testing::free_loopback_port());
  redis_tier<> nobody(c);
  const auto s = put_pages(nobody, 1, 0, 3);
  for (const error& e : s) BOOST_TEST((e.code == errc::connection_lost));
}

BOOST_AUTO_TEST_CASE(late_poll_is_not_a_timeout) {
  // Replies waiting in the socket when the caller comes back late are served, not timed out.
  testing::redis_server server;
  auto c = config(server.port());
  c.io_timeout = std::chrono::milliseconds(200);
  redis_tier<> t(c);
  BOOST_TEST(count_ok(put_pages(t, 1, 0, 8)) == 8u);
  testing::page_buffer buf(8, page);
  auto r = testing::page_reads(buf, 1, 0, 8);
  storage_batch b;
  BOOST_REQUIRE(t.get(r, b).has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  BOOST_REQUIRE(t.wait(b, 5s).has_value());
  BOOST_TEST(b.all_ok());
  testing::ledger l;
  for (std::size_t i = 0; i < 8; ++i) l.check(b[i], buf[i], 1, i);
  BOOST_TEST(l.served == 8u);
}
