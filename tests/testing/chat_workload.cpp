#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <map>

#include "kvtier/testing/chat_workload.hpp"

using namespace kvtier;
using namespace kvtier::testing;

BOOST_AUTO_TEST_CASE(histories_grow_and_share_system_prompts) {
  chat_workload_config cfg;
  cfg.sessions = 50;
  cfg.concurrent = 5;
  cfg.system_prompts = 2;
  cfg.namespaces = 2;
  chat_workload w(cfg);
  std::map<std::size_t, std::vector<token_id>> last;  // session → previous prompt + reply
  std::map<std::size_t, std::size_t> turns;
  std::size_t requests = 0;
  while (auto r = w.next()) {
    ++requests;
    BOOST_TEST_REQUIRE(r->prompt.size() > cfg.system_tokens);
    BOOST_TEST(r->name_space < cfg.namespaces);
    BOOST_TEST((r->reply.size() >= cfg.min_reply_tokens && r->reply.size() <= cfg.max_reply_tokens));
    if (auto it = last.find(r->session); it != last.end()) {
      BOOST_TEST_REQUIRE(r->prompt.size() > it->second.size());
      BOOST_TEST(std::equal(it->second.begin(), it->second.end(), r->prompt.begin()));  // growing history
      BOOST_TEST(r->turn == turns[r->session]);
    } else {
      BOOST_TEST(r->turn == 0u);
    }
    auto hist = r->prompt;
    hist.insert(hist.end(), r->reply.begin(), r->reply.end());
    last[r->session] = std::move(hist);
    ++turns[r->session];
  }
  BOOST_TEST(last.size() == cfg.sessions);
  for (auto& [s, n] : turns) BOOST_TEST((n >= cfg.min_turns && n <= cfg.max_turns));
  BOOST_TEST(requests >= cfg.sessions * cfg.min_turns);
  // At most namespaces × system_prompts distinct system prefixes.
  std::map<std::vector<token_id>, int> prefixes;
  for (auto& [s, h] : last) ++prefixes[std::vector<token_id>(h.begin(), h.begin() + cfg.system_tokens)];
  BOOST_TEST(prefixes.size() <= cfg.namespaces * cfg.system_prompts);
  BOOST_TEST(prefixes.size() >= 2u);
}

BOOST_AUTO_TEST_CASE(same_seed_same_workload) {
  chat_workload_config cfg;
  cfg.sessions = 10;
  chat_workload a(cfg), b(cfg);
  while (auto r = a.next()) {
    auto s = b.next();
    BOOST_TEST_REQUIRE(s.has_value());
    BOOST_TEST((r->prompt == s->prompt));
    BOOST_TEST((r->reply == s->reply));
  }
  BOOST_TEST(!b.next().has_value());
}

BOOST_AUTO_TEST_CASE(bad_configurations_throw) {
  chat_workload_config cfg;
  cfg.min_turns = 3;
  cfg.max_turns = 2;
  BOOST_CHECK_THROW(chat_workload{cfg}, config_error);
  cfg = {};
  cfg.sessions = 0;
  BOOST_CHECK_THROW(chat_workload{cfg}, config_error);
}
