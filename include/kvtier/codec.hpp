#pragma once
// Page codecs between pages and slow tiers: the page_codec concept, the identity codec, the 8-bit
// baselines (int8, fp8 e4m3, per-vector scales) and the CacheGen-style entropy codec.
#include "kvtier/codec/cachegen.hpp"
#include "kvtier/codec/concepts.hpp"
#include "kvtier/codec/identity.hpp"
#include "kvtier/codec/kv_page.hpp"
#include "kvtier/codec/scaled_8bit.hpp"
