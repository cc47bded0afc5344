#pragma once
// Eviction policies: which cached node of the prefix index gives up its pages first.
//  - lru: least recently used first;
//  - lfu_aging: least frequently used first, with dynamic aging (LFU-DA) so old hot pages cool down;
//  - priority_lru: lowest retention priority first, least recently used within a priority;
//  - look_ahead<P>: P, except that pages queued requests will need go last (the scheduler's hook).
// The prefix index orders nodes by key(); leaves go first whatever the key says.
#include "kvtier/policy/eviction/concept.hpp"
#include "kvtier/policy/eviction/lfu_aging.hpp"
#include "kvtier/policy/eviction/look_ahead.hpp"
#include "kvtier/policy/eviction/lru.hpp"
#include "kvtier/policy/eviction/priority_lru.hpp"
