#include <boost/test/unit_test.hpp>

#include <chrono>

#include "kvtier/storage.hpp"

using namespace kvtier;

namespace {
// Every member a backend needs, no opt-in: not a backend.
struct unannounced_backend {
  result<void> put(std::span<const page_write>, storage_batch&) noexcept { return {}; }
  result<void> get(std::span<const page_read>, storage_batch&) noexcept { return {}; }
  result<void> contains(std::span<const page_address>, storage_batch&) noexcept { return {}; }
  result<void> erase(std::span<const page_address>, storage_batch&) noexcept { return {}; }
  std::size_t poll() noexcept { return 0; }
  result<void> wait(storage_batch&, std::chrono::milliseconds) noexcept { return {}; }
  kv_shape shape() const noexcept { return shapes::llama3_8b(); }
  storage_usage usage() const noexcept { return {}; }
  storage_stats stats() const noexcept { return {}; }
};
struct announced_backend : unannounced_backend {
  using kvtier_storage_backend = storage_backend_tag;
};
// Opted in, but get may throw: errors must never unwind through the caller.
struct throwing_backend : announced_backend {
  result<void> get(std::span<const page_read>, storage_batch&) { return {}; }
};
// Opted in, but no way to wait for completions.
struct no_wait_backend {
  using kvtier_storage_backend = storage_backend_tag;
  result<void> put(std::span<const page_write>, storage_batch&) noexcept { return {}; }
  result<void> get(std::span<const page_read>, storage_batch&) noexcept { return {}; }
  result<void> contains(std::span<const page_address>, storage_batch&) noexcept { return {}; }
  result<void> erase(std::span<const page_address>, storage_batch&) noexcept { return {}; }
  std::size_t poll() noexcept { return 0; }
  kv_shape shape() const noexcept { return shapes::llama3_8b(); }
  storage_usage usage() const noexcept { return {}; }
  storage_stats stats() const noexcept { return {}; }
};
}  // namespace

static_assert(storage_backend<memory_tier<>>);
static_assert(storage_backend<announced_backend>);
static_assert(!storage_backend<unannounced_backend>);
static_assert(!storage_backend<throwing_backend>);
static_assert(!storage_backend<no_wait_backend>);
static_assert(!storage_backend<int>);
static_assert(storage_submit<unannounced_backend> && !enable_storage_backend<unannounced_backend>);

BOOST_AUTO_TEST_CASE(batch_lifecycle) {
  storage_batch b;
  BOOST_TEST(b.done());
  BOOST_TEST(b.begin(3));
  BOOST_TEST(!b.done());
  BOOST_TEST(!b.begin(1));  // still in flight
  b.complete(0, {});
  b.complete(2, make_error(errc::not_found));
  BOOST_TEST(b.pending() == 1u);
  b.complete(1, make_error(errc::corrupted));
  BOOST_TEST(b.done());
  BOOST_TEST(b.count(errc::ok) == 1u);
  BOOST_TEST(b.count(errc::not_found) == 1u);
  BOOST_TEST((b[1].code == errc::corrupted));
  BOOST_TEST(!b.all_ok());
  BOOST_TEST(b.begin(0));
  BOOST_TEST(b.all_ok());
}
