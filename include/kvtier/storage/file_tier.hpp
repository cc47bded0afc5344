#pragma once
// kvtier: needs-uring
// file_tier: pages in fixed-size slots of large preallocated files on a local filesystem, O_DIRECT
// aligned I/O through io_uring with a configurable queue depth, LRU eviction when full, and
// restart recovery (a new process on the same directory finds the pages). Falls back to
// pread/pwrite where io_uring is refused and to buffered I/O where O_DIRECT is refused (tmpfs);
// io_path() says which path is active. Not thread-safe: one tier per thread, or a lock around it.
//
// Slot layout: [4 KiB header block: page_header, zero padding][encoded payload, padded to 4 KiB].
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvtier/codec/concepts.hpp"
#include "kvtier/codec/identity.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/storage/detail/aligned_buffer.hpp"
#include "kvtier/storage/detail/slot_lru.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/request.hpp"
#include "kvtier/storage/stats.hpp"

namespace kvtier {

// The I/O path a file tier runs on.
enum class file_io_path : std::uint8_t { uring_direct, uring_buffered, pread_direct, pread_buffered };

constexpr std::string_view to_string(file_io_path p) noexcept {
  switch (p) {
    case file_io_path::uring_direct: return "io_uring + O_DIRECT";
    case file_io_path::uring_buffered: return "io_uring, buffered";
    case file_io_path::pread_direct: return "pread/pwrite + O_DIRECT";
    case file_io_path::pread_buffered: return "pread/pwrite, buffered";
  }
  return "?";
}

struct file_tier_config {
  std::filesystem::path directory;   // created if missing; holds the slot files and a layout file
  kv_shape shape;                    // pages of another shape found at open are foreign, not served
  std::size_t page_bytes = 0;        // bytes of one page (decoded); > 0
  std::size_t capacity_pages = 0;    // slots in all files; > 0
  std::size_t pages_per_file = 256;  // slots per preallocated file
  unsigned queue_depth = 32;         // I/O requests in flight at most (1..4096)
  bool use_uring = true;             // false: pread/pwrite
  bool use_direct = true;            // false: through the page cache
};

template <page_codec Codec = identity_codec>
class file_tier {
 public:
  using kvtier_storage_backend = storage_backend_tag;
  using codec_type = Codec;

  // Throws config_error for a bad configuration or an unusable directory (including a directory
  // laid out for another page size). Scans existing slot files: their intact pages are recovered.
  explicit file_tier(file_tier_config cfg) : cfg_(std::move(cfg)) {
    if (cfg_.page_bytes == 0) throw config_error("kvtier: file_tier with page_bytes 0");
    if (cfg_.capacity_pages == 0 || cfg_.capacity_pages >= detail::slot_lru::none)
      throw config_error("kvtier: file_tier capacity_pages must be in [1, 2^32-1)");
    if (cfg_.pages_per_file == 0) throw config_error("kvtier: file_tier with pages_per_file 0");
    if (cfg_.queue_depth == 0 || cfg_.queue_depth > 4096)
      throw config_error("kvtier: file_tier queue_depth must be in [1, 4096]");
    max_payload_ = codec_.max_encoded_bytes(cfg_.page_bytes);
    slot_bytes_ = detail::direct_io_alignment + detail::align_up(max_payload_, detail::direct_io_alignment);
    files_ = (cfg_.capacity_pages + cfg_.pages_per_file - 1) / cfg_.pages_per_file;
    std::error_code ec;
    std::filesystem::create_directories(cfg_.directory, ec);
    if (!std::filesystem::is_directory(cfg_.directory))
      throw config_error("kvtier: file_tier directory cannot be created: " + cfg_.directory.string());
    check_layout_file();
    fds_.assign(files_, -1);
    allocated_.assign(files_, false);
    slots_.resize(cfg_.capacity_pages);
    lru_ = detail::slot_lru(cfg_.capacity_pages);
    zero_block_ = detail::aligned_buffer(detail::direct_io_alignment);
    ops_.resize(cfg_.queue_depth);
    for (auto& op : ops_) {
      op.header = detail::aligned_buffer(detail::direct_io_alignment);
      if (op.header.empty()) throw config_error("kvtier: file_tier cannot allocate I/O buffers");
    }
    for (std::uint32_t i = cfg_.queue_depth; i-- > 0;) free_ops_.push_back(i);
    deferred_reads_.reserve(cfg_.queue_depth);  // at most one per op: push_back never allocates
    choose_direct();
    // A plain ring: completions reach whichever thread waits (COOP_TASKRUN would tie them to the
    // submitting thread, and measured no faster here).
    if (cfg_.use_uring) uring_ = io_uring_queue_init(cfg_.queue_depth, &ring_, 0) == 0;
    recover();
  }

  file_tier(const file_tier&) = delete;
  file_tier& operator=(const file_tier&) = delete;

  ~file_tier() {
    // The kernel may still write into op buffers: let every request in flight finish first.
    if (uring_) flush();
    while (uring_ && in_flight_ > 0) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe(&ring_, &cqe) != 0) break;
      on_cqe(cqe);
    }
    settle_deferred_reads();
    for (auto& w : backlog_)
      if (w.batch != nullptr) w.batch->complete(w.index, make_error(errc::cancelled));
    if (uring_) io_uring_queue_exit(&ring_);
    for (int fd : fds_)
      if (fd >= 0) ::close(fd);
  }

  result<void> put(std::span<const page_write> writes, storage_batch& batch) noexcept {
    return submit(writes, batch, work_kind::write);
  }
  result<void> get(std::span<const page_read> reads, storage_batch& batch) noexcept {
    return submit(reads, batch, work_kind::read);
  }
  result<void> contains(std::span<const page_address> where, storage_batch& batch) noexcept {
    if (!batch.begin(where.size())) return make_error(errc::busy);
    for (std::size_t i = 0; i < where.size(); ++i)
      batch.complete(i, index_.count(where[i]) ? error{} : make_error(errc::not_found));
    return {};
  }
  result<void> erase(std::span<const page_address> where, storage_batch& batch) noexcept {
    return submit(where, batch, work_kind::clear);
  }

  std::size_t poll() noexcept {
    const std::size_t n = reap();
    return n + pump(/*submit_now=*/true);
  }

  result<void> wait(storage_batch& batch, std::chrono::milliseconds timeout) noexcept {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      reap();
      pump(/*submit_now=*/false);  // queued here, submitted below together with the wait
      if (batch.done()) {
        flush();
        return {};
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline || !uring_ || (in_flight_ == 0 && unsubmitted_ == 0)) {
        flush();
        return make_error(errc::timeout);
      }
      if (unsubmitted_ > 0 && has_unsealed_write()) {  // start the disk first, then checksum ahead
        flush();
        seal_ahead();
      }
      const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now).count();
      __kernel_timespec ts{left / 1'000'000'000, left % 1'000'000'000};
      io_uring_cqe* cqe = nullptr;
      in_flight_ += unsubmitted_;
      unsubmitted_ = 0;
      if (io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr) >= 0 && cqe != nullptr) on_cqe(cqe);
    }
  }

  kv_shape shape() const noexcept { return cfg_.shape; }
  std::size_t page_bytes() const noexcept { return cfg_.page_bytes; }
  std::size_t slot_bytes() const noexcept { return slot_bytes_; }
  file_io_path io_path() const noexcept {
    if (uring_) return direct_ ? file_io_path::uring_direct : file_io_path::uring_buffered;
    return direct_ ? file_io_path::pread_direct : file_io_path::pread_buffered;
  }
  storage_usage usage() const noexcept {
    const std::size_t slots = cfg_.capacity_pages - lost_slots_;  // less any file the filesystem refused
    return {index_.size(), slots, index_.size() * slot_bytes_, slots * slot_bytes_};
  }
  storage_stats stats() const noexcept { return stats_; }
  const file_tier_config& config() const noexcept { return cfg_; }
  // Where slot file f lives (tests corrupt pages in place through it).
  std::filesystem::path slot_file(std::size_t f) const {
    char name[32];
    std::snprintf(name, sizeof name, "slots-%05zu.kvt", f);
    return cfg_.directory / name;
  }
  // The slot (file, byte offset) holding a page, if any.
  std::optional<std::pair<std::size_t, std::size_t>> locate(const page_address& where) const noexcept {
    auto it = index_.find(where);
    if (it == index_.end()) return std::nullopt;
    return std::pair{std::size_t(it->second / cfg_.pages_per_file), slot_offset(it->second)};
  }

 private:
  enum class work_kind : std::uint8_t { write, read, clear };
  enum class slot_state : std::uint8_t { free, writing, valid, clearing };

  struct slot_meta {
    page_address where;
    std::uint64_t sequence = 0;
    std::uint32_t pins = 0;   // reads in flight
    slot_state state = slot_state::free;
    bool retired = false;     // leaves the index; freed when the last read ends
  };
  struct work {  // a request waiting for an I/O slot
    work_kind kind;
    storage_batch* batch;
    std::size_t index;
    page_address where;
    std::uint64_t tokens_fp;
    std::span<const std::byte> in;  // write payload
    std::span<std::byte> out;       // read destination
    bool sealed = false;            // header below already computed (while earlier I/O was in flight)
    page_header header{};
  };
  struct io_op {
    work job{};
    std::uint32_t slot = 0;
    detail::aligned_buffer header;   // the 4 KiB header block
    detail::aligned_buffer staging;  // whole payload when the caller's buffer cannot be used directly
    iovec iov[2]{};
    int iovcnt = 0;
    std::size_t bytes = 0;           // bytes the I/O must move
    std::size_t payload_in_staging = 0;
    bool direct_payload = false;     // payload moved straight from/to the caller's buffer
  };

  std::size_t slot_offset(std::uint32_t s) const noexcept { return (s % cfg_.pages_per_file) * slot_bytes_; }
  std::size_t file_length(std::size_t f) const noexcept {
    const std::size_t first = f * cfg_.pages_per_file;
    return std::min(cfg_.pages_per_file, cfg_.capacity_pages - first) * slot_bytes_;
  }

  static error errno_error(int e) noexcept {
    if (e == ENOSPC || e == EDQUOT || e == EFBIG) return make_error(errc::capacity_exhausted, e);
    if (e == ETIME || e == ETIMEDOUT) return make_error(errc::timeout, e);
    if (e == ECANCELED) return make_error(errc::cancelled, e);
    return make_error(errc::io_error, e);
  }

  // ---- setup -----------------------------------------------------------------------------------
  void check_layout_file() {
    const auto path = cfg_.directory / "kvtier-file-tier.layout";
    char line[160];
    std::snprintf(line, sizeof line, "kvtier file tier v%u slot_bytes %zu pages_per_file %zu",
                  page_format_version, slot_bytes_, cfg_.pages_per_file);
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

  int open_flags() const noexcept { return O_RDWR | O_CREAT | O_CLOEXEC | (direct_ ? O_DIRECT : 0); }

  // O_DIRECT is refused by some filesystems (tmpfs before 6.6, some FUSE): probe once.
  void choose_direct() {
    direct_ = false;
    if (!cfg_.use_direct) return;
    const auto probe = cfg_.directory / ".kvtier-direct-probe";
    const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_DIRECT, 0644);
    if (fd < 0) {
      ::unlink(probe.c_str());
      return;
    }
    // Some filesystems accept the flag and refuse the aligned I/O: try one block.
    const ssize_t n = ::pwrite(fd, zero_block_.data(), detail::direct_io_alignment, 0);
    direct_ = n == ssize_t(detail::direct_io_alignment);
    ::close(fd);
    ::unlink(probe.c_str());
  }

  int fd_of(std::size_t f) noexcept {
    if (fds_[f] < 0) fds_[f] = ::open(slot_file(f).c_str(), open_flags(), 0644);
    return fds_[f];
  }

  // Preallocates slot file f in full the first time one of its slots is used.
  error allocate_file(std::size_t f) noexcept {
    if (allocated_[f]) return {};
    const int fd = fd_of(f);
    if (fd < 0) return errno_error(errno);
    const off_t len = off_t(file_length(f));
    int rc = ::fallocate(fd, 0, 0, len);
    if (rc != 0 && (errno == EOPNOTSUPP || errno == ENOSYS)) rc = ::posix_fallocate(fd, 0, len) == 0 ? 0 : -1;
    if (rc != 0) {
      const int e = errno;
      return errno_error(e);
    }
    allocated_[f] = true;
    return {};
  }

  // Scans the header block of every slot of every existing file: intact pages of this shape and
  // codec are indexed (newest copy wins), foreign and damaged ones counted, their slots freed.
  void recover() {
    detail::aligned_buffer block(detail::direct_io_alignment);
    struct found {
      std::uint64_t sequence;
      std::uint32_t slot;
    };
    std::vector<found> pages;
    const std::uint64_t fp = cfg_.shape.fingerprint();
    for (std::size_t f = 0; f < files_; ++f) {
      struct stat st{};
      if (::stat(slot_file(f).c_str(), &st) != 0) continue;
      const int fd = fd_of(f);
      if (fd < 0) continue;
      allocated_[f] = std::size_t(st.st_size) >= file_length(f);
      const std::size_t first = f * cfg_.pages_per_file;
      const std::size_t slots_here = std::min(cfg_.pages_per_file, cfg_.capacity_pages - first);
      for (std::size_t i = 0; i < slots_here; ++i) {
        const std::size_t off = i * slot_bytes_;
        if (off + slot_bytes_ > std::size_t(st.st_size)) break;
        if (::pread(fd, block.data(), detail::direct_io_alignment, off_t(off)) != ssize_t(detail::direct_io_alignment))
          break;
        const page_header h = load_page_header(block.span());
        if (h.magic == 0 && h.header_checksum == 0) continue;  // never written, or erased
        if (!header_intact(h) || h.payload_bytes > max_payload_) {
          ++stats_.corrupted;
          continue;
        }
        if (h.shape_fingerprint != fp || h.codec_id != Codec::id || h.page_bytes != cfg_.page_bytes) {
          ++stats_.foreign;
          continue;
        }
        const auto s = std::uint32_t(first + i);
        slots_[s].where = h.address();
        slots_[s].sequence = h.sequence;
        pages.push_back({h.sequence, s});
        sequence_ = std::max(sequence_, h.sequence);
      }
    }
    std::sort(pages.begin(), pages.end(), [](const found& a, const found& b) { return a.sequence < b.sequence; });
    for (const found& p : pages) {  // oldest first, so the newest ends at the LRU front
      slot_meta& m = slots_[p.slot];
      if (auto it = index_.find(m.where); it != index_.end()) {
        lru_.remove(it->second);
        slots_[it->second] = slot_meta{};
        it->second = p.slot;
      } else {
        index_.emplace(m.where, p.slot);
      }
      m.state = slot_state::valid;
      lru_.push_front(p.slot);
    }
    stats_.recovered = index_.size();
    // Free slots are handed out lowest first, so files fill (and get preallocated) in order.
    for (std::uint32_t s = std::uint32_t(cfg_.capacity_pages); s-- > 0;)
      if (slots_[s].state == slot_state::free) free_slots_.push_back(s);
  }

  // ---- submission ------------------------------------------------------------------------------
  template <class Request>
  result<void> submit(std::span<const Request> requests, storage_batch& batch, work_kind kind) noexcept {
    if (!batch.begin(requests.size())) return make_error(errc::busy);
    try {
      for (std::size_t i = 0; i < requests.size(); ++i) {
        const Request& r = requests[i];
        if constexpr (std::is_same_v<Request, page_write>) {
          backlog_.push_back({kind, &batch, i, r.where, r.tokens_fingerprint, r.payload, {}});
        } else if constexpr (std::is_same_v<Request, page_read>) {
          backlog_.push_back({kind, &batch, i, r.where, r.tokens_fingerprint, {}, r.payload});
        } else {
          backlog_.push_back({kind, &batch, i, r, 0, {}, {}});
        }
      }
    } catch (...) {  // out of memory: the queued part proceeds, the rest fails
      for (std::size_t i = 0; i < requests.size(); ++i)
        if (std::none_of(backlog_.begin(), backlog_.end(), [&](const work& w) { return w.batch == &batch && w.index == i; }))
          batch.complete(i, make_error(errc::capacity_exhausted, ENOMEM));
    }
    pump(/*submit_now=*/true);
    return {};
  }

  // Starts queued requests while I/O slots are free; returns requests completed without I/O.
  // Starts queued requests while I/O slots are free; returns requests completed without I/O.
  // submit_now: hand the new I/O to the kernel now (else wait() does, together with its wait).
  std::size_t pump(bool submit_now) noexcept {
    std::size_t done = 0;
    bool queued = false;
    while (!backlog_.empty() && !free_ops_.empty()) {
      const work w = backlog_.front();
      backlog_.pop_front();
      const std::optional<error> immediate = start(w, queued);
      if (immediate) {
        finish(w, *immediate);
        ++done;
      }
    }
    if (submit_now && unsubmitted_ > 0) {
      flush();
      seal_ahead();
    }
    return done;
  }

  // Hands queued submissions to the kernel.
  void flush() noexcept {
    if (unsubmitted_ == 0) return;
    io_uring_submit(&ring_);
    in_flight_ += unsubmitted_;
    unsubmitted_ = 0;
  }

  // Completes every I/O the kernel has finished: frees the ops, starts queued I/O, then verifies
  // the pages read (the CPU work overlaps the disk's).
  std::size_t reap() noexcept {
    std::size_t n = 0;
    if (!uring_) return n;
    io_uring_cqe* cqe = nullptr;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0) n += on_cqe(cqe);
    if (!deferred_reads_.empty()) {
      n += pump(/*submit_now=*/true);
      settle_deferred_reads();
    }
    return n;
  }

  bool has_unsealed_write() const noexcept {
    if constexpr (is_identity_codec_v<Codec>) {
      std::size_t n = 0;
      for (const work& w : backlog_) {
        if (n++ >= cfg_.queue_depth) break;
        if (w.kind == work_kind::write && !w.sealed) return true;
      }
    }
    return false;
  }

  // Checksums the next queued writes while the disk works, so that starting them later costs no
  // CPU on the I/O path (identity codec, whose encoded bytes are the caller's page).
  void seal_ahead() noexcept {
    if constexpr (is_identity_codec_v<Codec>) {
      std::size_t n = 0;
      for (work& w : backlog_) {
        if (n++ >= cfg_.queue_depth) break;
        if (w.kind != work_kind::write || w.sealed || w.in.size() != cfg_.page_bytes) continue;
        w.header = make_page_header(cfg_.shape, w.where, w.tokens_fp, Codec::id, w.in, cfg_.page_bytes, ++sequence_);
        w.sealed = true;
        break;  // one page per submission keeps the CPU work in step with the I/O
      }
    }
  }

  void finish(const work& w, error e) noexcept {
    if (e.code != errc::ok && e.code != errc::not_found && e.code != errc::corrupted) ++stats_.errors;
    if (w.batch != nullptr) w.batch->complete(w.index, e);  // internal work has no batch
  }

  // Takes a free slot, evicting the least recently used idle page when none is free.
  std::optional<std::uint32_t> take_slot() noexcept {
    if (!free_slots_.empty()) {
      const std::uint32_t s = free_slots_.back();
      free_slots_.pop_back();
      return s;
    }
    for (std::uint32_t s = lru_.back(); s != detail::slot_lru::none; s = lru_.prev(s)) {
      if (slots_[s].pins != 0) continue;
      lru_.remove(s);
      index_.erase(slots_[s].where);
      ++stats_.evictions;
      return s;
    }
    return std::nullopt;
  }
  void release_slot(std::uint32_t s) noexcept {
    slot_meta& m = slots_[s];
    lru_.remove(s);
    if (m.pins > 0) {
      m.retired = true;
      return;
    }
    m = slot_meta{};
    free_slots_.push_back(s);
  }

  // Starts one request. Returns its status when it completed without I/O.
  std::optional<error> start(const work& w, bool& queued) noexcept {
    switch (w.kind) {
      case work_kind::write: return start_write(w, queued);
      case work_kind::read: return start_read(w, queued);
      case work_kind::clear: return start_clear(w, queued);
    }
    return make_error(errc::invalid_argument);
  }

  std::optional<error> start_write(const work& w, bool& queued) noexcept {
    if (w.in.size() != cfg_.page_bytes) return make_error(errc::invalid_argument);
    const std::optional<std::uint32_t> slot = take_slot();
    if (!slot) return make_error(errc::capacity_exhausted);
    if (const error e = allocate_file(*slot / cfg_.pages_per_file); e.code != errc::ok) {
      // The filesystem cannot hold this file: report it, and run on in the files that exist
      // (later puts evict within them) rather than fail every put from now on.
      const std::size_t f = *slot / cfg_.pages_per_file;
      free_slots_.push_back(*slot);
      const auto before = free_slots_.size();
      std::erase_if(free_slots_, [&](std::uint32_t x) { return x / cfg_.pages_per_file == f; });
      lost_slots_ += before - free_slots_.size();
      return e;
    }
    const std::uint32_t op_index = free_ops_.back();
    io_op& op = ops_[op_index];
    std::span<const std::byte> payload = w.in;
    op.direct_payload = is_identity_codec_v<Codec> && detail::is_direct_aligned(w.in.data(), w.in.size());
    if (!op.direct_payload) {
      if (op.staging.size() < slot_bytes_) op.staging = detail::aligned_buffer(slot_bytes_);
      if (op.staging.empty()) {
        free_slots_.push_back(*slot);
        return make_error(errc::capacity_exhausted, ENOMEM);
      }
      const result<std::size_t> n = codec_.encode(w.in, op.staging.span().first(max_payload_));
      if (!n) {
        free_slots_.push_back(*slot);
        return n.err();
      }
      payload = std::span<const std::byte>(op.staging.data(), *n);
    }
    const page_header h = w.sealed && op.direct_payload
                              ? w.header
                              : make_page_header(cfg_.shape, w.where, w.tokens_fp, Codec::id, payload, cfg_.page_bytes, ++sequence_);
    std::memset(op.header.data(), 0, op.header.size());
    store_page_header(h, op.header.span());
    slots_[*slot] = slot_meta{w.where, h.sequence, 0, slot_state::writing, false};
    op.iov[0] = {op.header.data(), detail::direct_io_alignment};
    op.iov[1] = {const_cast<std::byte*>(payload.data()), detail::align_up(payload.size(), detail::direct_io_alignment)};
    if (op.direct_payload) op.iov[1].iov_len = payload.size();  // already a multiple of the alignment
    op.iovcnt = 2;
    op.bytes = op.iov[0].iov_len + op.iov[1].iov_len;
    return launch(op_index, w, *slot, /*write=*/true, queued);
  }

  std::optional<error> start_read(const work& w, bool& queued) noexcept {
    ++stats_.gets;
    if (w.out.size() != cfg_.page_bytes) {
      ++stats_.misses;
      return make_error(errc::invalid_argument);
    }
    auto it = index_.find(w.where);
    if (it == index_.end()) {
      ++stats_.misses;
      return make_error(errc::not_found);
    }
    const std::uint32_t slot = it->second;
    const std::uint32_t op_index = free_ops_.back();
    io_op& op = ops_[op_index];
    op.direct_payload = is_identity_codec_v<Codec> && detail::is_direct_aligned(w.out.data(), w.out.size());
    op.iov[0] = {op.header.data(), detail::direct_io_alignment};
    if (op.direct_payload) {
      op.iov[1] = {w.out.data(), w.out.size()};
    } else {
      if (op.staging.size() < slot_bytes_) op.staging = detail::aligned_buffer(slot_bytes_);
      if (op.staging.empty()) {
        ++stats_.misses;
        return make_error(errc::capacity_exhausted, ENOMEM);
      }
      op.iov[1] = {op.staging.data(), slot_bytes_ - detail::direct_io_alignment};
    }
    op.iovcnt = 2;
    op.bytes = op.iov[0].iov_len + op.iov[1].iov_len;
    ++slots_[slot].pins;
    return launch(op_index, w, slot, /*write=*/false, queued);
  }

  std::optional<error> start_clear(const work& w, bool& queued) noexcept {
    std::uint32_t slot = std::uint32_t(w.index);  // internal clears (no batch) name their slot
    if (w.batch != nullptr) {
      auto it = index_.find(w.where);
      if (it == index_.end()) return make_error(errc::not_found);
      slot = it->second;
      index_.erase(it);
    }
    lru_.remove(slot);
    slots_[slot].state = slot_state::clearing;
    const std::uint32_t op_index = free_ops_.back();
    io_op& op = ops_[op_index];
    op.iov[0] = {zero_block_.data(), detail::direct_io_alignment};
    op.iovcnt = 1;
    op.bytes = detail::direct_io_alignment;
    op.direct_payload = false;
    return launch(op_index, w, slot, /*write=*/true, queued);
  }

  // Issues the op's I/O: through the ring, or synchronously on the fallback path.
  std::optional<error> launch(std::uint32_t op_index, const work& w, std::uint32_t slot, bool write, bool& queued) noexcept {
    io_op& op = ops_[op_index];
    op.job = w;
    op.slot = slot;
    free_ops_.pop_back();
    const int fd = fd_of(slot / cfg_.pages_per_file);
    const off_t off = off_t(slot_offset(slot));
    if (fd < 0) {
      complete_op(op_index, -errno);
      return std::nullopt;
    }
    if (uring_) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) {  // cannot happen with at most queue_depth ops; stay safe anyway
        flush();
        sqe = io_uring_get_sqe(&ring_);
      }
      if (sqe != nullptr) {
        if (write) io_uring_prep_writev(sqe, fd, op.iov, unsigned(op.iovcnt), std::uint64_t(off));
        else io_uring_prep_readv(sqe, fd, op.iov, unsigned(op.iovcnt), std::uint64_t(off));
        io_uring_sqe_set_data64(sqe, op_index);
        ++unsubmitted_;
        queued = true;
        return std::nullopt;
      }
    }
    ssize_t n = write ? ::pwritev(fd, op.iov, op.iovcnt, off) : ::preadv(fd, op.iov, op.iovcnt, off);
    complete_op(op_index, n < 0 ? -errno : int(n));
    return std::nullopt;
  }

  std::size_t on_cqe(io_uring_cqe* cqe) noexcept {
    const auto op_index = std::uint32_t(io_uring_cqe_get_data64(cqe));
    const int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    --in_flight_;
    complete_op(op_index, res);
    return 1;
  }

  // Verifies a page read back and completes its request. `payload` holds the encoded bytes;
  // `decode` says whether they still need decoding into the caller's buffer.
  void settle_read(const work& w, std::uint32_t s, const page_header& h, error io,
                   std::span<const std::byte> payload, bool decode) noexcept {
    error status = io;
    if (io.code == errc::ok) {
      const page_expectation want{cfg_.shape.fingerprint(), w.where, w.tokens_fp, Codec::id, cfg_.page_bytes, max_payload_};
      page_verdict v = check_page_header(h, want);
      if (v == page_verdict::intact) v = verify_page(h, payload.first(h.payload_bytes), want);
      if (v == page_verdict::intact && decode && !codec_.decode(payload.first(h.payload_bytes), w.out))
        v = page_verdict::corrupted;
      if (v != page_verdict::intact) {
        ++(v == page_verdict::foreign ? stats_.foreign : stats_.corrupted);
        status = make_error(errc::corrupted);
      }
    }
    slot_meta& m = slots_[s];
    --m.pins;
    auto it = index_.find(w.where);
    const bool mapped = it != index_.end() && it->second == s;
    if (status.code == errc::ok) {
      ++stats_.hits;
      stats_.bytes_read += w.out.size();
      if (mapped) lru_.push_front(s);
    } else {
      ++stats_.misses;
      if (status.code == errc::corrupted && mapped) {  // never serve it again, nor find it at restart
        index_.erase(it);
        lru_.remove(s);
        try {
          backlog_.push_front(work{work_kind::clear, nullptr, s, w.where, 0, {}, {}});
          m.state = slot_state::clearing;
        } catch (...) {  // no memory to queue the clear: forget the page in memory only
          release_slot(s);
        }
      }
    }
    if (m.retired && m.pins == 0) {
      m = slot_meta{};
      free_slots_.push_back(s);
    }
    finish(w, status);
  }

  // Verifies the reads whose I/O finished (see complete_op); returns how many completed.
  std::size_t settle_deferred_reads() noexcept {
    const std::size_t n = deferred_reads_.size();
    for (const deferred_read& d : deferred_reads_) {
      const std::span<const std::byte> payload(d.job.out.data(), std::min<std::size_t>(d.header.payload_bytes, d.job.out.size()));
      settle_read(d.job, d.slot, d.header, d.io, payload, false);
    }
    deferred_reads_.clear();
    return n;
  }

  // Finishes an op: res is the byte count moved or -errno.
  void complete_op(std::uint32_t op_index, int res) noexcept {
    io_op& op = ops_[op_index];
    const work w = op.job;
    const std::uint32_t s = op.slot;
    free_ops_.push_back(op_index);
    const error io = res < 0 ? errno_error(-res)
                             : std::size_t(res) != op.bytes ? make_error(errc::io_error, EIO) : error{};
    switch (w.kind) {
      case work_kind::write: {
        if (io.code != errc::ok) {  // the slot may hold a torn page now: its checksum will say so
          slots_[s] = slot_meta{};
          free_slots_.push_back(s);
          finish(w, io);
          return;
        }
        if (auto it = index_.find(w.where); it != index_.end()) {
          release_slot(it->second);  // an older copy: the newer one (higher sequence) wins at recovery too
          it->second = s;
        } else {
          index_.emplace(w.where, s);
        }
        slots_[s].state = slot_state::valid;
        lru_.push_front(s);
        ++stats_.puts;
        stats_.bytes_written += w.in.size();
        finish(w, {});
        return;
      }
      case work_kind::read: {
        const page_header h = load_page_header(op.header.span());
        if (op.direct_payload && uring_ && io.code == errc::ok) {
          // The page is in the caller's buffer and the op is free again: verify it after the
          // next I/O has been started (reap() does), so the disk does not wait for the CPU.
          deferred_reads_.push_back({w, s, h, io});
          return;
        }
        const std::span<const std::byte> payload(op.direct_payload ? w.out.data() : op.staging.data(),
                                                 std::min<std::size_t>(h.payload_bytes, max_payload_));
        settle_read(w, s, h, io, payload, !op.direct_payload);
        return;
      }
      case work_kind::clear: {
        release_slot(s);
        finish(w, io);
        return;
      }
    }
  }

  file_tier_config cfg_;
  [[no_unique_address]] Codec codec_{};
  std::size_t max_payload_ = 0;
  std::size_t slot_bytes_ = 0;
  std::size_t files_ = 0;
  bool direct_ = false;
  bool uring_ = false;
  io_uring ring_{};
  std::size_t in_flight_ = 0;    // submitted to the kernel, not yet completed
  std::size_t unsubmitted_ = 0;  // prepared in the ring, not yet submitted
  std::vector<int> fds_;
  std::vector<bool> allocated_;
  std::vector<slot_meta> slots_;
  std::vector<std::uint32_t> free_slots_;
  detail::slot_lru lru_;
  std::unordered_map<page_address, std::uint32_t> index_;
  std::vector<io_op> ops_;
  std::vector<std::uint32_t> free_ops_;
  std::deque<work> backlog_;
  struct deferred_read {
    work job;
    std::uint32_t slot;
    page_header header;
    error io;
  };
  std::vector<deferred_read> deferred_reads_;  // read I/O done, verification pending (reap())
  detail::aligned_buffer zero_block_;
  std::uint64_t sequence_ = 0;
  std::size_t lost_slots_ = 0;
  storage_stats stats_{};
};

static_assert(storage_backend<file_tier<>>);

}  // namespace kvtier
