// Unit test of detail::io_ops (the file tier's I/O requests in flight: framing of a slot's
// vectored I/O, staging, outcomes) and detail::file_work (the backlog's look-ahead for sealing).
#include <boost/test/unit_test.hpp>

#include <deque>
#include <ostream>
#include <vector>

#include "kvtier/storage/detail/file_work.hpp"
#include "kvtier/storage/detail/io_ops.hpp"

using namespace kvtier;

namespace kvtier {
std::ostream& operator<<(std::ostream& os, const error& e) { return os << e.message(); }
}  // namespace kvtier
using namespace kvtier::detail;

BOOST_AUTO_TEST_CASE(ops_are_handed_out_and_returned) {
  io_ops<int> ops(3);
  std::vector<std::uint32_t> got;
  while (ops.available()) {
    const std::uint32_t next = ops.next();
    got.push_back(ops.acquire());
    BOOST_TEST(got.back() == next);
  }
  BOOST_TEST(got == (std::vector<std::uint32_t>{0, 1, 2}), boost::test_tools::per_element());
  ops.release(1);
  BOOST_TEST(ops.available());
  BOOST_TEST(ops.acquire() == 1u);
}

BOOST_AUTO_TEST_CASE(write_framing_pads_the_payload_and_carries_the_header) {
  io_ops<int> ops(1);
  auto& op = ops[0];
  const std::vector<std::byte> payload(5000, std::byte{9});
  const page_header h = make_page_header(shapes::llama3_8b(), {}, 0, 0, payload, 5000, 3);
  op.direct_payload = false;
  op.frame_write(h, payload);
  BOOST_TEST(op.iovcnt == 2);
  BOOST_TEST(op.iov[0].iov_len == direct_io_alignment);
  BOOST_TEST(op.iov[1].iov_len == 8192u);  // padded to the alignment
  BOOST_TEST(op.bytes == 4096u + 8192u);
  BOOST_TEST(load_page_header(op.header.span()).sequence == 3u);
  BOOST_TEST(op.outcome(int(op.bytes)) == error{});
  BOOST_TEST(op.outcome(100) == make_error(errc::io_error, EIO));  // short I/O
  BOOST_TEST(op.outcome(-ENOSPC) == make_error(errc::capacity_exhausted, ENOSPC));
}

BOOST_AUTO_TEST_CASE(read_and_clear_framing) {
  io_ops<int> ops(1);
  auto& op = ops[0];
  const std::span<std::byte> staging = op.stage(3 * 4096);
  BOOST_REQUIRE(staging.size() >= 3u * 4096u);
  BOOST_TEST(is_direct_aligned(staging.data(), 4096));
  op.frame_read(staging.data(), 2 * 4096);
  BOOST_TEST(op.bytes == 3u * 4096u);
  aligned_buffer zero(direct_io_alignment);
  op.frame_clear(zero);
  BOOST_TEST(op.iovcnt == 1);
  BOOST_TEST(op.bytes == direct_io_alignment);
  BOOST_TEST(op.stage(4096).data() == staging.data());  // a staging buffer large enough is kept
}

BOOST_AUTO_TEST_CASE(look_ahead_finds_the_next_unsealed_write_in_the_window) {
  storage_batch b;
  const std::vector<std::byte> page(64), wrong(32);
  std::vector<std::byte> out(64);
  std::deque<file_work> backlog;
  backlog.push_back(make_work(b, 0, page_read{{}, 0, out}));
  backlog.push_back(make_work(b, 1, page_write{{}, 0, wrong}));  // wrong size: never sealed ahead
  backlog.push_back(make_work(b, 2, page_write{{}, 0, page}));
  backlog.push_back(make_work(b, 3, page_address{}));
  BOOST_TEST((backlog[3].kind == work_kind::clear));
  BOOST_TEST(next_unsealed_write(backlog, 2, 64) == nullptr);  // outside a window of 2
  file_work* w = next_unsealed_write(backlog, 4, 64);
  BOOST_REQUIRE(w == &backlog[2]);
  w->sealed = true;
  BOOST_TEST(next_unsealed_write(backlog, 4, 64) == nullptr);
}
