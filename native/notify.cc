// The systemd notification protocol (sd_notify(3)): one datagram to the
// AF_UNIX socket named by $NOTIFY_SOCKET, a path or, with a leading '@', an
// abstract name. Node has no AF_UNIX datagram sockets, so the send is here.
// It never blocks (MSG_DONTWAIT): a service manager that does not read must
// not stop the master; such a message is lost and the caller is told.
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <string>

#include "addon.h"

namespace tcpproxy {
namespace {

// Sends `text` to `path`; 0 or an errno (EINVAL for a name that does not fit).
int Notify(const std::string& path, const std::string& text) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) return EINVAL;
  memcpy(addr.sun_path, path.data(), path.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (path[0] == '@') {
    addr.sun_path[0] = '\0';  // abstract: the name is the bytes after the NUL, not NUL-terminated
  } else {
    len += 1;
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  ssize_t n =
      sendto(fd, text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len);
  int err = n < 0 ? errno : 0;
  close(fd);
  return err;
}

// sdNotify(path, text) -> undefined; throws the errno as a SysError.
Napi::Value SdNotify(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) ThrowType(info.Env(), "sdNotify(path, text)");
  int err = Notify(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::String>().Utf8Value());
  if (err != 0) ThrowErrno(info.Env(), "sendto", err);
  return info.Env().Undefined();
}

}  // namespace

void InitNotify(Napi::Env env, Napi::Object exports) {
  exports.Set("sdNotify", Napi::Function::New(env, SdNotify, "sdNotify"));
}

}  // namespace tcpproxy
