// Unit test of detail::resp_writer: exact RESP2 framing, and nothing written past the buffer.
#include <boost/test/unit_test.hpp>

#include <array>
#include <string>
#include <string_view>

#include "kvtier/storage/detail/resp_writer.hpp"

using kvtier::detail::resp_bulk_bytes;
using kvtier::detail::resp_writer;

BOOST_AUTO_TEST_CASE(frames_a_command) {
  std::array<char, 128> buf{};
  resp_writer w(buf);
  w.array(3).bulk("SET").bulk("kvtier:k").bulk_number(-42);
  BOOST_TEST(w.ok());
  BOOST_TEST(w.view() == "*3\r\n$3\r\nSET\r\n$8\r\nkvtier:k\r\n$3\r\n-42\r\n");
  BOOST_TEST(w.size() == w.view().size());
}

BOOST_AUTO_TEST_CASE(bulk_head_frames_a_value_sent_elsewhere) {
  std::array<char, 64> buf{};
  resp_writer w(buf);
  w.array(3).bulk("SET").bulk("k").bulk_head(131168);
  BOOST_TEST(w.view() == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$131168\r\n");
  w.clear();
  w.crlf().bulk("EX").bulk_number(60);
  BOOST_TEST(w.view() == "\r\n$2\r\nEX\r\n$2\r\n60\r\n");
}

BOOST_AUTO_TEST_CASE(empty_and_binary_arguments) {
  std::array<char, 64> buf{};
  resp_writer w(buf);
  w.bulk("").bulk(std::string_view("a\r\n\0b", 5));
  BOOST_TEST(w.ok());
  BOOST_TEST(w.view() == std::string_view("$0\r\n\r\n$5\r\na\r\n\0b\r\n", 17));
}

BOOST_AUTO_TEST_CASE(bulk_bytes_matches_what_is_written) {
  for (std::size_t n : {0u, 1u, 9u, 10u, 99u, 100u, 1000u}) {
    std::string arg(n, 'x');
    std::string buf(2048, '\0');
    resp_writer w(buf);
    w.bulk(arg);
    BOOST_TEST(w.ok());
    BOOST_TEST(w.size() == resp_bulk_bytes(n));
  }
}

// The old resp_arg took a capacity and ignored it: an argument longer than the buffer ran past it.
BOOST_AUTO_TEST_CASE(never_writes_past_the_buffer) {
  std::array<char, 48> guarded{};
  guarded.fill('#');
  const std::span<char> inner(guarded.data() + 8, 32);  // 8 guard bytes on each side
  resp_writer w(inner);
  w.array(2).bulk("GET");
  BOOST_TEST(w.ok());
  const std::size_t before = w.size();
  w.bulk(std::string(40, 'k'));  // does not fit: nothing of it is written
  BOOST_TEST(!w.ok());
  BOOST_TEST(w.size() == before);
  w.bulk("x");  // a failed writer stays failed
  BOOST_TEST(!w.ok());
  BOOST_TEST(w.size() == before);
  for (std::size_t i = 0; i < 8; ++i) {
    BOOST_TEST(guarded[i] == '#');
    BOOST_TEST(guarded[40 + i] == '#');
  }
  for (std::size_t i = before; i < inner.size(); ++i) BOOST_TEST(inner[i] == '#');
  w.clear();
  BOOST_TEST(w.ok());
  BOOST_TEST(w.size() == 0u);
}

BOOST_AUTO_TEST_CASE(exact_fit_and_one_byte_short) {
  const std::string cmd = "*1\r\n$4\r\nPING\r\n";
  std::string exact(cmd.size(), '\0');
  resp_writer a(exact);
  a.array(1).bulk("PING");
  BOOST_TEST(a.ok());
  BOOST_TEST(a.view() == cmd);
  std::string short_by_one(cmd.size() - 1, '\0');
  resp_writer b(short_by_one);
  b.array(1).bulk("PING");
  BOOST_TEST(!b.ok());
  BOOST_TEST(b.size() == 4u);  // "*1\r\n" only
}
