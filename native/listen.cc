// listenTcp: the master's listening sockets. Every socket is bound with
// SO_REUSEADDR and SO_REUSEPORT so that a port's dual-stack wildcard and its
// interface addresses can coexist (the kernel gives each connection to the
// most specific socket) and a reload can bind a new form of a port before
// the old one closes. A foreign program on the port is found by the caller's
// /proc probe before this is called. See socket(7), ipv6(7), bind(2).
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "addon.h"

namespace tcpproxy {
namespace {

// listenTcp(address | null, port, backlog): fd, non-blocking and close-on-exec.
// null is the dual-stack wildcard (:: with IPV6_V6ONLY off).
Napi::Value ListenTcp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !(info[0].IsNull() || info[0].IsString())) {
    ThrowType(env, "listenTcp(address, port, backlog): address must be a string or null");
  }
  int port = IntArg(info, 1, "listenTcp: port must be a number");
  int backlog = IntArg(info, 2, "listenTcp: backlog must be a number");
  if (port < 0 || port > 65535) ThrowType(env, "listenTcp: port out of range");
  sockaddr_storage ss{};
  socklen_t len;
  if (info[0].IsNull()) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_any;
    a->sin6_port = htons(port);
    len = sizeof *a;
  } else {
    if (!ParseIp(info[0].As<Napi::String>().Utf8Value(), port, &ss, &len)) {
      ThrowType(env, "listenTcp: address must be an IP literal");
    }
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, "socket", errno);
  const int one = 1;
  const int zero = 0;
  const char* failed = nullptr;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    failed = "setsockopt";
  } else if (info[0].IsNull() && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero) < 0) {
    failed = "setsockopt";
  } else if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) < 0) {
    failed = "bind";
  } else if (listen(fd, backlog) < 0) {
    failed = "listen";
  }
  if (failed != nullptr) {
    int err = errno;
    close(fd);
    ThrowErrno(env, failed, err);
  }
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitListen(Napi::Env env, Napi::Object exports) {
  exports.Set("listenTcp", Napi::Function::New(env, ListenTcp, "listenTcp"));
}

}  // namespace tcpproxy
