#pragma once
// A fake Redis server for protocol tests: a thread on a loopback port parses the commands it gets
// (RESP arrays of bulk strings, with kvtier's own resp_reader) and answers each with the bytes a
// test's handler returns, verbatim, so a test can send what no real server would: replies of the
// wrong type or length, huge lengths, partial replies, errors, a close in the middle. PING, AUTH
// and CONFIG get a real server's answers unless the handler answers them.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kvtier/storage/detail/resp_reader.hpp"

namespace kvtier::testing {

class fake_resp_server {
 public:
  struct reply {
    std::string bytes;         // sent as they are
    bool close_after = false;  // then the connection is closed
  };
  // Called for each command (argv[0] is the command name, upper case as the client sent it).
  // std::nullopt: the default answer (PING, AUTH, CONFIG), or nothing at all for other commands.
  using handler = std::function<std::optional<reply>(const std::vector<std::string>& argv)>;

  explicit fake_resp_server(handler h) : handler_(std::move(h)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_fd_, 8) != 0 || ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("fake_resp_server: cannot listen on loopback");
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~fake_resp_server() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  fake_resp_server(const fake_resp_server&) = delete;
  fake_resp_server& operator=(const fake_resp_server&) = delete;

  int port() const { return port_; }
  std::size_t connections() const { return connections_; }
  // The commands received so far (argv[0] of each).
  std::vector<std::string> commands() const {
    std::lock_guard lock(mutex_);
    return commands_;
  }
  std::size_t count(const std::string& name) const {
    std::size_t n = 0;
    for (const auto& c : commands()) n += c == name;
    return n;
  }

  // The answer of a real server with no password and the default limits.
  static std::optional<reply> standard(const std::vector<std::string>& argv) {
    if (argv.empty()) return std::nullopt;
    if (argv[0] == "PING") return reply{"+PONG\r\n"};
    if (argv[0] == "AUTH") return reply{"+OK\r\n"};
    if (argv[0] == "CONFIG" && argv.size() == 3 && argv[2] == "proto-max-bulk-len")
      return reply{"*2\r\n$18\r\nproto-max-bulk-len\r\n$9\r\n536870912\r\n"};
    return std::nullopt;
  }

 private:
  bool wait_readable(int fd) const {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 20) > 0;
  }

  void run() {
    while (!stop_) {
      if (!wait_readable(listen_fd_)) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++connections_;
      serve(fd);
      ::close(fd);
    }
  }

  // Serves one connection until the client closes it, a reply asks to close, or stop.
  void serve(int fd) {
    detail::resp_reader reader(detail::resp_limits{std::size_t(1) << 20});
    std::vector<std::string> argv;
    std::size_t args_due = 0;
    while (!stop_) {
      detail::resp_item it;
      const detail::resp_status s = reader.next(it);
      if (s == detail::resp_status::malformed) return;
      if (s == detail::resp_status::item) {
        if (it.type == detail::resp_type::array) {
          argv.clear();
          args_due = std::size_t(it.value);
        } else if (it.type == detail::resp_type::bulk) {
          std::string& arg = argv.emplace_back(std::size_t(it.value), '\0');
          for (std::size_t got = 0;;) {
            got += reader.read_bulk(std::as_writable_bytes(std::span(arg)).subspan(got));
            if (got == arg.size()) {
              const detail::resp_status f = reader.finish_bulk();
              if (f == detail::resp_status::item) break;
              if (f == detail::resp_status::malformed) return;
            }
            if (!receive(fd, reader)) return;
          }
          if (args_due > 0 && --args_due == 0 && !answer(fd, argv)) return;
        }
        continue;
      }
      if (!receive(fd, reader)) return;  // need_more (or a body in progress)
    }
  }

  bool receive(int fd, detail::resp_reader& reader) {
    while (!stop_ && !wait_readable(fd)) {
    }
    if (stop_) return false;
    const std::span<char> room = reader.space();
    const ssize_t n = ::recv(fd, room.data(), room.size(), 0);
    if (n <= 0) return false;
    reader.filled(std::size_t(n));
    return true;
  }

  bool answer(int fd, const std::vector<std::string>& argv) {
    {
      std::lock_guard lock(mutex_);
      commands_.push_back(argv.empty() ? std::string() : argv[0]);
    }
    std::optional<reply> r = handler_(argv);
    if (!r) r = standard(argv);
    if (!r) return true;
    for (std::size_t sent = 0; sent < r->bytes.size();) {
      const ssize_t n = ::send(fd, r->bytes.data() + sent, r->bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += std::size_t(n);
    }
    return !r->close_after;
  }

  handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> connections_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> commands_;
  std::thread thread_;
};

}  // namespace kvtier::testing
