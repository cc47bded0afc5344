#pragma once
// model_files: a llama2.c model directory — one checkpoint (*.bin) and one tokenizer (tok*.bin or
// tokenizer.bin), e.g. models/stories260K/{stories260K.bin, tok512.bin}.
#include <filesystem>
#include <string>

#include "kvtier/core/error.hpp"

namespace kvtier_engine {

struct model_files {
  std::filesystem::path checkpoint, tokenizer;
  std::string name;  // the checkpoint's stem

  // Throws config_error when the directory does not hold exactly one of each.
  static model_files in(const std::filesystem::path& dir) {
    model_files f;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      if (!e.is_regular_file() || e.path().extension() != ".bin") continue;
      const std::string stem = e.path().stem().string();
      const bool is_tokenizer = stem.rfind("tok", 0) == 0;
      auto& slot = is_tokenizer ? f.tokenizer : f.checkpoint;
      if (!slot.empty()) throw kvtier::config_error("kvtier_engine: more than one " + std::string(is_tokenizer ? "tokenizer" : "checkpoint") + " in " + dir.string());
      slot = e.path();
    }
    if (ec) throw kvtier::config_error("kvtier_engine: cannot read model directory " + dir.string());
    if (f.checkpoint.empty() || f.tokenizer.empty())
      throw kvtier::config_error("kvtier_engine: " + dir.string() + " needs a checkpoint (*.bin) and a tokenizer (tok*.bin)");
    f.name = f.checkpoint.stem().string();
    return f;
  }
};

}  // namespace kvtier_engine
