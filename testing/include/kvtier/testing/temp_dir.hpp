#pragma once
// A temporary directory, removed with everything in it when the object dies.
#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace kvtier::testing {

struct temp_dir {
  explicit temp_dir(const std::filesystem::path& base = std::filesystem::temp_directory_path()) {
    std::string templ = (base / "kvtier-storage-XXXXXX").string();
    if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed in " + base.string());
    path = templ;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path path;
};

}  // namespace kvtier::testing
