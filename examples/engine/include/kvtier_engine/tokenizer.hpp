#pragma once
// The llama2.c tokenizer (sentencepiece-style BPE over a scored vocabulary): the file format of
// tokenizer.bin / tok512.bin (int32 max_token_length, then per token: float32 score, int32 length,
// bytes), encode as run.c does (optional BOS, a dummy-prefix space, UTF-8 code points with byte
// fallback <0xXX> = id byte + 3, then greedy merges of the best-scored pair), and decode of one
// piece (a leading space dropped after BOS, <0xXX> pieces as raw bytes).
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/core/strong_id.hpp"

namespace kvtier_engine {

inline constexpr kvtier::token_id bos_token{1};
inline constexpr kvtier::token_id eos_token{2};

class tokenizer {
 public:
  // Throws config_error for a missing or short file, or a vocabulary of another size.
  tokenizer(const std::string& path, std::size_t vocab) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) throw kvtier::config_error("kvtier_engine: cannot open tokenizer " + path);
    std::int32_t max_len = 0;
    if (std::fread(&max_len, sizeof max_len, 1, f.get()) != 1) throw kvtier::config_error("kvtier_engine: short tokenizer " + path);
    pieces_.resize(vocab);
    scores_.resize(vocab);
    for (std::size_t i = 0; i < vocab; ++i) {
      std::int32_t len = 0;
      if (std::fread(&scores_[i], sizeof(float), 1, f.get()) != 1 || std::fread(&len, sizeof len, 1, f.get()) != 1 || len < 0 ||
          len > (1 << 16))
        throw kvtier::config_error("kvtier_engine: short tokenizer " + path);
      pieces_[i].resize(std::size_t(len));
      if (len > 0 && std::fread(pieces_[i].data(), 1, std::size_t(len), f.get()) != std::size_t(len))
        throw kvtier::config_error("kvtier_engine: short tokenizer " + path);
      ids_.emplace(pieces_[i], std::int32_t(i));  // the first id of a duplicated piece wins, as bsearch would find one
    }
  }

  std::size_t vocab() const noexcept { return pieces_.size(); }
  std::string_view piece(kvtier::token_id t) const { return pieces_.at(std::size_t(t.value())); }

  // run.c's encode: BOS first when `bos`, EOS last when `eos`.
  std::vector<kvtier::token_id> encode(std::string_view text, bool bos = true, bool eos = false) const {
    std::vector<std::int32_t> t;
    if (bos) t.push_back(bos_token.value());
    if (!text.empty()) {
      if (const auto it = ids_.find(" "); it != ids_.end()) t.push_back(it->second);  // the dummy prefix
    }
    std::string cp;
    for (std::size_t i = 0; i < text.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(text[i]);
      if ((c & 0xC0) != 0x80) cp.clear();  // not a continuation byte: a new code point starts
      cp.push_back(char(c));
      const bool next_continues = i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80;
      if (next_continues && cp.size() < 4) continue;
      if (const auto it = ids_.find(cp); it != ids_.end()) {
        t.push_back(it->second);
      } else {
        for (const char b : cp) t.push_back(std::int32_t(static_cast<unsigned char>(b)) + 3);  // byte fallback
      }
      cp.clear();
    }
    // Merge the best-scored adjacent pair until none is in the vocabulary.
    for (;;) {
      float best = -1e10f;
      std::int32_t best_id = -1;
      std::size_t best_at = 0;
      for (std::size_t i = 0; i + 1 < t.size(); ++i) {
        const auto it = ids_.find(pieces_[std::size_t(t[i])] + pieces_[std::size_t(t[i + 1])]);
        if (it != ids_.end() && scores_[std::size_t(it->second)] > best) {
          best = scores_[std::size_t(it->second)];
          best_id = it->second;
          best_at = i;
        }
      }
      if (best_id < 0) break;
      t[best_at] = best_id;
      t.erase(t.begin() + std::ptrdiff_t(best_at) + 1);
    }
    if (eos) t.push_back(eos_token.value());
    std::vector<kvtier::token_id> out;
    out.reserve(t.size());
    for (const auto v : t) out.push_back(kvtier::token_id{v});
    return out;
  }

  // The text of `token` following `prev`, as run.c's decode + safe_printf print it.
  std::string decode(kvtier::token_id prev, kvtier::token_id token) const {
    std::string_view p = piece(token);
    if (prev == bos_token && !p.empty() && p[0] == ' ') p.remove_prefix(1);
    unsigned byte = 0;
    if (p.size() == 6 && std::sscanf(std::string(p).c_str(), "<0x%02X>", &byte) == 1) {
      const char c = char(byte);
      const bool printable = (byte >= 0x20 && byte < 0x7f) || c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
      return printable ? std::string(1, c) : std::string();
    }
    if (p.size() == 1) {  // safe_printf: single bytes that are not printable or whitespace are dropped
      const unsigned char c = static_cast<unsigned char>(p[0]);
      if (!((c >= 0x20 && c < 0x7f) || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f')) return {};
    }
    return std::string(p);
  }
  // The text of a sequence; its first token is taken to follow BOS when `after_bos`.
  std::string decode(std::span<const kvtier::token_id> tokens, kvtier::token_id prev = bos_token) const {
    std::string s;
    for (const auto t : tokens) {
      s += decode(prev, t);
      prev = t;
    }
    return s;
  }

 private:
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, std::int32_t> ids_;
};

}  // namespace kvtier_engine
