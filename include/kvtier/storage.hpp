#pragma once
// kvtier's slow tiers, generic part: the storage_backend concept, batches, the page header and its
// checks, page codecs, and the in-memory reference tier. Host-only; links kvtier::core.
// The file tier is in kvtier/storage/file_tier.hpp (kvtier::file, liburing); the Redis tier in
// kvtier/storage/redis_tier.hpp (kvtier::redis, hiredis).
#include "kvtier/codec.hpp"
#include "kvtier/core/page_key.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/storage/memory_tier.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/request.hpp"
#include "kvtier/storage/stats.hpp"
