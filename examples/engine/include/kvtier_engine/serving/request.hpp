#pragma once
// What a serving run is made of: the requests a workload submits (request_spec) and what the server
// records for each one it served (request_record). A request either arrives at a time, or is the
// next turn of a chat session: it arrives a think time after its parent turn finished, and its
// prompt is the parent's prompt, the parent's reply, then its own new tokens.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvtier/core/page_key.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"

namespace kvtier_engine::serving {

inline constexpr std::size_t no_parent = std::size_t(-1);

struct request_spec {
  std::size_t id = 0;                     // index in the workload
  double arrival_s = 0;                   // since the start of the run; a follow-up: think time after its parent finished
  kvtier::namespace_id ns{1};
  std::vector<kvtier::token_id> prompt;   // a follow-up: the tokens appended after the parent's prompt and reply
  std::size_t max_new_tokens = 16;        // tokens generated (the first one included); no early stop
  std::size_t parent = no_parent;         // the previous turn of the same session
  std::size_t session = 0, turn = 0;
  std::size_t doc = 0;                    // long-document QA: the document asked about
  bool warmup = false;                    // served, but left out of the summary (cli::add_warmup)
};

struct workload {
  std::string name;
  std::vector<request_spec> requests;
  std::size_t vocab = 0;                  // token ids are in [0, vocab)
};

// One served request. Times are seconds since the start of the run (wall clock).
struct request_record {
  std::size_t id = 0, session = 0, turn = 0;
  double arrival_s = 0, admitted_s = 0, first_token_s = 0, finish_s = 0;
  std::size_t prompt_tokens = 0, output_tokens = 0;
  std::size_t reused_tokens = 0;          // prompt tokens whose KV came from kvtier (not prefilled)
  std::size_t computed_tokens = 0;        // prompt tokens prefilled
  std::array<std::uint64_t, kvtier::tier_count> hit_tokens{};  // found at admission, by fastest tier
  std::size_t loaded_pages = 0;           // pages this request's load() queued host → device
  double load_wait_s = 0;                 // time its prefill waited for those layers
  std::size_t prefill_chunks = 0;
  bool warmup = false;                    // its request_spec's warmup: not in the summary
  std::vector<kvtier::token_id> output;   // the generated tokens

  double ttft_s() const noexcept { return first_token_s - arrival_s; }
  double tpot_s() const noexcept {
    return output_tokens > 1 ? (finish_s - first_token_s) / double(output_tokens - 1) : 0.0;
  }
};

}  // namespace kvtier_engine::serving
