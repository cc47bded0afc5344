// The copy planner (transfer/planner.hpp): which path each kind of batch takes, and the statistics.
#include <boost/test/unit_test.hpp>

#include <string>

#include "kvtier/transfer/planner.hpp"

using namespace kvtier::transfer;

namespace {
constexpr std::size_t kib = 1024, mib = 1024 * kib;
batch_facts facts(std::size_t bytes, std::size_t run, bool per_layer, compute_hint c, bool possible = true,
                  bool backup = false) {
  batch_facts f;
  f.backup = backup;
  f.bytes = bytes;
  f.dma_run = run;
  f.per_layer = per_layer;
  f.compute = c;
  f.staged_possible = possible;
  return f;
}
}  // namespace

BOOST_AUTO_TEST_CASE(large_runs_go_staged_beside_compute_and_alone) {
  for (compute_hint c : {compute_hint::unknown, compute_hint::busy, compute_hint::idle})
    for (bool per_layer : {false, true})
      for (bool backup : {false, true})
        BOOST_TEST((plan(facts(1024 * mib, 2 * mib, per_layer, c, true, backup)) == copy_path::staged));
}

BOOST_AUTO_TEST_CASE(short_runs_small_batches_and_unsupported_views_take_the_kernel) {
  // 1-token pages layer by layer: 16 KiB copy-engine runs take the kernel alone, staged beside compute;
  // 8 KiB runs take the kernel either way.
  BOOST_TEST((plan(facts(1024 * mib, 16 * kib, true, compute_hint::idle)) == copy_path::kernel));
  BOOST_TEST((plan(facts(1024 * mib, 16 * kib, true, compute_hint::busy)) == copy_path::staged));
  BOOST_TEST((plan(facts(1024 * mib, 8 * kib, true, compute_hint::busy)) == copy_path::kernel));
  // A 1 MiB batch: the pipeline would not fill.
  BOOST_TEST((plan(facts(1 * mib, 1 * mib, false, compute_hint::busy)) == copy_path::kernel));
  // page_head_first hosts: no staged path.
  BOOST_TEST((plan(facts(1024 * mib, 2 * mib, false, compute_hint::busy, false)) == copy_path::kernel));
}

BOOST_AUTO_TEST_CASE(medium_backup_runs_mix_or_take_the_kernel_only_when_compute_is_idle) {
  // Backup of whole scattered pages, 128 KiB runs: mixed alone, staged beside compute.
  BOOST_TEST((plan(facts(1024 * mib, 128 * kib, false, compute_hint::idle, true, true)) == copy_path::mixed));
  BOOST_TEST((plan(facts(1024 * mib, 128 * kib, false, compute_hint::busy, true, true)) == copy_path::staged));
  BOOST_TEST((plan(facts(1024 * mib, 128 * kib, false, compute_hint::unknown, true, true)) == copy_path::staged));
  // Backup layer by layer, 256 KiB runs: the kernel alone, staged beside compute.
  BOOST_TEST((plan(facts(1024 * mib, 256 * kib, true, compute_hint::idle, true, true)) == copy_path::kernel));
  BOOST_TEST((plan(facts(1024 * mib, 256 * kib, true, compute_hint::busy, true, true)) == copy_path::staged));
  // Loads of the same runs stay staged.
  BOOST_TEST((plan(facts(1024 * mib, 128 * kib, false, compute_hint::idle)) == copy_path::staged));
  BOOST_TEST((plan(facts(1024 * mib, 256 * kib, true, compute_hint::idle)) == copy_path::staged));
}

BOOST_AUTO_TEST_CASE(thresholds_are_tunable) {
  planner_tuning t;
  t.min_dma_run = 8 * kib;
  BOOST_TEST((plan(facts(1024 * mib, 16 * kib, true, compute_hint::idle), t) == copy_path::staged));
  t.small_batch_bytes = 0;
  BOOST_TEST((plan(facts(1 * mib, 1 * mib, false, compute_hint::busy), t) == copy_path::staged));
}

BOOST_AUTO_TEST_CASE(stats_count_batches_bytes_and_the_last_choice) {
  copy_stats s;
  s.count(copy_path::staged, 100, true);
  s.count(copy_path::kernel, 7, false);
  s.count(copy_path::staged, 50, true);
  BOOST_TEST(s.of(copy_path::staged) == 2u);
  BOOST_TEST(s.of(copy_path::kernel) == 1u);
  BOOST_TEST(s.of(copy_path::mixed) == 0u);
  BOOST_TEST(s.bytes[static_cast<std::size_t>(copy_path::staged)] == 150u);
  BOOST_TEST(s.planned == 2u);
  BOOST_TEST((s.last == copy_path::staged));
  BOOST_TEST(std::string(name(copy_path::mixed)) == "mixed");
}
