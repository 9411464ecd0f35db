// Small fd helpers: dupCloexec (take ownership of a libuv-owned socket fd),
// close (asserts fd > 2, as uv__close does), dupOnto, sockName (inetd and
// socket activation), setNonblock, cloexecFrom. See fcntl(2), close(2),
// dup2(2), getsockname(2), close_range(2).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "addon.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace tcpproxy {
namespace {

Napi::Value DupCloexec(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0, "dupCloexec(fd): fd must be a number");
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (nfd < 0) ThrowErrno(info.Env(), "fcntl", errno);
  return Napi::Number::New(info.Env(), nfd);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0, "close(fd): fd must be a number");
  if (fd <= 2) ThrowType(info.Env(), "close(fd): refusing to close stdio");
  // EINTR after close on Linux means the fd is gone anyway.
  if (close(fd) < 0 && errno != EINTR) ThrowErrno(info.Env(), "close", errno);
  return info.Env().Undefined();
}

// dupOnto(fd, target): dup2(2) onto 0, 1 or 2 only (inetd mode points them at /dev/null).
Napi::Value DupOnto(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0, "dupOnto(fd, target): fd must be a number");
  int target = IntArg(info, 1, "dupOnto(fd, target): target must be a number");
  if (target < 0 || target > 2) ThrowType(info.Env(), "dupOnto: target must be 0, 1 or 2");
  if (dup2(fd, target) < 0) ThrowErrno(info.Env(), "dup2", errno);
  return info.Env().Undefined();
}

Napi::Value AddressObject(Napi::Env env, const sockaddr_storage& ss) {
  std::string text;
  int port = 0;
  bool v6 = false;
  if (!IpText(ss, false, &text, &port, &v6)) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("address", Napi::String::New(env, text));
  o.Set("port", Napi::Number::New(env, port));
  return o;
}

// sockName(fd) -> { local: {address, port}, peer: {address, port} | null } or
// null when fd is not an IP socket. getsockname(2), getpeername(2).
Napi::Value SockName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IntArg(info, 0, "sockName(fd): fd must be a number");
  sockaddr_storage local = {}, peer = {};
  socklen_t len = sizeof local;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) < 0) {
    if (errno == ENOTSOCK || errno == EBADF) return env.Null();
    ThrowErrno(env, "getsockname", errno);
  }
  Napi::Value l = AddressObject(env, local);
  if (l.IsNull()) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("local", l);
  len = sizeof peer;
  o.Set("peer", getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) < 0 ? env.Null() : AddressObject(env, peer));
  int type = 0, listening = 0;
  len = sizeof type;
  getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
  len = sizeof listening;
  getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
  o.Set("stream", Napi::Boolean::New(env, type == SOCK_STREAM));
  o.Set("listening", Napi::Boolean::New(env, listening != 0));
  return o;
}

// setNonblock(fd): O_NONBLOCK back on a socket a child had on its stdio
// (libuv clears it in the child, on the file description both share).
Napi::Value SetNonblock(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0, "setNonblock(fd): fd must be a number");
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) ThrowErrno(info.Env(), "fcntl", errno);
  return info.Env().Undefined();
}

// cloexecFrom(first): close-on-exec on every fd >= first, so that nothing a
// parent leaked to tcpproxy reaches a worker or handler.
Napi::Value CloexecFromJs(const Napi::CallbackInfo& info) {
  int first = IntArg(info, 0, "cloexecFrom(first): first must be a number");
  if (first < 3) ThrowType(info.Env(), "cloexecFrom: first must be 3 or more");
  int err = CloexecFrom(static_cast<unsigned>(first));
  if (err != 0) ThrowErrno(info.Env(), "fcntl", err);
  return info.Env().Undefined();
}

// setKeepalive(fd, on = true): see Keepalive; off: SO_KEEPALIVE 0.
Napi::Value SetKeepaliveJs(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0, "setKeepalive(fd, on): fd must be a number");
  bool on = info.Length() < 2 || info[1].IsUndefined() || info[1].ToBoolean().Value();
  int err = on ? Keepalive(fd) : KeepaliveOff(fd);
  if (err != 0) ThrowErrno(info.Env(), "setsockopt", err);
  return info.Env().Undefined();
}

}  // namespace

int Keepalive(int fd) {
  int on = 1;
  int idle = kKeepaliveIdleS;
  int intvl = kKeepaliveIntervalS;
  int count = kKeepaliveProbes;
  if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) < 0) return errno;
  if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) < 0) return errno;
  if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) < 0) return errno;
  if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count) < 0) return errno;
  return 0;
}

int KeepaliveOff(int fd) {
  int off = 0;
  return setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &off, sizeof off) < 0 ? errno : 0;
}

int CloexecFrom(unsigned first) {
  if (syscall(SYS_close_range, first, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return 0;
  // ENOSYS (kernel < 5.11) or EINVAL (no CLOSE_RANGE_CLOEXEC): one fd at a time,
  // up to the fd limit. EBADF is a slot that is not open.
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > (1L << 20)) max = 1L << 20;
  for (long fd = first; fd < max; fd++) {
    int fl = fcntl(static_cast<int>(fd), F_GETFD);
    if (fl < 0) continue;
    if (!(fl & FD_CLOEXEC) && fcntl(static_cast<int>(fd), F_SETFD, fl | FD_CLOEXEC) < 0) return errno;
  }
  return 0;
}

void InitFd(Napi::Env env, Napi::Object exports) {
  exports.Set("dupCloexec", Napi::Function::New(env, DupCloexec, "dupCloexec"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("dupOnto", Napi::Function::New(env, DupOnto, "dupOnto"));
  exports.Set("setNonblock", Napi::Function::New(env, SetNonblock, "setNonblock"));
  exports.Set("cloexecFrom", Napi::Function::New(env, CloexecFromJs, "cloexecFrom"));
  exports.Set("sockName", Napi::Function::New(env, SockName, "sockName"));
  exports.Set("setKeepalive", Napi::Function::New(env, SetKeepaliveJs, "setKeepalive"));
}

}  // namespace tcpproxy
