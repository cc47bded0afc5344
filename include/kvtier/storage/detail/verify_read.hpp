#pragma once
// The one check every slow tier (file, Redis, memory) runs on a page it read back before the page
// is served: header fields against what the reader expects, the chained checksum over header and
// payload, then decoding into the caller's page when the payload is not already there. A damaged
// or foreign page is counted in the tier's stats and reported as errc::corrupted (a miss).
#include <cstddef>
#include <span>

#include "kvtier/codec/concepts.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/storage/page_header.hpp"
#include "kvtier/storage/stats.hpp"

namespace kvtier::detail {

// `payload`: the encoded bytes stored after the header (must be exactly h.payload_bytes long to
// verify). `out`: the caller's page; when payload already lies in it (a zero-copy read with the
// identity codec), nothing is decoded.
template <page_codec Codec>
error verify_read(const Codec& codec, const page_header& h, std::span<const std::byte> payload,
                  const page_expectation& want, std::span<std::byte> out, storage_stats& stats) noexcept {
  page_verdict v = verify_page(h, payload, want);
  if (v == page_verdict::intact && payload.data() != out.data() && !codec.decode(payload, out))
    v = page_verdict::corrupted;
  if (v == page_verdict::intact) return {};
  ++(v == page_verdict::foreign ? stats.foreign : stats.corrupted);
  return make_error(errc::corrupted);
}

}  // namespace kvtier::detail
