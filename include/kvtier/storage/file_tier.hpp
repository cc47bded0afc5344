#pragma once
// kvtier: needs-uring
// file_tier: pages in fixed-size slots of large preallocated files on a local filesystem, O_DIRECT
// aligned I/O through io_uring with a configurable queue depth, LRU eviction when full, and
// restart recovery (a new process on the same directory finds the pages). Falls back to
// pread/pwrite where io_uring is refused and to buffered I/O where O_DIRECT is refused (tmpfs);
// io_path() says which path is active. Not thread-safe: one tier per thread, or a lock around it.
// One tier per directory: a second one, in this process or another, is refused at construction.
//
// Layers (storage/detail/): slot_files (the directory: files, layout, lock, preallocation),
// slot_directory (which slot holds which page: index, LRU, pins, recovery), uring_queue (the
// ring), io_ops and file_work (requests in flight and waiting), verify_read (the check of a page
// read back). This file schedules the I/O between them.
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "kvtier/codec/concepts.hpp"
#include "kvtier/codec/identity.hpp"
#include "kvtier/codec/kv_page.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/storage/detail/aligned_buffer.hpp"
#include "kvtier/storage/detail/file_work.hpp"
#include "kvtier/storage/detail/io_ops.hpp"
#include "kvtier/storage/detail/slot_directory.hpp"
#include "kvtier/storage/detail/slot_files.hpp"
#include "kvtier/storage/detail/uring_queue.hpp"
#include "kvtier/storage/detail/verify_read.hpp"
#include "kvtier/storage/file_tier_config.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/request.hpp"
#include "kvtier/storage/stats.hpp"

namespace kvtier {

template <page_codec Codec = identity_codec>
class file_tier {
 public:
  using kvtier_storage_backend = storage_backend_tag;
  using codec_type = Codec;

  // Throws config_error for a bad configuration or an unusable directory: one that cannot be
  // written (EACCES, EROFS), is in use by another tier, or is laid out for another page size.
  // Scans existing slot files: their intact pages are recovered.
  explicit file_tier(file_tier_config cfg) : file_tier(cfg, default_tier_codec<Codec>(cfg.shape, cfg.page_bytes)) {}
  // With a codec built for this tier's pages (a cachegen codec and its profile, say).
  file_tier(file_tier_config cfg, Codec codec)
      : cfg_(validated(std::move(cfg))),
        codec_(checked_tier_codec(std::move(codec), cfg_.shape, cfg_.page_bytes)),
        max_payload_(codec_.max_encoded_bytes(cfg_.page_bytes)),
        slot_bytes_(detail::direct_io_alignment + detail::align_up(max_payload_, detail::direct_io_alignment)),
        files_({cfg_.directory, slot_bytes_, cfg_.capacity_pages, cfg_.pages_per_file, cfg_.use_direct}),
        slots_(cfg_.capacity_pages),
        ops_(cfg_.queue_depth),
        zero_block_(detail::direct_io_alignment) {
    deferred_reads_.reserve(cfg_.queue_depth);  // at most one per op: push_back never allocates
    if (cfg_.use_uring) ring_.open(cfg_.queue_depth);
    recover();
  }

  file_tier(const file_tier&) = delete;
  file_tier& operator=(const file_tier&) = delete;

  ~file_tier() {
    // The kernel may still write into op buffers: let every request in flight finish first.
    if (ring_.active()) ring_.submit();
    for (detail::uring_completion c; ring_.wait(c);) complete_op(std::uint32_t(c.tag), c.res);
    settle_deferred_reads();
    for (auto& w : backlog_)
      if (w.batch != nullptr) w.batch->complete(w.index, make_error(errc::cancelled));
    ring_.close();
  }

  result<void> put(std::span<const page_write> writes, storage_batch& batch) noexcept {
    return submit(writes, batch);
  }
  result<void> get(std::span<const page_read> reads, storage_batch& batch) noexcept {
    return submit(reads, batch);
  }
  result<void> contains(std::span<const page_address> where, storage_batch& batch) noexcept {
    if (!batch.begin(where.size())) return make_error(errc::busy);
    for (std::size_t i = 0; i < where.size(); ++i)
      batch.complete(i, slots_.find(where[i]) ? error{} : make_error(errc::not_found));
    return {};
  }
  result<void> erase(std::span<const page_address> where, storage_batch& batch) noexcept {
    return submit(where, batch);
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
        ring_.submit();
        return {};
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline || !ring_.active() || ring_.idle()) {
        ring_.submit();
        return make_error(errc::timeout);
      }
      if (ring_.unsubmitted() > 0 && has_unsealed_write()) {  // start the disk first, then checksum ahead
        ring_.submit();
        seal_ahead();
      }
      if (detail::uring_completion c; ring_.submit_and_wait(c, deadline - now)) complete_op(std::uint32_t(c.tag), c.res);
    }
  }

  kv_shape shape() const noexcept { return cfg_.shape; }
  std::size_t page_bytes() const noexcept { return cfg_.page_bytes; }
  std::size_t slot_bytes() const noexcept { return slot_bytes_; }
  file_io_path io_path() const noexcept {
    if (ring_.active()) return files_.direct() ? file_io_path::uring_direct : file_io_path::uring_buffered;
    return files_.direct() ? file_io_path::pread_direct : file_io_path::pread_buffered;
  }
  storage_usage usage() const noexcept {
    const std::size_t slots = cfg_.capacity_pages - lost_slots_;  // less any file the filesystem refused
    return {slots_.pages(), slots, slots_.pages() * slot_bytes_, slots * slot_bytes_};
  }
  storage_stats stats() const noexcept { return stats_; }
  const file_tier_config& config() const noexcept { return cfg_; }
  // Where slot file f lives (tests corrupt pages in place through it).
  std::filesystem::path slot_file(std::size_t f) const { return files_.path(f); }
  // The slot (file, byte offset) holding a page, if any.
  std::optional<std::pair<std::size_t, std::size_t>> locate(const page_address& where) const noexcept {
    const std::optional<std::uint32_t> s = slots_.find(where);
    if (!s) return std::nullopt;
    return std::pair{files_.file_of(*s), files_.offset_of(*s)};
  }

 private:
  using work = detail::file_work;
  using work_kind = detail::work_kind;
  struct deferred_read {
    work job;
    std::uint32_t slot;
    page_header header;
    error io;
  };

  void recover() {
    const detail::recovery_counts n = slots_.recover([&](auto visit) { files_.scan(visit); },
                                                     {cfg_.shape.fingerprint(), Codec::id, cfg_.page_bytes, max_payload_});
    stats_.recovered = n.recovered;
    stats_.corrupted += n.corrupted;
    stats_.foreign += n.foreign;
    sequence_ = n.max_sequence;
  }

  // ---- submission ------------------------------------------------------------------------------
  template <class Request>
  result<void> submit(std::span<const Request> requests, storage_batch& batch) noexcept {
    if (!batch.begin(requests.size())) return make_error(errc::busy);
    try {
      for (std::size_t i = 0; i < requests.size(); ++i) {
        backlog_.push_back(detail::make_work(batch, i, requests[i]));
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
  // submit_now: hand the new I/O to the kernel now (else wait() does, together with its wait).
  std::size_t pump(bool submit_now) noexcept {
    std::size_t done = 0;
    while (!backlog_.empty() && ops_.available()) {
      const work w = backlog_.front();
      backlog_.pop_front();
      if (const std::optional<error> immediate = start(w)) {
        finish(w, *immediate);
        ++done;
      }
    }
    if (submit_now && ring_.unsubmitted() > 0) {
      ring_.submit();
      seal_ahead();
    }
    return done;
  }

  // Completes every I/O the kernel has finished: frees the ops, starts queued I/O, then verifies
  // the pages read (the CPU work overlaps the disk's).
  std::size_t reap() noexcept {
    std::size_t n = 0;
    if (!ring_.active()) return n;
    for (detail::uring_completion c; ring_.peek(c); ++n) complete_op(std::uint32_t(c.tag), c.res);
    if (!deferred_reads_.empty()) {
      n += pump(/*submit_now=*/true);
      settle_deferred_reads();
    }
    return n;
  }

  bool has_unsealed_write() noexcept {
    return is_identity_codec_v<Codec> && detail::next_unsealed_write(backlog_, cfg_.queue_depth, cfg_.page_bytes);
  }
  // Checksums the next queued write while the disk works, so that starting it later costs no CPU
  // on the I/O path (identity codec, whose encoded bytes are the caller's page). One page per
  // submission keeps the CPU work in step with the I/O.
  void seal_ahead() noexcept {
    if constexpr (is_identity_codec_v<Codec>) {
      if (work* w = detail::next_unsealed_write(backlog_, cfg_.queue_depth, cfg_.page_bytes)) {
        w->header = make_page_header(cfg_.shape, w->where, w->tokens_fp, Codec::id, w->in, cfg_.page_bytes, ++sequence_);
        w->sealed = true;
      }
    }
  }

  void finish(const work& w, error e) noexcept {
    if (e.code != errc::ok && e.code != errc::not_found && e.code != errc::corrupted) ++stats_.errors;
    if (w.batch != nullptr) w.batch->complete(w.index, e);  // internal work has no batch
  }

  // Starts one request. Returns its status when it completed without I/O.
  std::optional<error> start(const work& w) noexcept {
    switch (w.kind) {
      case work_kind::write: return start_write(w);
      case work_kind::read: return start_read(w);
      case work_kind::clear: return start_clear(w);
    }
    return make_error(errc::invalid_argument);
  }

  std::optional<error> start_write(const work& w) noexcept {
    if (w.in.size() != cfg_.page_bytes) return make_error(errc::invalid_argument);
    const std::optional<std::uint32_t> slot = slots_.take(stats_.evictions);
    if (!slot) return make_error(errc::capacity_exhausted);
    const std::size_t f = files_.file_of(*slot);
    if (const error e = files_.allocate(f); e.code != errc::ok) {
      // The filesystem cannot hold this file: report it, and run on in the files that exist
      // (later puts evict within them) rather than fail every put from now on.
      slots_.abandon(*slot);
      lost_slots_ += slots_.drop_free_range(f * cfg_.pages_per_file, files_.slots_in(f));
      return e;
    }
    const std::uint32_t op_index = ops_.next();
    auto& op = ops_[op_index];
    std::span<const std::byte> payload = w.in;
    op.direct_payload = is_identity_codec_v<Codec> && detail::is_direct_aligned(w.in.data(), w.in.size());
    if (!op.direct_payload) {
      const std::span<std::byte> staging = op.stage(slot_bytes_);
      const result<std::size_t> n = staging.empty() ? make_error(errc::capacity_exhausted, ENOMEM)
                                                    : codec_.encode(w.in, staging.first(max_payload_));
      if (!n) {
        slots_.abandon(*slot);
        return n.err();
      }
      payload = staging.first(*n);
    }
    const page_header h = w.sealed && op.direct_payload
                              ? w.header
                              : make_page_header(cfg_.shape, w.where, w.tokens_fp, Codec::id, payload, cfg_.page_bytes, ++sequence_);
    slots_.begin_write(*slot, w.where, h.sequence);
    op.frame_write(h, payload);
    return launch(op_index, w, *slot, /*write=*/true);
  }

  std::optional<error> start_read(const work& w) noexcept {
    ++stats_.gets;
    if (w.out.size() != cfg_.page_bytes) {
      ++stats_.misses;
      return make_error(errc::invalid_argument);
    }
    const std::optional<std::uint32_t> slot = slots_.find(w.where);
    if (!slot) {
      ++stats_.misses;
      return make_error(errc::not_found);
    }
    const std::uint32_t op_index = ops_.next();
    auto& op = ops_[op_index];
    op.direct_payload = is_identity_codec_v<Codec> && detail::is_direct_aligned(w.out.data(), w.out.size());
    if (op.direct_payload) {
      op.frame_read(w.out.data(), w.out.size());
    } else {
      const std::span<std::byte> staging = op.stage(slot_bytes_);
      if (staging.empty()) {
        ++stats_.misses;
        return make_error(errc::capacity_exhausted, ENOMEM);
      }
      op.frame_read(staging.data(), slot_bytes_ - detail::direct_io_alignment);
    }
    work job = w;
    job.use = slots_.pin(*slot);
    return launch(op_index, job, *slot, /*write=*/false);
  }

  std::optional<error> start_clear(const work& w) noexcept {
    std::uint32_t slot = std::uint32_t(w.index);  // internal clears (no batch) name their slot, already unmapped
    if (w.batch != nullptr) {
      const std::optional<std::uint32_t> s = slots_.find(w.where);
      if (!s) return make_error(errc::not_found);
      slot = *s;
      slots_.unmap(slot);
    }
    const std::uint32_t op_index = ops_.next();
    ops_[op_index].frame_clear(zero_block_);
    return launch(op_index, w, slot, /*write=*/true);
  }

  // Issues the op's I/O: through the ring, or synchronously on the fallback path.
  std::optional<error> launch(std::uint32_t op_index, const work& w, std::uint32_t slot, bool write) noexcept {
    auto& op = ops_[ops_.acquire()];
    op.job = w;
    op.slot = slot;
    const int fd = files_.fd(files_.file_of(slot));
    const std::size_t off = files_.offset_of(slot);
    if (fd < 0) {
      complete_op(op_index, -errno);
      return std::nullopt;
    }
    if (ring_.active() && ring_.prepare(write, fd, op.iov, unsigned(op.iovcnt), off, op_index)) return std::nullopt;
    const ssize_t n = write ? ::pwritev(fd, op.iov, op.iovcnt, off_t(off)) : ::preadv(fd, op.iov, op.iovcnt, off_t(off));
    complete_op(op_index, n < 0 ? -errno : int(n));
    return std::nullopt;
  }

  // Verifies a page read back and completes its request. `payload` holds the encoded bytes (in
  // the caller's page on the zero-copy path, else in staging: then verify_read decodes them).
  void settle_read(const work& w, std::uint32_t s, const page_header& h, error io, std::span<const std::byte> payload) noexcept {
    error status = io;
    if (io.code == errc::ok) {
      const page_expectation want{cfg_.shape.fingerprint(), w.where, w.tokens_fp, Codec::id, cfg_.page_bytes, max_payload_};
      status = detail::verify_read(codec_, h, payload, want, w.out, stats_);
    }
    const bool mapped = slots_.maps(w.where, s);
    if (status.code == errc::ok) {
      ++stats_.hits;
      stats_.bytes_read += w.out.size();
      if (mapped) slots_.touch(s, w.use);
    } else {
      ++stats_.misses;
      if (status.code == errc::corrupted && mapped) {  // never serve it again, nor find it at restart
        slots_.unmap(s);
        try {
          backlog_.push_front(work{work_kind::clear, nullptr, s, w.where, 0, {}, {}});
        } catch (...) {  // no memory to queue the clear: forget the page in memory only
          slots_.release(s);
        }
      }
    }
    slots_.unpin(s);
    finish(w, status);
  }

  // Verifies the reads whose I/O finished (see complete_op); returns how many completed.
  std::size_t settle_deferred_reads() noexcept {
    const std::size_t n = deferred_reads_.size();
    for (const deferred_read& d : deferred_reads_)
      settle_read(d.job, d.slot, d.header, d.io, d.job.out.first(std::min<std::size_t>(d.header.payload_bytes, d.job.out.size())));
    deferred_reads_.clear();
    return n;
  }

  // Finishes an op: res is the byte count moved or -errno.
  void complete_op(std::uint32_t op_index, int res) noexcept {
    auto& op = ops_[op_index];
    const work w = op.job;
    const std::uint32_t s = op.slot;
    ops_.release(op_index);
    const error io = op.outcome(res);
    switch (w.kind) {
      case work_kind::write:
        if (io.code != errc::ok) {  // the slot may hold a torn page now: its checksum will say so
          slots_.abandon(s);
          finish(w, io);
          return;
        }
        slots_.publish(s);
        ++stats_.puts;
        stats_.bytes_written += w.in.size();
        finish(w, {});
        return;
      case work_kind::read: {
        const page_header h = load_page_header(op.header.span());
        if (op.direct_payload && ring_.active() && io.code == errc::ok) {
          // The page is in the caller's buffer and the op is free again: verify it after the
          // next I/O has been started (reap() does), so the disk does not wait for the CPU.
          deferred_reads_.push_back({w, s, h, io});
          return;
        }
        const std::size_t n = std::min<std::size_t>(h.payload_bytes, max_payload_);
        settle_read(w, s, h, io, std::span<const std::byte>(op.direct_payload ? w.out.data() : op.staging.data(), n));
        return;
      }
      case work_kind::clear:
        slots_.release(s);
        finish(w, io);
        return;
    }
  }

  file_tier_config cfg_;
  [[no_unique_address]] Codec codec_{};
  std::size_t max_payload_ = 0;
  std::size_t slot_bytes_ = 0;
  detail::slot_files files_;
  detail::slot_directory slots_;
  detail::uring_queue ring_;
  detail::io_ops<work> ops_;
  detail::aligned_buffer zero_block_;
  std::deque<work> backlog_;
  std::vector<deferred_read> deferred_reads_;  // read I/O done, verification pending (reap())
  std::uint64_t sequence_ = 0;
  std::size_t lost_slots_ = 0;
  storage_stats stats_{};
};

static_assert(storage_backend<file_tier<>>);

}  // namespace kvtier
