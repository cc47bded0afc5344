// Unit test of detail::uring_queue: vectored writes and reads come back with their tags and byte
// counts, errors as -errno, and the in-flight accounting the file tier relies on to never close a
// ring the kernel still writes into.
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <set>
#include <vector>

#include "kvtier/storage/detail/uring_queue.hpp"
#include "kvtier/testing/temp_dir.hpp"

using namespace kvtier::detail;
using namespace std::chrono_literals;

namespace {
struct ring_fixture {
  ring_fixture() {
    available = q.open(8);
    if (!available) BOOST_TEST_MESSAGE("io_uring refused here: the cases that need it pass vacuously");
    fd = ::open((dir.path / "f").c_str(), O_RDWR | O_CREAT, 0644);
    BOOST_REQUIRE(fd >= 0);
  }
  ~ring_fixture() { ::close(fd); }
  kvtier::testing::temp_dir dir;
  uring_queue q;
  bool available = false;
  int fd = -1;
};
}  // namespace

BOOST_FIXTURE_TEST_CASE(write_then_read_back_with_tags, ring_fixture) {
  if (!available) return;
  std::vector<char> a(4096, 'a'), b(4096, 'b');
  iovec w[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
  BOOST_REQUIRE(q.prepare(true, fd, w, 2, 0, 77));
  BOOST_TEST(q.unsubmitted() == 1u);
  BOOST_TEST(q.in_flight() == 0u);
  uring_completion c;
  BOOST_REQUIRE(q.submit_and_wait(c, 2s));
  BOOST_TEST(c.tag == 77u);
  BOOST_TEST(c.res == 8192);
  BOOST_TEST(q.idle());

  std::vector<char> x(4096), y(4096);
  iovec r1{x.data(), x.size()}, r2{y.data(), y.size()};
  BOOST_REQUIRE(q.prepare(false, fd, &r1, 1, 0, 1));
  BOOST_REQUIRE(q.prepare(false, fd, &r2, 1, 4096, 2));
  q.submit();
  BOOST_TEST(q.in_flight() == 2u);
  std::set<std::uint64_t> tags;
  while (tags.size() < 2) {
    BOOST_REQUIRE(q.wait(c));
    BOOST_TEST(c.res == 4096);
    tags.insert(c.tag);
  }
  BOOST_TEST((tags == std::set<std::uint64_t>{1, 2}));
  BOOST_TEST(x == a);
  BOOST_TEST(y == b);
  BOOST_TEST(q.idle());
  BOOST_TEST(!q.peek(c));  // nothing left
  BOOST_TEST(!q.wait(c));  // and wait() does not block with nothing in flight
}

BOOST_FIXTURE_TEST_CASE(errors_come_back_as_negative_errno, ring_fixture) {
  if (!available) return;
  char buf[16];
  iovec v{buf, sizeof buf};
  BOOST_REQUIRE(q.prepare(false, /*fd=*/-1, &v, 1, 0, 5));
  uring_completion c;
  BOOST_REQUIRE(q.submit_and_wait(c, 2s));
  BOOST_TEST(c.tag == 5u);
  BOOST_TEST(c.res == -EBADF);
}

BOOST_FIXTURE_TEST_CASE(waiting_with_nothing_to_do_times_out, ring_fixture) {
  if (!available) return;
  uring_completion c;
  const auto start = std::chrono::steady_clock::now();
  BOOST_TEST(!q.submit_and_wait(c, 20ms));
  BOOST_TEST((std::chrono::steady_clock::now() - start < 2s));
}

BOOST_FIXTURE_TEST_CASE(peek_collects_finished_io_without_blocking, ring_fixture) {
  if (!available) return;
  std::vector<char> a(512, 'z');
  iovec w{a.data(), a.size()};
  for (std::uint64_t i = 0; i < 8; ++i) BOOST_REQUIRE(q.prepare(true, fd, &w, 1, i * 512, i));
  q.submit();
  std::size_t seen = 0;
  uring_completion c;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (seen < 8 && std::chrono::steady_clock::now() < deadline)
    if (q.peek(c)) ++seen;
  BOOST_TEST(seen == 8u);
  BOOST_TEST(q.idle());
  q.close();
  BOOST_TEST(!q.active());
}
