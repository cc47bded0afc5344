// File tier bench: write and read GB/s for 128 KiB..2 MiB pages at queue depths 1..64, against
// fio with O_DIRECT (io_uring engine, randread / randwrite, same block size and queue depth) on
// the same directory in the same run. Table + CSV.
//   kvtier-bench-storage-file [--dir /tmp] [--mib 512] [--pages 131072,262144,524288,1048576,2097152]
//                             [--qd 1,4,16,64] [--reps 3] [--distinct] [--csv storage_file.csv]
// Each figure is the median of `reps` alternating runs of kvtier and fio.
#include <algorithm>
#include <filesystem>
#include <numeric>
#include <random>
#include <thread>
#include <unistd.h>
#include <vector>

#include "bench/storage/common.hpp"
#include "kvtier/storage/file_tier.hpp"

using namespace kvtier;
using namespace std::chrono_literals;

namespace {
struct point {
  std::size_t page, qd;
  double kv_write, kv_read, fio_write, fio_read;  // GB/s (1e9 bytes/s), medians
  double write_ratio, read_ratio;                  // medians of the ratios of runs taken side by side
  double read_ratio_min, read_ratio_max;           // their spread: the disk is shared
  double fio_slot_read, slot_read_ratio;           // fio reading kvtier's slot file (payload GB/s)
  std::string path;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// fio's bandwidth on `file` (rw, block size, queue depth, bytes); readonly for the tier's own files.
double fio_gbps(const std::string& file, const char* rw, std::size_t bs, std::size_t qd, std::size_t bytes,
                bool readonly = false) {
  const std::string cmd = "fio --name=kvtier --filename='" + file + "' --rw=" + rw + " --bs=" + std::to_string(bs) +
                          " --iodepth=" + std::to_string(qd) + " --ioengine=io_uring --direct=1 --size=" +
                          std::to_string(bytes) + (readonly ? " --readonly" : "") +
                          " --numjobs=1 --group_reporting --output-format=json 2>/dev/null";
  const std::string json = bench::run(cmd);
  const char* section = std::strstr(rw, "write") != nullptr ? "\"write\" :" : "\"read\" :";
  return bench::json_number_after(json, section, "bw_bytes") / 1e9;
}
}  // namespace

int main(int argc, char** argv) {
  const std::string dir = bench::arg(argc, argv, "--dir", "/tmp");
  const std::size_t mib = std::stoull(bench::arg(argc, argv, "--mib", "512"));
  const auto pages = bench::list(bench::arg(argc, argv, "--pages", "131072,262144,524288,1048576,2097152"));
  const auto depths = bench::list(bench::arg(argc, argv, "--qd", "1,4,16,64"));
  const std::string csv = bench::arg(argc, argv, "--csv", "storage_file.csv");
  const std::size_t reps = std::max<std::size_t>(1, std::stoull(bench::arg(argc, argv, "--reps", "3")));
  bool distinct = false;
  for (int i = 1; i < argc; ++i) distinct = distinct || std::string_view(argv[i]) == "--distinct";
  const std::filesystem::path work = std::filesystem::path(dir) / "kvtier-file-bench";
  std::filesystem::remove_all(work);
  std::filesystem::create_directories(work);
  std::printf("file tier vs fio (O_DIRECT, io_uring), %zu MiB per point, median of %zu, %s buffers, directory %s (%s)\n",
              mib, reps, distinct ? "distinct" : "ring of", work.c_str(),
              bench::filesystem_of(work.string()).c_str());
  std::printf("%9s %4s | %9s %9s %6s | %9s %9s %6s | %9s %6s | %s\n", "page", "qd", "kv write", "fio write", "ratio",
              "kv read", "fio read", "ratio", "fio slots", "ratio", "kvtier path");
  std::vector<point> results;
  for (std::size_t page : pages) {
    const std::size_t n = std::max<std::size_t>(8, (mib << 20) / page);
    // Like fio, pages move through a ring of buffers (8 x the queue depth); reads go in chunks of
    // half the ring, a chunk reusing buffers only once the chunk before it on them is done, so no
    // two reads in flight share a buffer. --distinct gives every page its own buffer.
    const std::size_t ring_max = distinct ? n : std::min(n, 8 * *std::max_element(depths.begin(), depths.end()));
    std::size_t* raw = static_cast<std::size_t*>(std::aligned_alloc(4096, ring_max * page));
    std::span<std::byte> all(reinterpret_cast<std::byte*>(raw), ring_max * page);
    std::mt19937_64 rng(42);
    for (std::size_t i = 0; i < ring_max * page / 8; ++i) raw[i] = rng();
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);  // reads in random order, as lookups come
    for (std::size_t qd : depths) {
      std::filesystem::remove_all(work / "tier");
      point p{page, qd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ""};
      const std::size_t ring = distinct ? n : std::min(n, 8 * qd);
      const std::size_t chunk = distinct ? n : std::max<std::size_t>(1, ring / 2);
      {
        file_tier_config cfg{.directory = work / "tier", .shape = shapes::llama3_8b(), .page_bytes = page, .capacity_pages = n};
        cfg.pages_per_file = n;  // one slot file, which fio also reads
        cfg.queue_depth = unsigned(qd);
        file_tier<> t(cfg);
        p.path = std::string(to_string(t.io_path()));
        std::vector<page_write> w(n);
        std::vector<page_read> r(n);
        for (std::size_t i = 0; i < n; ++i) {
          const page_address a{namespace_id{1}, page_key{i, ~i}};
          w[i] = {a, i, all.subspan(i % ring * page, page)};
        }
        for (std::size_t i = 0; i < n; ++i) {
          const std::size_t k = order[i];
          r[i] = {w[k].where, k, all.subspan(i % ring * page, page)};
        }
        // Preallocation is not part of the write figure: warm the files with a first pass.
        storage_batch b;
        if (!t.put(w, b) || !t.wait(b, 600s) || !b.all_ok()) {
          std::fprintf(stderr, "kvtier write failed: %zu ok of %zu\n", b.count(errc::ok), n);
          return 1;
        }
        // The disk is shared and noisy: alternate kvtier and fio, `reps` times, and keep medians.
        std::vector<double> kw, kr, fw, fr, fs;
        const std::string fio_file = (work / "fio-bench.dat").string();
        auto kv_write = [&] {
          const auto start = std::chrono::steady_clock::now();
          if (!t.put(w, b) || !t.wait(b, 600s) || !b.all_ok()) {
            std::fprintf(stderr, "kvtier write failed: %zu ok of %zu\n", b.count(errc::ok), n);
            std::exit(1);
          }
          kw.push_back(double(n * page) / bench::seconds_since(start) / 1e9);
        };
        storage_batch halves[2];
        auto kv_read = [&] {
          const auto start = std::chrono::steady_clock::now();
          auto drain = [&](storage_batch& h) {
            if (!t.wait(h, 600s) || !h.all_ok()) {
              std::fprintf(stderr, "kvtier read failed: %zu ok of %zu (%zu corrupted, %zu not found)\n",
                           h.count(errc::ok), h.size(), h.count(errc::corrupted), h.count(errc::not_found));
              std::exit(1);
            }
          };
          for (std::size_t c = 0; c * chunk < n; ++c) {
            storage_batch& h = halves[c % 2];
            drain(h);  // the chunk that used these buffers before
            if (!t.get(std::span(r).subspan(c * chunk, std::min(chunk, n - c * chunk)), h)) std::exit(1);
          }
          drain(halves[0]);
          drain(halves[1]);
          kr.push_back(double(n * page) / bench::seconds_since(start) / 1e9);
        };
        auto settle = [] {  // let the (virtual) disk finish flushing before the next phase
          ::sync();
          std::this_thread::sleep_for(300ms);
        };
        for (std::size_t rep = 0; rep < reps; ++rep) {
          // Writes, then reads; who goes first alternates, so neither side always follows the other.
          const bool kv_first = rep % 2 == 0;
          if (kv_first) kv_write();
          fw.push_back(fio_gbps(fio_file, "randwrite", page, qd, mib << 20));
          if (!kv_first) kv_write();
          settle();
          if (kv_first) kv_read();
          fr.push_back(fio_gbps(fio_file, "randread", page, qd, mib << 20));
          // fio reading kvtier's own slot file, slot by slot: the same bytes, without kvtier.
          fs.push_back(fio_gbps(t.slot_file(0).string(), "randread", t.slot_bytes(), qd, n * t.slot_bytes(), true) *
                       double(page) / double(t.slot_bytes()));
          if (!kv_first) kv_read();
          settle();
        }
        std::vector<double> wr, rr;
        for (std::size_t i = 0; i < reps; ++i) {
          wr.push_back(kw[i] / fw[i]);
          rr.push_back(kr[i] / fr[i]);
        }
        p.write_ratio = median(wr);
        p.read_ratio = median(rr);
        std::vector<double> sr;
        for (std::size_t i = 0; i < reps; ++i) sr.push_back(kr[i] / fs[i]);
        p.fio_slot_read = median(fs);
        p.slot_read_ratio = median(sr);
        p.read_ratio_min = *std::min_element(rr.begin(), rr.end());
        p.read_ratio_max = *std::max_element(rr.begin(), rr.end());
        p.kv_write = median(kw);
        p.kv_read = median(kr);
        p.fio_write = median(fw);
        p.fio_read = median(fr);
      }
      std::filesystem::remove_all(work / "tier");
      std::printf("%6zu KiB %4zu | %9.2f %9.2f %5.0f%% | %9.2f %9.2f %5.0f%% | %9.2f %5.0f%% | %s\n", page >> 10, qd,
                  p.kv_write, p.fio_write, 100 * p.write_ratio, p.kv_read, p.fio_read, 100 * p.read_ratio,
                  p.fio_slot_read, 100 * p.slot_read_ratio, p.path.c_str());
      std::fflush(stdout);
      results.push_back(p);
    }
    std::filesystem::remove(work / "fio-bench.dat");
    std::free(raw);
  }
  std::ofstream out(csv);
  out << "page_bytes,queue_depth,kvtier_write_gbps,fio_write_gbps,write_ratio,kvtier_read_gbps,fio_randread_gbps,"
         "read_ratio,read_ratio_min,read_ratio_max,fio_slot_file_read_gbps,slot_read_ratio,path\n";
  for (const point& p : results)
    out << p.page << ',' << p.qd << ',' << p.kv_write << ',' << p.fio_write << ',' << p.write_ratio << ',' << p.kv_read
        << ',' << p.fio_read << ',' << p.read_ratio << ',' << p.read_ratio_min << ',' << p.read_ratio_max << ','
        << p.fio_slot_read << ',' << p.slot_read_ratio << ",\""
        << p.path << "\"\n";
  std::printf("GB/s = 1e9 bytes/s, medians; ratio = median of kvtier/fio over runs taken side by side;\n"
              "reads in random page order vs fio randread; writes land in LRU-evicted slots (random order once\n"
              "reads have reordered the LRU) vs fio randwrite; 'fio slots': fio randread of kvtier's own slot\n"
              "file in slot-sized blocks (the bytes kvtier reads), counted as page payload; CSV: %s\n", csv.c_str());
  std::filesystem::remove_all(work);
  return 0;
}
