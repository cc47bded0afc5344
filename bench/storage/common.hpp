#pragma once
// Helpers of the storage benches: argument parsing, a shell runner, CSV and table output.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace kvtier::bench {

inline std::string arg(int argc, char** argv, std::string_view name, std::string fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (name == argv[i]) return argv[i + 1];
  return fallback;
}

inline std::vector<std::size_t> list(const std::string& s) {
  std::vector<std::size_t> out;
  for (std::size_t pos = 0; pos < s.size();) {
    std::size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    out.push_back(std::stoull(s.substr(pos, end - pos)));
    pos = end + 1;
  }
  return out;
}

// Runs a shell command and returns its standard output ("" if it could not run).
inline std::string run(const std::string& cmd) {
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ::pclose(p);
  }
  return out;
}

// The first number after `"key" : ` following `section` in fio's JSON output.
inline double json_number_after(const std::string& json, std::string_view section, std::string_view key) {
  std::size_t at = json.find(section);
  if (at == std::string::npos) return 0;
  at = json.find("\"" + std::string(key) + "\"", at);
  if (at == std::string::npos) return 0;
  at = json.find(':', at);
  return at == std::string::npos ? 0 : std::strtod(json.c_str() + at + 1, nullptr);
}

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

inline std::string filesystem_of(const std::string& dir) {
  std::string s = run("df -T '" + dir + "' | awk 'NR==2 {print $2\" on \"$1\" mounted at \"$7}'");
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace kvtier::bench
