#pragma once
// Loopback TCP helpers and a real redis-server child process on a free port (no persistence), for
// the Redis tier's tests. redis_server exists where KVTIER_REDIS_SERVER names the binary.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace kvtier::testing {

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

}  // namespace kvtier::testing
