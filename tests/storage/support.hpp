#pragma once
// Transitional: the storage test helpers live in the shared test-support tree now
// (testing/include/kvtier/testing/: test_pages.hpp, temp_dir.hpp, redis_server.hpp,
// fake_resp_server.hpp; namespace kvtier::testing). This header forwards the old names for the
// tests not moved yet; include the new headers instead.
#include "kvtier/testing/redis_server.hpp"
#include "kvtier/testing/temp_dir.hpp"
#include "kvtier/testing/test_pages.hpp"

namespace kvtier::test {
using namespace kvtier::testing;
}  // namespace kvtier::test
