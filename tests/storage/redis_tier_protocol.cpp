// Protocol-level validation of the Redis tier against a fake server (a thread on a loopback socket)
// that answers with what no real Redis sends: replies of the wrong type, wrong and huge lengths,
// malformed and partial replies, errors, refusals. Every reply is checked against the command it
// answers before a byte of it is trusted: no wrong page is ever served, no length the server sends
// makes the client allocate or wait, and the tier keeps working once a real reply comes again.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <ostream>
#include <span>
#include <thread>
#include <string>
#include <vector>

#include "kvtier/storage/redis_tier.hpp"
#include "kvtier/testing/fake_resp_server.hpp"
#include "kvtier/testing/test_pages.hpp"

using namespace kvtier;
using namespace std::chrono_literals;
using kvtier::testing::fake_resp_server;
using reply = fake_resp_server::reply;
using argv_t = std::vector<std::string>;

namespace kvtier {
std::ostream& operator<<(std::ostream& os, const error& e) { return os << e.message(); }
}  // namespace kvtier

namespace {
constexpr std::size_t page = 16 * 1024;
const kv_shape shape = shapes::llama3_8b();

redis_tier_config config(int port) {
  redis_tier_config c{.shape = shape, .page_bytes = page};
  c.port = port;
  c.io_timeout = 1500ms;
  c.reconnect_min = 1ms;
  c.reconnect_max = 2ms;
  return c;
}

// n test pages, and a buffer poisoned before each read.
struct pages {
  explicit pages(std::size_t n) : buf(n, page) {
    writes = testing::page_writes(buf, 1, 0, n);
    reads = testing::page_reads(buf, 1, 0, n);
  }
  void poison() { std::memset(buf.raw.get(), 0xee, buf.pages * page); }
  testing::ledger check(const storage_batch& b) {
    testing::ledger l;
    for (std::size_t i = 0; i < reads.size(); ++i) l.check(b[i], buf[i], 1, i);
    return l;
  }
  testing::page_buffer buf;
  std::vector<page_write> writes;
  std::vector<page_read> reads;
};

// A tier on a fake server, and the batch its commands run in: each call submits one command and
// waits for its batch, so that a test reads only the answers.
struct fake_redis {
  explicit fake_redis(fake_resp_server::handler answer) : server(std::move(answer)), tier(config(server.port())) {}
  void put(std::span<const page_write> writes) { settle(tier.put(writes, batch)); }
  void get(std::span<const page_read> reads, std::chrono::seconds limit = 5s) { settle(tier.get(reads, batch), limit); }
  void contains(std::span<const page_address> where) { settle(tier.contains(where, batch)); }
  void erase(std::span<const page_address> where) { settle(tier.erase(where, batch)); }

  fake_resp_server server;
  redis_tier<> tier;
  storage_batch batch;

 private:
  void settle(const result<void>& submitted, std::chrono::seconds limit = 5s) {
    BOOST_REQUIRE(submitted.has_value());
    BOOST_REQUIRE(tier.wait(batch, limit).has_value());
  }
};

// A GET of n pages from a server whose GET answer is `answer`; returns the batch's statuses.
struct get_outcome {
  std::vector<error> status;
  testing::ledger ledger;
  std::chrono::milliseconds took;
  std::string last_error;
};
get_outcome get_with(const std::string& answer, std::size_t n = 3, bool close_after = false) {
  fake_redis r([&](const argv_t& a) -> std::optional<reply> {
    if (a[0] == "GET") return reply{answer, close_after};
    return std::nullopt;
  });
  pages p(n);
  p.poison();
  const auto start = std::chrono::steady_clock::now();
  r.get(p.reads, 10s);
  get_outcome o;
  o.took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  o.status.assign(r.batch.status().begin(), r.batch.status().end());
  o.ledger = p.check(r.batch);
  o.last_error = std::string(r.tier.last_error());
  BOOST_TEST(o.ledger.wrong == 0u);
  BOOST_TEST(o.ledger.served == 0u);
  return o;
}

bool all(const std::vector<error>& s, error e) {
  for (const error& x : s)
    if (x != e) return false;
  return !s.empty();
}
const error eproto = make_error(errc::io_error, EPROTO);
}  // namespace

// Was: an integer reply to GET counted as a hit, with no page bytes (3 of 3 buffers wrong).
BOOST_AUTO_TEST_CASE(integer_reply_to_get_is_a_protocol_error) {
  const get_outcome o = get_with(":1\r\n");
  BOOST_TEST(all(o.status, eproto));
  BOOST_TEST(o.last_error.find("wrong type") != std::string::npos);
}

// Was: the client allocated 3 GB for the announced value, then waited for it until its timeout.
BOOST_AUTO_TEST_CASE(huge_bulk_length_is_refused_at_once) {
  const get_outcome o = get_with("$3000000000\r\n");
  BOOST_TEST(all(o.status, eproto));
  BOOST_TEST(o.took.count() < 1000);  // well under io_timeout (1.5 s): refused on the header
}

BOOST_AUTO_TEST_CASE(replies_of_the_wrong_type_to_get) {
  for (const char* answer : {"+OK\r\n", "*1\r\n$1\r\nx\r\n", ":0\r\n", ":-1\r\n"}) {
    BOOST_TEST_CONTEXT(answer) { BOOST_TEST(all(get_with(answer).status, eproto)); }
  }
}

BOOST_AUTO_TEST_CASE(malformed_replies) {
  for (const char* answer : {"$12x\r\n", "$-7\r\n", "?what\r\n", "\r\n", "$5\r\nhelloXX"}) {
    BOOST_TEST_CONTEXT(answer) { BOOST_TEST(all(get_with(answer).status, eproto)); }
  }
}

// A value of a length no page of this tier has, or of the right length with the wrong bytes, is a
// miss (corrupted); the connection stays in step for the next reply.
BOOST_AUTO_TEST_CASE(wrong_lengths_are_misses) {
  const std::string short_value = "$10\r\n0123456789\r\n";
  const std::string right_length = "$" + std::to_string(page_header_bytes + page) + "\r\n" +
                                   std::string(page_header_bytes + page, 'x') + "\r\n";
  const std::string too_long = "$" + std::to_string(page_header_bytes + page + 100) + "\r\n" +
                               std::string(page_header_bytes + page + 100, 'y') + "\r\n";
  for (const std::string& answer : {short_value, right_length, too_long}) {
    BOOST_TEST_CONTEXT(answer.substr(0, 12)) {
      const get_outcome o = get_with(answer, 4);
      BOOST_TEST(all(o.status, make_error(errc::corrupted)));
      BOOST_TEST(o.ledger.corrupted == 4u);
    }
  }
}

BOOST_AUTO_TEST_CASE(partial_replies) {
  const std::string head = "$" + std::to_string(page_header_bytes + page) + "\r\n" + std::string(500, 'z');
  // The server closes in the middle of a value: connection lost, nothing served.
  get_outcome o = get_with(head, 2, /*close_after=*/true);
  BOOST_TEST(all(o.status, make_error(errc::connection_lost, ECONNRESET)));
  // The server stops in the middle of a value: a timeout after io_timeout, nothing served.
  o = get_with(head, 2);
  BOOST_TEST(all(o.status, make_error(errc::timeout, ETIMEDOUT)));
  BOOST_TEST(o.took.count() >= 1400);
  // A line cut short, then silence.
  o = get_with("$163", 1);
  BOOST_TEST(all(o.status, make_error(errc::timeout, ETIMEDOUT)));
}

BOOST_AUTO_TEST_CASE(error_replies_keep_the_servers_words) {
  get_outcome o = get_with("-ERR something broke\r\n", 2);
  BOOST_TEST(all(o.status, make_error(errc::io_error)));
  BOOST_TEST(o.last_error == "ERR something broke");
  BOOST_TEST(all(get_with("-OOM command not allowed\r\n", 1).status, make_error(errc::capacity_exhausted)));
  BOOST_TEST(all(get_with("-LOADING dataset\r\n", 1).status, make_error(errc::busy)));
}

// SET must be answered +OK, EXISTS and DEL an integer >= 0.
BOOST_AUTO_TEST_CASE(wrong_replies_to_set_exists_del) {
  for (const char* answer : {":1\r\n", "+QUEUED\r\n", "$2\r\nOK\r\n", "$-1\r\n"}) {
    fake_redis r([&](const argv_t& a) -> std::optional<reply> {
      if (a[0] == "SET") return reply{answer};
      return std::nullopt;
    });
    pages p(2);
    r.put(p.writes);
    BOOST_TEST_CONTEXT(answer) { BOOST_TEST(r.batch.count(errc::ok) == 0u); }
  }
  for (const char* answer : {"+OK\r\n", ":-1\r\n", "$1\r\n1\r\n", "$-1\r\n"}) {
    fake_redis r([&](const argv_t& a) -> std::optional<reply> {
      if (a[0] == "EXISTS" || a[0] == "DEL") return reply{answer};
      return std::nullopt;
    });
    const std::vector<page_address> where = {testing::address_of(1, 0)};
    r.contains(where);
    BOOST_TEST_CONTEXT(answer) { BOOST_TEST(r.batch[0] == eproto); }
    std::this_thread::sleep_for(5ms);  // past the reconnect backoff
    r.erase(where);
    BOOST_TEST_CONTEXT(answer) { BOOST_TEST(r.batch[0] == eproto); }
  }
}

// After a protocol error the tier reconnects and serves again once the server behaves.
BOOST_AUTO_TEST_CASE(recovers_after_a_protocol_error) {
  std::atomic<int> gets{0};
  std::vector<std::string> stored;
  fake_redis r([&](const argv_t& a) -> std::optional<reply> {
    if (a[0] == "SET") {
      stored.push_back(a[2]);
      return reply{"+OK\r\n"};
    }
    if (a[0] == "GET") {
      if (gets++ == 0) return reply{":1\r\n"};
      return reply{"$" + std::to_string(stored.at(0).size()) + "\r\n" + stored.at(0) + "\r\n"};
    }
    return std::nullopt;
  });
  pages p(1);
  r.put(p.writes);
  BOOST_REQUIRE(r.batch.all_ok());
  p.poison();
  r.get(p.reads);
  BOOST_TEST(r.batch[0] == eproto);
  std::this_thread::sleep_for(5ms);  // past the reconnect backoff
  r.get(p.reads);
  BOOST_TEST(r.batch.all_ok());
  BOOST_TEST(p.check(r.batch).served == 1u);
  BOOST_TEST(r.server.connections() == 2u);
}

// Was: a server requiring a password answered the first big SET by closing the connection: the
// client saw connection_lost/ECONNRESET and the server's NOAUTH reason was lost.
BOOST_AUTO_TEST_CASE(missing_password_reports_noauth) {
  fake_redis r([](const argv_t& a) -> std::optional<reply> {
    if (a[0] == "PING" || a[0] == "CONFIG" || a[0] == "GET") return reply{"-NOAUTH Authentication required.\r\n"};
    if (a[0] == "SET") return reply{"-ERR Protocol error: unauthenticated bulk length\r\n", true};
    return std::nullopt;
  });
  pages p(2);
  r.put(p.writes);
  BOOST_TEST(r.batch.count(make_error(errc::connection_lost, EACCES).code) == 2u);
  BOOST_TEST(r.batch[0].sys_errno == EACCES);
  BOOST_TEST(std::string(r.tier.last_error()).starts_with("NOAUTH"));
  BOOST_TEST(r.server.count("SET") == 0u);  // refused at the handshake: nothing was sent
}

// A value over the server's proto-max-bulk-len is reported as such before anything is sent.
BOOST_AUTO_TEST_CASE(value_over_proto_max_bulk_len) {
  fake_redis r([](const argv_t& a) -> std::optional<reply> {
    if (a[0] == "CONFIG") return reply{"*2\r\n$18\r\nproto-max-bulk-len\r\n$4\r\n1000\r\n"};
    if (a[0] == "EXISTS") return reply{":0\r\n"};
    return std::nullopt;
  });
  pages p(2);
  r.put(p.writes);
  BOOST_TEST(r.batch[0] == make_error(errc::invalid_argument, EMSGSIZE));
  BOOST_TEST(r.batch[1] == make_error(errc::invalid_argument, EMSGSIZE));
  BOOST_TEST(std::string(r.tier.last_error()).find("proto-max-bulk-len") != std::string::npos);
  BOOST_TEST(r.server.count("SET") == 0u);
  const std::vector<page_address> where = {testing::address_of(1, 0)};
  r.contains(where);  // the connection is still good
  BOOST_TEST(r.batch[0] == make_error(errc::not_found));
  BOOST_TEST(r.server.connections() == 1u);
}

// A peer that is not a Redis server (answers the handshake with a bulk) is refused at connect.
BOOST_AUTO_TEST_CASE(not_a_redis_server) {
  fake_redis r([](const argv_t& a) -> std::optional<reply> {
    if (a[0] == "PING") return reply{"$5\r\nhello\r\n"};
    return std::nullopt;
  });
  pages p(1);
  r.put(p.writes);
  BOOST_TEST(r.batch[0] == eproto);
}
