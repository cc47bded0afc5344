// Exactness on the real Mooncake trace (when ../shared/traces exists next to the source tree):
// with unbounded capacity, a request hits the whole pages of its prompt already in the index
// before it is inserted. 16-token pages: 39,850,976 of 61,194,628 prompt tokens; 512: 39,802,880.
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <vector>

#include "common/mooncake_trace.hpp"
#include "kvtier/index.hpp"

using namespace kvtier;
using namespace kvtier::examples;

namespace {

const std::string trace_path = std::string(KVTIER_TRACE_DIR) + "/synthetic_trace.jsonl";

struct trace_present {
  boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
    boost::test_tools::assertion_result r(std::filesystem::exists(trace_path));
    r.message() << "SKIPPED: no trace at " << trace_path;
    return r;
  }
};

const std::vector<trace_request>& trace() {
  static const std::vector<trace_request> t = read_mooncake_trace(trace_path);
  return t;
}

template <std::size_t PageSize>
std::pair<std::uint64_t, std::uint64_t> replay_unbounded() {
  radix_index<lru, PageSize> idx;
  match_result m;
  std::vector<token_id> tokens;
  std::uint64_t hit = 0, total = 0;
  for (const trace_request& r : trace()) {
    expand_prompt(r, tokens);
    idx.match(namespace_id{0}, tokens, m);
    hit += m.size() * PageSize;
    total += tokens.size();
    (void)idx.insert(namespace_id{0}, tokens, on_device(device_slot{0}));
  }
  BOOST_TEST_MESSAGE(PageSize << "-token pages: " << hit << " of " << total << " tokens hit, " << idx.pages()
                              << " pages, " << double(idx.memory_bytes()) / double(idx.pages()) << " B/page");
  return {hit, total};
}

}  // namespace

BOOST_AUTO_TEST_CASE(trace_parses, *boost::unit_test::precondition(trace_present{})) {
  BOOST_TEST(trace().size() == 3993u);
}

BOOST_AUTO_TEST_CASE(unbounded_16_token_pages, *boost::unit_test::precondition(trace_present{})) {
  const auto [hit, total] = replay_unbounded<16>();
  BOOST_TEST(total == 61'194'628u);
  BOOST_TEST(hit == 39'850'976u);
}

BOOST_AUTO_TEST_CASE(unbounded_512_token_pages, *boost::unit_test::precondition(trace_present{})) {
  const auto [hit, total] = replay_unbounded<512>();
  BOOST_TEST(total == 61'194'628u);
  BOOST_TEST(hit == 39'802'880u);
}
