// Unit test of detail::resp_reader: every item type, byte-at-a-time feeding, bulk bodies copied,
// received directly and skipped, and every protocol violation and limit reported as malformed.
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/storage/detail/resp_reader.hpp"

using namespace kvtier::detail;

namespace kvtier::detail {
std::ostream& operator<<(std::ostream& os, resp_status s) { return os << int(s); }
}  // namespace kvtier::detail

namespace {
// Feeds all of s at once.
void feed(resp_reader& r, std::string_view s) {
  std::span<char> room = r.space();
  BOOST_REQUIRE(room.size() >= s.size());
  std::memcpy(room.data(), s.data(), s.size());
  r.filled(s.size());
}
resp_status next(resp_reader& r, resp_item& it) { return r.next(it); }
std::string body(resp_reader& r) {
  std::string out(r.bulk_left(), '\0');
  const std::size_t n = r.read_bulk(std::as_writable_bytes(std::span(out)));
  out.resize(n);
  return out;
}
}  // namespace

BOOST_AUTO_TEST_CASE(every_item_type) {
  resp_reader r;
  feed(r, "+OK\r\n-ERR wrong\r\n:42\r\n:-7\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$0\r\n\r\n*-1\r\n");
  resp_item it;
  BOOST_REQUIRE(next(r, it) == resp_status::item);
  BOOST_TEST((it.type == resp_type::simple && it.text == "OK"));
  BOOST_REQUIRE(next(r, it) == resp_status::item);
  BOOST_TEST((it.type == resp_type::error && it.text == "ERR wrong"));
  BOOST_REQUIRE(next(r, it) == resp_status::item);
  BOOST_TEST((it.type == resp_type::integer && it.value == 42));
  BOOST_REQUIRE(next(r, it) == resp_status::item);
  BOOST_TEST((it.type == resp_type::integer && it.value == -7));
  BOOST_REQUIRE(next(r, it) == resp_status::item);
  BOOST_TEST((it.type == resp_type::bulk && it.value == 5));
  BOOST_TEST(next(r, it) == resp_status::bulk_body);  // the body must be consumed first
  BOOST_TEST(body(r) == "hello");
  BOOST_REQUIRE(next(r, it) == resp_status::item);
  BOOST_TEST((it.type == resp_type::null));
  BOOST_REQUIRE(next(r, it) == resp_status::item);
  BOOST_TEST((it.type == resp_type::array && it.value == 2));
  BOOST_REQUIRE(next(r, it) == resp_status::item);
  BOOST_TEST((it.type == resp_type::bulk && it.value == 0));
  BOOST_REQUIRE(next(r, it) == resp_status::item);
  BOOST_TEST((it.type == resp_type::null));
  BOOST_TEST(next(r, it) == resp_status::need_more);
}

BOOST_AUTO_TEST_CASE(byte_at_a_time_is_the_same_as_all_at_once) {
  const std::string stream = "+PONG\r\n$11\r\nhello world\r\n:0\r\n";
  resp_reader r;
  std::vector<std::string> got;
  resp_item it;
  for (char c : stream) {
    feed(r, std::string_view(&c, 1));
    while (true) {
      const resp_status s = r.next(it);
      if (s == resp_status::need_more) break;
      BOOST_REQUIRE(s != resp_status::malformed);
      if (s == resp_status::bulk_body) {
        if (r.buffered() == 0) break;
        got.back() += body(r);
        continue;
      }
      got.push_back(it.type == resp_type::bulk ? std::string("$") : std::string(it.text) + std::to_string(it.value));
    }
  }
  BOOST_TEST(got.size() == 3u);
  BOOST_TEST(got[0] == "PONG0");
  BOOST_TEST(got[1] == "$hello world");
  BOOST_TEST(got[2] == "0");
}

BOOST_AUTO_TEST_CASE(bulk_received_directly_or_skipped) {
  resp_reader r;
  resp_item it;
  feed(r, "$8\r\nab");
  BOOST_REQUIRE(r.next(it) == resp_status::item);
  std::string dest(8, '.');
  BOOST_TEST(r.read_bulk(std::as_writable_bytes(std::span(dest))) == 2u);
  BOOST_TEST(r.buffered() == 0u);
  std::memcpy(dest.data() + 2, "cdefgh", 6);  // as if recv() wrote them straight into dest
  r.bulk_arrived(6);
  BOOST_TEST(r.bulk_left() == 0u);
  BOOST_TEST(dest == "abcdefgh");
  feed(r, "\r\n$4\r\nzzzz\r\n+OK\r\n");
  BOOST_REQUIRE(r.next(it) == resp_status::item);
  BOOST_TEST(it.value == 4);
  BOOST_TEST(r.skip_bulk() == 4u);
  BOOST_REQUIRE(r.next(it) == resp_status::item);
  BOOST_TEST(it.text == "OK");
}

BOOST_AUTO_TEST_CASE(finish_bulk_stops_at_the_end_of_the_bulk) {
  resp_reader r;
  resp_item it;
  feed(r, "$2\r\nab\r");
  BOOST_REQUIRE(r.next(it) == resp_status::item);
  BOOST_TEST(r.finish_bulk() == resp_status::bulk_body);
  BOOST_TEST(body(r) == "ab");
  BOOST_TEST(r.finish_bulk() == resp_status::need_more);
  feed(r, "\n:5\r\n");
  BOOST_TEST(r.finish_bulk() == resp_status::item);
  BOOST_TEST(r.buffered() == 4u);  // the next reply is untouched
  BOOST_TEST(r.finish_bulk() == resp_status::item);  // outside a bulk: nothing to do
  BOOST_REQUIRE(r.next(it) == resp_status::item);
  BOOST_TEST(it.value == 5);
  feed(r, "$1\r\nxYZ");
  BOOST_REQUIRE(r.next(it) == resp_status::item);
  BOOST_TEST(r.skip_bulk() == 1u);
  BOOST_TEST(r.finish_bulk() == resp_status::malformed);  // "YZ" is not the \r\n after a body
}

BOOST_AUTO_TEST_CASE(bulk_arrived_while_bytes_are_buffered_is_malformed) {
  resp_reader r;
  resp_item it;
  feed(r, "$4\r\nab");
  BOOST_REQUIRE(r.next(it) == resp_status::item);
  r.bulk_arrived(2);  // would reorder the stream
  BOOST_TEST(r.next(it) == resp_status::malformed);
}

BOOST_AUTO_TEST_CASE(protocol_violations_are_malformed) {
  for (std::string_view bad : {"?x\r\n", "\r\n", ":12a\r\n", ":\r\n", ":-\r\n", ": 1\r\n", "$-2\r\n", "*-5\r\n",
                               "$1x\r\n", ":99999999999999999999\r\n", ":9223372036854775808\r\n",
                               "$3\r\nabcXY", "$0\r\n\n\r"}) {
    resp_reader r;
    resp_item it;
    feed(r, bad);
    resp_status s = r.next(it);
    if (s == resp_status::item && it.type == resp_type::bulk) {
      r.skip_bulk();
      s = r.next(it);
    }
    BOOST_TEST((s == resp_status::malformed), "accepted: " << bad);
    BOOST_TEST(r.failed());
    BOOST_TEST((r.next(it) == resp_status::malformed));  // stays failed
    r.reset();
    feed(r, "+OK\r\n");
    BOOST_TEST((r.next(it) == resp_status::item));
  }
}

// A server announcing a 3 GB value must not make the client allocate or wait for it.
BOOST_AUTO_TEST_CASE(lengths_over_the_limits_are_malformed_at_once) {
  resp_limits lim;
  lim.max_bulk = 1 << 20;
  lim.max_array = 16;
  for (std::string_view bad : {"$3000000000\r\n", "$1048577\r\n", "*17\r\n", "$9223372036854775807\r\n"}) {
    resp_reader r(lim);
    resp_item it;
    feed(r, bad);
    BOOST_TEST((r.next(it) == resp_status::malformed), bad);
  }
  resp_reader r(lim);
  resp_item it;
  feed(r, "$1048576\r\n*16\r\n");
  BOOST_TEST((r.next(it) == resp_status::item && it.value == 1 << 20));
}

BOOST_AUTO_TEST_CASE(a_line_longer_than_the_buffer_is_malformed) {
  resp_limits lim;
  lim.buffer_bytes = 64;
  resp_reader r(lim);
  resp_item it;
  feed(r, "+" + std::string(62, 'a'));
  BOOST_TEST((r.next(it) == resp_status::need_more));
  BOOST_TEST(r.space().size() == 1u);
  feed(r, "b");
  BOOST_TEST((r.next(it) == resp_status::malformed));
}

BOOST_AUTO_TEST_CASE(space_compacts_after_consumed_lines) {
  resp_limits lim;
  lim.buffer_bytes = 64;
  resp_reader r(lim);
  resp_item it;
  for (int round = 0; round < 100; ++round) {  // far more bytes than the buffer holds
    feed(r, ":" + std::to_string(round) + "\r\n+partial");
    BOOST_REQUIRE((r.next(it) == resp_status::item));
    BOOST_TEST(it.value == round);
    BOOST_TEST((r.next(it) == resp_status::need_more));
    feed(r, "\r\n");
    BOOST_REQUIRE((r.next(it) == resp_status::item));
    BOOST_TEST(it.text == "partial");
  }
}
