// The look-ahead hook exists only when the policy models look_ahead_policy.
#include <vector>

#include "kvtier/index.hpp"

void hint(kvtier::radix_index<kvtier::look_ahead<kvtier::lru>, 16>& ok, kvtier::radix_index<kvtier::lru, 16>& plain,
          const std::vector<kvtier::token_id>& queued) {
  ok.expect(kvtier::namespace_id{1}, queued);
  (void)plain;
#ifdef KVTIER_COMPILE_FAIL
  plain.expect(kvtier::namespace_id{1}, queued);  // the misuse: lru has no look-ahead hook
#endif
}
