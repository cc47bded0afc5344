// Unit test of detail::slot_files: slot placement, preallocation, the header scan used at restart,
// the layout check, the directory lock, and the write probe.
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <ostream>
#include <vector>

#include "kvtier/storage/detail/slot_files.hpp"
#include "kvtier/testing/temp_dir.hpp"

using namespace kvtier;

namespace kvtier {
std::ostream& operator<<(std::ostream& os, const error& e) { return os << e.message(); }
}  // namespace kvtier
using namespace kvtier::detail;

namespace {
slot_files_config config(const std::filesystem::path& dir, std::size_t slot_bytes = 8192) {
  return {dir, slot_bytes, /*slots=*/10, /*slots_per_file=*/4, /*use_direct=*/false};
}
std::string error_of(const slot_files_config& c) {
  try {
    slot_files f(c);
  } catch (const config_error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

BOOST_AUTO_TEST_CASE(placement_of_slots_in_files) {
  testing::temp_dir dir;
  slot_files f(config(dir.path));
  BOOST_TEST(f.files() == 3u);  // 4 + 4 + 2 slots
  BOOST_TEST(f.slots_in(2) == 2u);
  BOOST_TEST(f.file_of(5) == 1u);
  BOOST_TEST(f.offset_of(5) == 8192u);
  BOOST_TEST(f.path(1).filename() == "slots-00001.kvt");
}

BOOST_AUTO_TEST_CASE(allocate_preallocates_once_and_scan_finds_written_headers) {
  testing::temp_dir dir;
  const kv_shape shape = shapes::llama3_8b();
  const std::vector<std::byte> payload(100, std::byte{3});
  const page_header h = make_page_header(shape, {namespace_id{1}, page_key{5, 6}}, 0, 0, payload, 100, 9);
  {
    slot_files f(config(dir.path));
    BOOST_TEST(f.allocate(1) == error{});
    BOOST_TEST(std::filesystem::file_size(f.path(1)) == 4u * 8192u);
    BOOST_TEST(!std::filesystem::exists(f.path(0)));  // only what is used
    aligned_buffer block(direct_io_alignment);
    store_page_header(h, block.span());
    BOOST_REQUIRE(::pwrite(f.fd(1), block.data(), direct_io_alignment, off_t(f.offset_of(6))) == ssize_t(direct_io_alignment));
  }
  slot_files again(config(dir.path));
  std::vector<std::uint32_t> seen;
  again.scan([&](std::uint32_t s, const page_header& got) {
    seen.push_back(s);
    BOOST_TEST(got.sequence == 9u);
    BOOST_TEST(header_intact(got));
  });
  BOOST_TEST(seen == std::vector<std::uint32_t>{6}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(another_layout_is_refused) {
  testing::temp_dir dir;
  { slot_files f(config(dir.path, 8192)); }
  const std::string what = error_of(config(dir.path, 12288));
  BOOST_TEST(what.find("holds another layout") != std::string::npos, what);
  BOOST_TEST(error_of(config(dir.path, 8192)).empty());  // the refused opener let the directory go
}

BOOST_AUTO_TEST_CASE(the_directory_is_locked_while_open) {
  testing::temp_dir dir;
  {
    slot_files f(config(dir.path));
    const std::string what = error_of(config(dir.path));
    BOOST_TEST(what.find("in use by another file_tier") != std::string::npos, what);
  }
  BOOST_TEST(error_of(config(dir.path)).empty());  // released with the first
}

BOOST_AUTO_TEST_CASE(a_path_that_is_a_file_is_refused) {
  testing::temp_dir dir;
  const auto file = dir.path / "plain";
  { const int fd = ::open(file.c_str(), O_RDWR | O_CREAT, 0644); ::close(fd); }
  const std::string what = error_of(config(file));
  BOOST_TEST(what.find("cannot be created") != std::string::npos, what);
}

BOOST_AUTO_TEST_CASE(errno_values_map_to_error_codes) {
  BOOST_TEST((file_errno_error(ENOSPC).code == errc::capacity_exhausted));
  BOOST_TEST((file_errno_error(EFBIG).code == errc::capacity_exhausted));
  BOOST_TEST((file_errno_error(ETIMEDOUT).code == errc::timeout));
  BOOST_TEST((file_errno_error(EIO) == make_error(errc::io_error, EIO)));
}
