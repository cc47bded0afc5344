#pragma once
// Counters and usage every storage backend reports.
#include <cstddef>
#include <cstdint>

namespace kvtier {

struct storage_stats {
  std::uint64_t puts = 0;            // page writes completed ok
  std::uint64_t gets = 0;            // page reads requested
  std::uint64_t hits = 0;            // reads served: verified, exactly what was written
  std::uint64_t misses = 0;          // reads not served (absent, corrupted, foreign or failed)
  std::uint64_t corrupted = 0;       // checksum or header damage (bit flip, torn write): served as a miss
  std::uint64_t foreign = 0;         // intact page of another KV shape, namespace, key, tokens or codec: a miss
  std::uint64_t evictions = 0;       // pages dropped to make room (LRU)
  std::uint64_t errors = 0;          // requests that failed with I/O, capacity or connection errors
  std::uint64_t bytes_written = 0;   // page payload bytes written ok
  std::uint64_t bytes_read = 0;      // page payload bytes served
  std::uint64_t recovered = 0;       // pages found intact at open (file tier restart)
};

struct storage_usage {
  std::size_t pages = 0;           // pages held now
  std::size_t capacity_pages = 0;  // pages the tier can hold (0: unbounded or unknown, e.g. Redis)
  std::size_t bytes = 0;           // bytes those pages occupy on the tier
  std::size_t capacity_bytes = 0;  // 0: unbounded or unknown
};

}  // namespace kvtier
