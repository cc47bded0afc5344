// Unit test of detail::judge_reply and redis_reply_error: which reply each command may get, and
// what an error reply stands for. Every other combination is a protocol error.
#include <boost/test/unit_test.hpp>

#include <ostream>

#include "kvtier/storage/detail/redis_reply.hpp"

using namespace kvtier;
using namespace kvtier::detail;

namespace kvtier {
std::ostream& operator<<(std::ostream& os, const error& e) { return os << e.message(); }
}  // namespace kvtier

namespace {
resp_item item(resp_type t, std::string_view text = {}, std::int64_t v = 0) { return {t, text, v}; }
bool malformed(redis_command c, const resp_item& it) {
  const reply_verdict v = judge_reply(c, it);
  return v.what == reply_verdict::kind::malformed && v.status == make_error(errc::io_error, EPROTO);
}
error done(redis_command c, const resp_item& it) {
  const reply_verdict v = judge_reply(c, it);
  BOOST_REQUIRE(v.what == reply_verdict::kind::done);
  return v.status;
}
}  // namespace

BOOST_AUTO_TEST_CASE(expected_replies) {
  BOOST_TEST(done(redis_command::set, item(resp_type::simple, "OK")) == error{});
  BOOST_TEST(done(redis_command::get, item(resp_type::null)) == make_error(errc::not_found));
  BOOST_TEST((judge_reply(redis_command::get, item(resp_type::bulk, {}, 100)).what == reply_verdict::kind::value));
  BOOST_TEST(done(redis_command::exists, item(resp_type::integer, {}, 1)) == error{});
  BOOST_TEST(done(redis_command::exists, item(resp_type::integer, {}, 0)) == make_error(errc::not_found));
  BOOST_TEST(done(redis_command::del, item(resp_type::integer, {}, 1)) == error{});
  BOOST_TEST(done(redis_command::del, item(resp_type::integer, {}, 0)) == make_error(errc::not_found));
}

BOOST_AUTO_TEST_CASE(replies_of_the_wrong_type) {
  BOOST_TEST(malformed(redis_command::get, item(resp_type::integer, {}, 1)));  // was served as a hit
  BOOST_TEST(malformed(redis_command::get, item(resp_type::simple, "OK")));
  BOOST_TEST(malformed(redis_command::get, item(resp_type::array, {}, 1)));
  BOOST_TEST(malformed(redis_command::set, item(resp_type::integer, {}, 1)));
  BOOST_TEST(malformed(redis_command::set, item(resp_type::simple, "QUEUED")));
  BOOST_TEST(malformed(redis_command::set, item(resp_type::bulk, {}, 2)));
  BOOST_TEST(malformed(redis_command::set, item(resp_type::null)));
  BOOST_TEST(malformed(redis_command::exists, item(resp_type::integer, {}, -1)));
  BOOST_TEST(malformed(redis_command::exists, item(resp_type::bulk, {}, 1)));
  BOOST_TEST(malformed(redis_command::del, item(resp_type::simple, "OK")));
  BOOST_TEST(malformed(redis_command::del, item(resp_type::null)));
}

BOOST_AUTO_TEST_CASE(error_replies) {
  for (redis_command c : {redis_command::set, redis_command::get, redis_command::exists, redis_command::del}) {
    BOOST_TEST(done(c, item(resp_type::error, "ERR boom")) == make_error(errc::io_error));
    BOOST_TEST(done(c, item(resp_type::error, "NOAUTH Authentication required.")) == make_error(errc::connection_lost, EACCES));
  }
  BOOST_TEST(redis_reply_error("OOM command not allowed") == make_error(errc::capacity_exhausted));
  BOOST_TEST(redis_reply_error("WRONGPASS invalid username-password pair") == make_error(errc::connection_lost, EACCES));
  BOOST_TEST(redis_reply_error("NOPERM this user has no permissions") == make_error(errc::connection_lost, EACCES));
  BOOST_TEST(redis_reply_error("ERR Protocol error: unauthenticated bulk length") == make_error(errc::connection_lost, EACCES));
  BOOST_TEST(redis_reply_error("LOADING Redis is loading the dataset in memory") == make_error(errc::busy));
  BOOST_TEST(redis_reply_error("BUSY Redis is busy running a script") == make_error(errc::busy));
}
