#pragma once
// slot_files: the files of a file tier's directory. Fixed-size slots in preallocated files
// (slots-NNNNN.kvt), a layout file that refuses a directory laid out for another slot size, an
// exclusive lock (flock on kvtier-file-tier.lock) so that a second tier on the same directory, in
// this process or another, is refused rather than overwriting the first one's slots, and a write
// probe at open so that a read-only directory is refused at construction, not on every put.
// Slot layout: [4 KiB header block: page_header, zero padding][encoded payload, padded to 4 KiB].
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/storage/detail/aligned_buffer.hpp"
#include "kvtier/storage/page_header.hpp"

namespace kvtier::detail {

// The error value of a failed file operation.
inline error file_errno_error(int e) noexcept {
  if (e == ENOSPC || e == EDQUOT || e == EFBIG) return make_error(errc::capacity_exhausted, e);
  if (e == ETIME || e == ETIMEDOUT) return make_error(errc::timeout, e);
  if (e == ECANCELED) return make_error(errc::cancelled, e);
  return make_error(errc::io_error, e);
}

struct slot_files_config {
  std::filesystem::path directory;
  std::size_t slot_bytes = 0;      // a multiple of direct_io_alignment
  std::size_t slots = 0;           // in all files
  std::size_t slots_per_file = 0;
  bool use_direct = true;          // O_DIRECT where the filesystem takes it
};

class slot_files {
 public:
  // Throws config_error when the directory cannot be created or written, is locked by another
  // tier, or holds another layout.
  explicit slot_files(slot_files_config cfg) : cfg_(std::move(cfg)) {
    const auto& dir = cfg_.directory;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (!std::filesystem::is_directory(dir))
      throw config_error("kvtier: file_tier directory cannot be created: " + dir.string() + why(ec.value()));
    const auto lock = dir / "kvtier-file-tier.lock";
    lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd_ < 0) throw config_error("kvtier: file_tier directory is not writable: " + dir.string() + why(errno));
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      const int e = errno;
      ::close(lock_fd_);
      throw config_error("kvtier: file_tier directory " + dir.string() + " is in use by another file_tier (" +
                         lock.string() + " is locked" + why(e) + "); give each tier its own directory");
    }
    try {
      probe();
      check_layout();
      fds_.assign(files(), -1);
      allocated_.assign(files(), false);
    } catch (...) {  // no destructor runs: let the directory go
      ::close(lock_fd_);
      throw;
    }
  }
  slot_files(const slot_files&) = delete;
  slot_files& operator=(const slot_files&) = delete;
  ~slot_files() {
    for (int fd : fds_)
      if (fd >= 0) ::close(fd);
    ::close(lock_fd_);  // releases the lock
  }

  bool direct() const noexcept { return direct_; }
  std::size_t files() const noexcept { return (cfg_.slots + cfg_.slots_per_file - 1) / cfg_.slots_per_file; }
  std::size_t file_of(std::uint32_t slot) const noexcept { return slot / cfg_.slots_per_file; }
  std::size_t offset_of(std::uint32_t slot) const noexcept { return (slot % cfg_.slots_per_file) * cfg_.slot_bytes; }
  std::size_t slots_in(std::size_t f) const noexcept {
    return std::min(cfg_.slots_per_file, cfg_.slots - f * cfg_.slots_per_file);
  }
  std::filesystem::path path(std::size_t f) const {
    char name[32];
    std::snprintf(name, sizeof name, "slots-%05zu.kvt", f);
    return cfg_.directory / name;
  }

  // The descriptor of file f (opened on first use); -1 with errno set on failure.
  int fd(std::size_t f) noexcept {
    if (fds_[f] < 0) fds_[f] = ::open(path(f).c_str(), O_RDWR | O_CREAT | O_CLOEXEC | (direct_ ? O_DIRECT : 0), 0644);
    return fds_[f];
  }

  // Preallocates file f in full the first time one of its slots is used.
  error allocate(std::size_t f) noexcept {
    if (allocated_[f]) return {};
    const int d = fd(f);
    if (d < 0) return file_errno_error(errno);
    const off_t len = off_t(slots_in(f) * cfg_.slot_bytes);
    int rc = ::fallocate(d, 0, 0, len);
    if (rc != 0 && (errno == EOPNOTSUPP || errno == ENOSYS)) rc = ::posix_fallocate(d, 0, len) == 0 ? 0 : -1;
    if (rc != 0) return file_errno_error(errno);
    allocated_[f] = true;
    return {};
  }

  // Reads the header block of every slot of every existing file: visit(slot, header) for each
  // slot ever written (a never-written or erased one has an all-zero header).
  void scan(const std::function<void(std::uint32_t, const page_header&)>& visit) {
    aligned_buffer block(direct_io_alignment);
    for (std::size_t f = 0; f < files(); ++f) {
      struct stat st{};
      if (::stat(path(f).c_str(), &st) != 0) continue;
      const int d = fd(f);
      if (d < 0) continue;
      const std::size_t n = slots_in(f);
      allocated_[f] = std::size_t(st.st_size) >= n * cfg_.slot_bytes;
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t off = i * cfg_.slot_bytes;
        if (off + cfg_.slot_bytes > std::size_t(st.st_size)) break;
        if (::pread(d, block.data(), direct_io_alignment, off_t(off)) != ssize_t(direct_io_alignment)) break;
        const page_header h = load_page_header(block.span());
        if (h.magic == 0 && h.header_checksum == 0) continue;
        visit(std::uint32_t(f * cfg_.slots_per_file + i), h);
      }
    }
  }

 private:
  static std::string why(int e) { return e != 0 ? std::string(": ") + std::strerror(e) : std::string(); }

  // A file must be creatable here (a read-only directory or filesystem is refused now, with
  // EACCES or EROFS, not on every put); O_DIRECT is used where one aligned block goes through it.
  void probe() {
    const auto probe = cfg_.directory / ".kvtier-probe";
    aligned_buffer block(direct_io_alignment);
    direct_ = false;
    if (cfg_.use_direct) {
      const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_DIRECT, 0644);
      if (fd >= 0) {  // some filesystems accept the flag and refuse the aligned I/O: try one block
        direct_ = ::pwrite(fd, block.data(), direct_io_alignment, 0) == ssize_t(direct_io_alignment);
        ::close(fd);
      }
    }
    const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    const int e = errno;
    if (fd < 0 || ::pwrite(fd, block.data(), 512, 0) != 512) {
      const int we = fd < 0 ? e : errno;
      if (fd >= 0) ::close(fd);
      ::unlink(probe.c_str());
      throw config_error("kvtier: file_tier directory is not writable: " + cfg_.directory.string() + why(we));
    }
    ::close(fd);
    ::unlink(probe.c_str());
  }

  void check_layout() {
    const auto path = cfg_.directory / "kvtier-file-tier.layout";
    char line[160];
    std::snprintf(line, sizeof line, "kvtier file tier v%u slot_bytes %zu pages_per_file %zu", page_format_version,
                  cfg_.slot_bytes, cfg_.slots_per_file);
    std::string existing;
    if (std::ifstream in(path); in && std::getline(in, existing)) {
      if (existing != line)
        throw config_error("kvtier: file_tier directory " + cfg_.directory.string() + " holds another layout (" +
                           existing + "), this configuration needs (" + line + ")");
      return;
    }
    std::ofstream out(path, std::ios::trunc);
    out << line << "\n";
    if (!out.flush()) throw config_error("kvtier: file_tier cannot write " + path.string());
  }

  slot_files_config cfg_;
  int lock_fd_ = -1;
  bool direct_ = false;
  std::vector<int> fds_;
  std::vector<bool> allocated_;
};

}  // namespace kvtier::detail
