#pragma once
// stories260K (models/stories260K, karpathy/llama2.c tinyllamas) as the engine's tests load it
// (checkpoint, weights, tokenizer), the text llama2.c's run.c prints for it (the same as
// stories260k_reference.txt, which cli_reference.sh compares against), and run.c's run on an engine.
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "kvtier/core/strong_id.hpp"
#include "kvtier_engine/engine.hpp"
#include "kvtier_engine/model_files.hpp"
#include "kvtier_engine/tokenizer.hpp"
#include "kvtier_engine/weights.hpp"

namespace kvtier_test::engine {

inline const std::string reference =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, "
    "red ball. She wanted to play with it, but it was too high.\n"
    "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. She said, \"I want to play "
    "with your ball, but I can't find it.\"\n"
    "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"\n"
    "Lily didn't want to help her mom, so she said, \"I'm sorry, mom. I didn't know what to do.\" Her mom said, \"Don't "
    "worry, Lily. We can help you.";

struct stories {
  kvtier_engine::model_files files = kvtier_engine::model_files::in(KVTIER_ENGINE_MODELS_DIR "/stories260K");
  kvtier_engine::model_weights w = kvtier_engine::model_weights::load_llama2c(files.checkpoint.string(), files.name);
  kvtier_engine::tokenizer tok{files.tokenizer.string(), w.config().vocab};
};

// What run.c samples for a checkpoint (greedy, 256 steps from position 0: BOS, then 256 tokens;
// run.c -n 256), BOS left out: the tokens behind `reference`, on any backend and cache.
template <class Engine>
std::vector<kvtier::token_id> run_c_greedy_256(Engine& eng) {
  kvtier_engine::generate_options g;
  g.max_new_tokens = 256;
  g.sample.temperature = 0;
  const std::vector<kvtier::token_id> prompt{kvtier_engine::bos_token};
  const auto r = eng.generate(kvtier::namespace_id{1}, prompt, g);
  BOOST_TEST_REQUIRE(r.has_value());
  std::vector<kvtier::token_id> out;
  for (const auto t : r->tokens)
    if (t != kvtier_engine::bos_token) out.push_back(t);
  return out;
}

}  // namespace kvtier_test::engine
