#pragma once
// Page codecs between pages and slow tiers: the page_codec concept and the identity codec.
#include "kvtier/codec/concepts.hpp"
#include "kvtier/codec/identity.hpp"
