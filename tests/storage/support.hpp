#pragma once
// Shared helpers of the storage tests: deterministic pages, temporary directories, a real
// redis-server on a free loopback port, and the "no wrong page" ledger every fault test keeps.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kvtier/storage.hpp"

namespace kvtier::test {

// The key and bytes of test page i of namespace ns: every byte depends on (ns, i, version).
inline page_address address_of(std::uint64_t ns, std::uint64_t i) {
  return {namespace_id{ns}, page_key{0x9e3779b97f4a7c15ull * (i + 1), i ^ 0xabcdefull}};
}
inline std::uint64_t tokens_of(std::uint64_t ns, std::uint64_t i) {
  std::vector<token_id> t;
  for (int k = 0; k < 16; ++k) t.push_back(token_id{std::int32_t(ns * 1000003 + i * 16 + std::uint64_t(k))});
  return tokens_fingerprint(t);
}
inline void fill_page(std::span<std::byte> out, std::uint64_t ns, std::uint64_t i, std::uint64_t version = 0) {
  std::uint64_t x = (ns + 1) * 0x2545f4914f6cdd1dull ^ (i + 1) * 0x9e3779b97f4a7c15ull ^ (version + 7);
  for (std::size_t b = 0; b < out.size(); b += 8) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;  // xorshift64
    const std::size_t n = std::min<std::size_t>(8, out.size() - b);
    std::memcpy(out.data() + b, &x, n);
  }
}

// A page-aligned buffer holding n pages of page_bytes each.
struct page_buffer {
  page_buffer(std::size_t n, std::size_t page_bytes)
      : page(page_bytes), pages(n), raw(static_cast<std::byte*>(std::aligned_alloc(4096, n * page_bytes + 4096))) {
    if (!raw) throw std::bad_alloc();
  }
  std::span<std::byte> operator[](std::size_t i) const { return {raw.get() + i * page, page}; }
  std::size_t page, pages;
  struct deleter { void operator()(std::byte* p) const { std::free(p); } };
  std::unique_ptr<std::byte, deleter> raw;
};

// Fills buf's first n pages with test pages [first, first + n) of namespace ns (at `version`) and
// returns the put requests that write them.
inline std::vector<page_write> page_writes(const page_buffer& buf, std::uint64_t ns, std::size_t first, std::size_t n,
                                           std::uint64_t version = 0) {
  std::vector<page_write> w;
  for (std::size_t i = 0; i < n; ++i) {
    fill_page(buf[i], ns, first + i, version);
    w.push_back({address_of(ns, first + i), tokens_of(ns, first + i), buf[i]});
  }
  return w;
}

// The get requests that read test pages [first, first + n) of namespace ns into buf's first n pages.
inline std::vector<page_read> page_reads(const page_buffer& buf, std::uint64_t ns, std::size_t first, std::size_t n) {
  std::vector<page_read> r;
  for (std::size_t i = 0; i < n; ++i) r.push_back({address_of(ns, first + i), tokens_of(ns, first + i), buf[i]});
  return r;
}

// Counts pages tried, served, missed and wrong; a fault test ends with wrong == 0.
struct ledger {
  std::size_t tried = 0, served = 0, missed = 0, corrupted = 0, wrong = 0;
  // Checks one get outcome against the bytes that were written (any of `versions`).
  void check(error status, std::span<const std::byte> got, std::uint64_t ns, std::uint64_t i,
             std::initializer_list<std::uint64_t> versions = {0}) {
    ++tried;
    if (status.code != errc::ok) {
      ++missed;
      if (status.code == errc::corrupted) ++corrupted;
      return;
    }
    std::vector<std::byte> want(got.size());
    for (std::uint64_t v : versions) {
      fill_page(want, ns, i, v);
      if (std::memcmp(want.data(), got.data(), got.size()) == 0) {
        ++served;
        return;
      }
    }
    ++wrong;
  }
};

struct temp_dir {
  explicit temp_dir(const std::filesystem::path& base = std::filesystem::temp_directory_path()) {
    std::string templ = (base / "kvtier-storage-XXXXXX").string();
    if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed in " + base.string());
    path = templ;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path path;
};

// A free TCP port on 127.0.0.1 (bound then released; a race with another process is unlikely).
inline int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

inline bool port_accepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(std::uint16_t(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

#ifdef KVTIER_REDIS_SERVER
// A redis-server child on 127.0.0.1:port, no persistence. Extra arguments go on its command line.
class redis_server {
 public:
  explicit redis_server(std::vector<std::string> extra = {}, int port = 0)
      : port_(port ? port : free_loopback_port()), auto_port_(port == 0), extra_(std::move(extra)) {
    start();
  }
  ~redis_server() { stop(SIGTERM); }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  int port() const { return port_; }
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  // (Re)starts the server on its port (a restart keeps the port: clients are configured with it).
  void start() {
    if (pid_ > 0) return;
    for (int attempt = 0; attempt < 5; ++attempt) {
      if (launch()) return;
      // The first start may move to another port if one was taken meanwhile by another process.
      if (auto_port_ && !started_once_) port_ = free_loopback_port();
      else std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw std::runtime_error("redis-server did not start on port " + std::to_string(port_));
  }
  // Stops the server with `sig` (SIGKILL simulates a crash) and reaps it.
  void stop(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  // True once the server accepts connections and is still our child (not another server that
  // holds the port while ours failed to bind).
  bool launch() {
    std::vector<std::string> args = {KVTIER_REDIS_SERVER, "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
                                     "--protected-mode", "no"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& s : args) argv.push_back(s.data());
      argv.push_back(nullptr);
      const int null = ::open("/dev/null", O_WRONLY);  // not freopen: it would flush the parent's buffer
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::execv(argv[0], argv.data());
      std::_Exit(127);
    }
    for (int i = 0; i < 500; ++i) {  // up to 5 s
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // ours exited: the port is taken
        pid_ = -1;
        return false;
      }
      if (port_accepts(port_)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
          pid_ = -1;
          return false;
        }
        started_once_ = true;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    stop(SIGKILL);
    return false;
  }

  int port_;
  bool auto_port_;
  bool started_once_ = false;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
};

#endif  // KVTIER_REDIS_SERVER

}  // namespace kvtier::test
