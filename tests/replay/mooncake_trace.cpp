#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/mooncake_trace.hpp"

using namespace kvtier;
using namespace kvtier::examples;

BOOST_AUTO_TEST_CASE(parses_a_record_and_skips_unknown_fields) {
  trace_request r;
  const auto err = parse_mooncake_line(
      R"({"timestamp": 12.5, "input_length": 1000, "output_length": 7, "extra": {"a": [1, "x\"y", null, true]}, "hash_ids": [4, 5]})", r);
  BOOST_TEST(!err.has_value());
  BOOST_TEST(r.timestamp_ms == 12.5);
  BOOST_TEST(r.input_length == 1000u);
  BOOST_TEST(r.output_length == 7u);
  BOOST_TEST((r.hash_ids == std::vector<std::uint64_t>{4, 5}));
}

BOOST_AUTO_TEST_CASE(rejects_malformed_records) {
  trace_request r;
  for (const char* bad : {
           "", "[]", "{", R"({"input_length": 10})", R"({"hash_ids": [1]})",
           R"({"input_length": -3, "hash_ids": [1]})", R"({"input_length": 10, "hash_ids": [1,]})",
           R"({"input_length": 10, "hash_ids": [1]} x)", R"({"input_length": 10 "hash_ids": [1]})",
           R"({"input_length": 1.5, "hash_ids": [1]})", R"({"input_length": 600, "hash_ids": [1]})",
           R"({"input_length": 512, "hash_ids": [1, 2]})", R"({"input_length": 0, "hash_ids": []})",
           R"({"input_length": 10, "hash_ids": [1], "x": tru})", R"({"input_length": 10, "hash_ids": ["1"]})"}) {
    const auto err = parse_mooncake_line(bad, r);
    BOOST_TEST(err.has_value(), "accepted: " << bad);
  }
}

BOOST_AUTO_TEST_CASE(errors_name_the_line) {
  const auto path = std::filesystem::temp_directory_path() / "kvtier_bad_trace.jsonl";
  {
    std::ofstream out(path);
    out << R"({"input_length": 10, "hash_ids": [1]})" << "\n\n"
        << R"({"input_length": 10, "hash_ids": [1})" << "\n";
  }
  try {
    (void)read_mooncake_trace(path.string());
    BOOST_FAIL("a malformed trace was accepted");
  } catch (const trace_error& e) {
    BOOST_TEST(e.line() == 3u);
    BOOST_TEST(std::string(e.what()).find(":3: ") != std::string::npos);
  }
  std::filesystem::remove(path);
  BOOST_CHECK_THROW((void)read_mooncake_trace("/nonexistent/trace.jsonl"), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(expansion_shares_exactly_the_shared_blocks) {
  trace_request a{0, 1100, 1, {7, 8, 9}}, b{0, 1500, 1, {7, 8, 10}};
  std::vector<token_id> ta, tb;
  expand_prompt(a, ta);
  expand_prompt(b, tb);
  BOOST_TEST(ta.size() == 1100u);
  BOOST_TEST(tb.size() == 1500u);
  const auto diverge = std::mismatch(ta.begin(), ta.end(), tb.begin()).first - ta.begin();
  BOOST_TEST(diverge >= 1024);
  BOOST_TEST(diverge < 1030);  // block 9 and block 10 differ from their first tokens on
  std::vector<token_id> again;
  expand_prompt(a, again);
  BOOST_TEST((again == ta));
}
