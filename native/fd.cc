// Small fd helpers: dupCloexec (take ownership of a libuv-owned socket fd),
// close (asserts fd > 2, as uv__close does), fdInfo (what kind of fd, for
// tests and for inetd detection). See fcntl(2), close(2), getsockname(2).
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addon.h"

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

// fdInfo(fd) -> { socket, nonblock, cloexec }
Napi::Value FdInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IntArg(info, 0, "fdInfo(fd): fd must be a number");
  struct stat st;
  if (fstat(fd, &st) < 0) ThrowErrno(env, "fstat", errno);
  int fl = fcntl(fd, F_GETFL);
  int fdfl = fcntl(fd, F_GETFD);
  if (fl < 0 || fdfl < 0) ThrowErrno(env, "fcntl", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("socket", Napi::Boolean::New(env, S_ISSOCK(st.st_mode)));
  o.Set("nonblock", Napi::Boolean::New(env, (fl & O_NONBLOCK) != 0));
  o.Set("cloexec", Napi::Boolean::New(env, (fdfl & FD_CLOEXEC) != 0));
  return o;
}

}  // namespace

void InitFd(Napi::Env env, Napi::Object exports) {
  exports.Set("dupCloexec", Napi::Function::New(env, DupCloexec, "dupCloexec"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("fdInfo", Napi::Function::New(env, FdInfo, "fdInfo"));
}

}  // namespace tcpproxy
