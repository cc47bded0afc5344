// A tier's codec must opt in to page_codec: a transform with the right members but no tag is refused.
#include <cstddef>
#include <cstdint>
#include <span>

#include "kvtier/storage.hpp"

struct unannounced_codec {
  static constexpr std::uint32_t id = 5;
  std::size_t max_encoded_bytes(std::size_t n) const noexcept { return n; }
  kvtier::result<std::size_t> encode(std::span<const std::byte>, std::span<std::byte>) const noexcept { return 0; }
  kvtier::result<std::size_t> decode(std::span<const std::byte>, std::span<std::byte>) const noexcept { return 0; }
};

struct announced_codec : unannounced_codec {
  using kvtier_codec = kvtier::codec_tag;
};

kvtier::memory_tier<announced_codec>* fine = nullptr;
#ifdef KVTIER_COMPILE_FAIL
kvtier::memory_tier<unannounced_codec>* refused = nullptr;  // the misuse
#endif
