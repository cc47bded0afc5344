#pragma once
// Mooncake-format request traces (one JSON object per line: timestamp, input_length,
// output_length, hash_ids) and their expansion into token ids. Each block id stands for 512
// deterministic pseudo-random tokens seeded by the id, so two requests share exactly the prefix
// their hash_ids share. A small strict parser: a malformed line is an error naming its line.
// Not part of the library: used by the replayer, the demo and their tests (kvtier::examples_common).
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/core/strong_id.hpp"
#include "kvtier/testing/splitmix64.hpp"

namespace kvtier::examples {

inline constexpr std::size_t mooncake_block_tokens = 512;

struct trace_request {
  double timestamp_ms = 0;
  std::uint64_t input_length = 0;   // prompt tokens
  std::uint64_t output_length = 0;  // generated tokens
  std::vector<std::uint64_t> hash_ids;  // one per 512-token block of the prompt
};

// A malformed trace: what() reads "FILE:LINE: message".
class trace_error : public std::runtime_error {
 public:
  trace_error(const std::string& where, std::size_t line, const std::string& message)
      : std::runtime_error(where + ":" + std::to_string(line) + ": " + message), line_(line) {}
  std::size_t line() const noexcept { return line_; }

 private:
  std::size_t line_;
};

namespace detail {

class json_line {
 public:
  explicit json_line(std::string_view s) : s_(s) {}

  // Parses one object into r; returns an error message, or nothing when the line is good.
  std::optional<std::string> parse(trace_request& r) {
    bool have_input = false, have_ids = false;
    r = trace_request{};
    skip_ws();
    if (!eat('{')) return fail("expected '{'");
    skip_ws();
    if (eat('}')) return fail("missing \"input_length\" and \"hash_ids\"");
    for (;;) {
      skip_ws();
      std::string_view key;
      if (!string(key)) return fail("expected a quoted key");
      skip_ws();
      if (!eat(':')) return fail("expected ':' after \"" + std::string(key) + "\"");
      skip_ws();
      if (key == "timestamp") {
        if (!number(r.timestamp_ms)) return fail("\"timestamp\" must be a number");
      } else if (key == "input_length") {
        if (!integer(r.input_length)) return fail("\"input_length\" must be a non-negative integer");
        have_input = true;
      } else if (key == "output_length") {
        if (!integer(r.output_length)) return fail("\"output_length\" must be a non-negative integer");
      } else if (key == "hash_ids") {
        if (!id_array(r.hash_ids)) return fail("\"hash_ids\" must be an array of non-negative integers");
        have_ids = true;
      } else if (!skip_value(0)) {
        return fail("bad value for \"" + std::string(key) + "\"");
      }
      skip_ws();
      if (eat(',')) continue;
      if (eat('}')) break;
      return fail("expected ',' or '}'");
    }
    skip_ws();
    if (i_ != s_.size()) return fail("trailing characters after the object");
    if (!have_input) return fail("missing \"input_length\"");
    if (!have_ids) return fail("missing \"hash_ids\"");
    const std::uint64_t blocks = r.hash_ids.size();
    if (r.input_length == 0 || blocks == 0) return fail("empty prompt");
    if (r.input_length > blocks * mooncake_block_tokens || r.input_length <= (blocks - 1) * mooncake_block_tokens)
      return fail("input_length " + std::to_string(r.input_length) + " does not fit " + std::to_string(blocks) +
                  " blocks of 512 tokens");
    return std::nullopt;
  }

 private:
  std::optional<std::string> fail(std::string m) const {
    return m + " (column " + std::to_string(i_ + 1) + ")";
  }
  void skip_ws() noexcept {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  bool eat(char c) noexcept {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool string(std::string_view& out) noexcept {
    if (!eat('"')) return false;
    const std::size_t start = i_;
    while (i_ < s_.size() && s_[i_] != '"') {
      if (s_[i_] == '\\') {
        if (++i_ >= s_.size()) return false;
      }
      ++i_;
    }
    if (i_ >= s_.size()) return false;
    out = s_.substr(start, i_ - start);
    ++i_;
    return true;
  }
  bool integer(std::uint64_t& v) noexcept {
    const char* b = s_.data() + i_;
    const char* e = s_.data() + s_.size();
    auto [p, ec] = std::from_chars(b, e, v);
    if (ec != std::errc{} || p == b) return false;
    if (p < e && (*p == '.' || *p == 'e' || *p == 'E')) return false;  // not an integer
    i_ += std::size_t(p - b);
    return true;
  }
  bool number(double& v) noexcept {
    const char* b = s_.data() + i_;
    const char* e = s_.data() + s_.size();
    auto [p, ec] = std::from_chars(b, e, v);
    if (ec != std::errc{} || p == b) return false;
    i_ += std::size_t(p - b);
    return true;
  }
  bool id_array(std::vector<std::uint64_t>& out) {
    if (!eat('[')) return false;
    skip_ws();
    if (eat(']')) return true;
    for (;;) {
      skip_ws();
      std::uint64_t v;
      if (!integer(v)) return false;
      out.push_back(v);
      skip_ws();
      if (eat(',')) continue;
      return eat(']');
    }
  }
  // Skips any JSON value (fields kvtier does not use); depth-limited.
  bool skip_value(int depth) noexcept {
    if (depth > 64 || i_ >= s_.size()) return false;
    const char c = s_[i_];
    if (c == '"') {
      std::string_view ignored;
      return string(ignored);
    }
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++i_;
      skip_ws();
      if (eat(close)) return true;
      for (;;) {
        skip_ws();
        if (c == '{') {
          std::string_view ignored;
          if (!string(ignored)) return false;
          skip_ws();
          if (!eat(':')) return false;
          skip_ws();
        }
        if (!skip_value(depth + 1)) return false;
        skip_ws();
        if (eat(',')) continue;
        return eat(close);
      }
    }
    for (std::string_view lit : {"true", "false", "null"})
      if (s_.substr(i_, lit.size()) == lit) {
        i_ += lit.size();
        return true;
      }
    double ignored;
    return number(ignored);
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

}  // namespace detail

// Parses one line; returns an error message (with the column) or nothing.
inline std::optional<std::string> parse_mooncake_line(std::string_view line, trace_request& out) {
  return detail::json_line(line).parse(out);
}

// Reads a whole trace. Blank lines are skipped; anything else malformed throws trace_error.
inline std::vector<trace_request> read_mooncake_trace(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("kvtier: cannot open trace " + path);
  std::vector<trace_request> out;
  std::string line;
  std::size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    trace_request r;
    if (auto err = parse_mooncake_line(line, r)) throw trace_error(path, n, *err);
    out.push_back(std::move(r));
  }
  if (in.bad()) throw std::runtime_error("kvtier: read error in trace " + path);
  return out;
}

// The 512 tokens of one block id: a splitmix64 stream seeded by the id, 31 bits per token.
inline void expand_block(std::uint64_t id, std::span<token_id> out) noexcept {
  std::uint64_t state = id * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
  for (token_id& t : out) {
    t = token_id{std::int32_t(testing::splitmix64(state) >> 33)};
    state += 0x9e3779b97f4a7c15ull;
  }
}

// A request's prompt: its blocks expanded and cut to input_length. Reuses `out`'s storage.
inline void expand_prompt(const trace_request& r, std::vector<token_id>& out) {
  out.resize(r.hash_ids.size() * mooncake_block_tokens);
  for (std::size_t b = 0; b < r.hash_ids.size(); ++b)
    expand_block(r.hash_ids[b], std::span<token_id>(out.data() + b * mooncake_block_tokens, mooncake_block_tokens));
  out.resize(r.input_length);
}

}  // namespace kvtier::examples
