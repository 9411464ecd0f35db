// syslog for Node, which has no AF_UNIX datagram sockets: our own client of
// /dev/log, not syslog(3), because glibc's sends block when the syslog
// daemon stalls (a full receive queue), and a stalled daemon must not stop
// the master or a worker. Lines go out with MSG_DONTWAIT in the format
// syslog(3) uses (`<PRI>Mmm dd hh:mm:ss IDENT[PID]: MESSAGE`); a line that
// would block is dropped and counted, and the next line that goes out is
// preceded by one saying how many were lost. A refused or reset socket (the
// daemon restarted) is reconnected once per line; with no /dev/log at all
// the lines are dropped without a system call, rechecked once a second.
#include <errno.h>
#include <paths.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <mutex>
#include <string>

#include "addon.h"

namespace tcpproxy {
namespace {

constexpr int64_t kRecheckNs = 1000000000;

// Process-wide by nature (one log per process, as with openlog(3)); the
// mutex covers worker threads of Node that might log too.
struct Log {
  std::mutex lock;
  std::string ident = "tcpproxy";
  int facility = LOG_DAEMON;
  int fd = -1;
  bool stream = false;  // a stream socket: each line ends with a NUL, as syslog(3) frames it
  int64_t next_check_ns = 0;
  uint64_t dropped = 0;
};
Log g_log;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void Disconnect() {
  if (g_log.fd >= 0) close(g_log.fd);
  g_log.fd = -1;
}

// Connects to /dev/log (a datagram socket, or a stream one as some daemons
// have it); false when there is none, checked at most once a second.
bool Connect(bool force) {
  if (g_log.fd >= 0) return true;
  int64_t now = NowNs();
  if (!force && now < g_log.next_check_ns) return false;
  g_log.next_check_ns = now + kRecheckNs;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, _PATH_LOG, sizeof addr.sun_path - 1);
  for (int type : {SOCK_DGRAM, SOCK_STREAM}) {
    int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      g_log.fd = fd;
      g_log.stream = type == SOCK_STREAM;
      return true;
    }
    int err = errno;
    close(fd);
    if (err != EPROTOTYPE) return false;
  }
  return false;
}

std::string Format(int priority, const std::string& message) {
  char stamp[32] = "";
  time_t t = time(nullptr);
  tm local{};
  localtime_r(&t, &local);
  strftime(stamp, sizeof stamp, "%h %e %T", &local);
  int pri = (priority & LOG_PRIMASK) | (g_log.facility & LOG_FACMASK);
  return "<" + std::to_string(pri) + ">" + stamp + " " + g_log.ident + "[" + std::to_string(getpid()) + "]: " + message;
}

// One send that never blocks: true when the line went out.
bool SendOnce(const std::string& text) {
  size_t len = text.size() + (g_log.stream ? 1 : 0);  // c_str()'s NUL
  ssize_t n = send(g_log.fd, text.c_str(), len, MSG_DONTWAIT | MSG_NOSIGNAL);
  return n == static_cast<ssize_t>(len);
}

void Write(int priority, const std::string& message) {
  std::lock_guard<std::mutex> g(g_log.lock);
  if (!Connect(false)) {
    g_log.dropped++;
    return;
  }
  if (g_log.dropped > 0) {
    std::string note =
        Format(LOG_WARNING, std::to_string(g_log.dropped) + " log line(s) dropped: syslog did not take them");
    if (SendOnce(note)) g_log.dropped = 0;
  }
  std::string text = Format(priority, message);
  if (SendOnce(text)) return;
  int err = errno;
  if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
    g_log.dropped++;
    return;
  }
  // The daemon went away or restarted: connect again, once.
  Disconnect();
  if (Connect(true) && SendOnce(text)) return;
  g_log.dropped++;
}

Napi::Value OpenLog(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[0].IsString()) ThrowType(info.Env(), "openLog(ident, facility)");
  int facility = IntArg(info, 1, "openLog(ident, facility): facility must be a number");
  std::lock_guard<std::mutex> g(g_log.lock);
  g_log.ident = info[0].As<Napi::String>().Utf8Value();
  g_log.facility = facility;
  // Connect now, before any privilege change could make /dev/log unreachable.
  Disconnect();
  Connect(true);
  return info.Env().Undefined();
}

Napi::Value Syslog(const Napi::CallbackInfo& info) {
  int priority = IntArg(info, 0, "syslog(priority, line): priority must be a number");
  if (info.Length() < 2 || !info[1].IsString()) ThrowType(info.Env(), "syslog(priority, line)");
  Write(priority, info[1].As<Napi::String>().Utf8Value());
  return info.Env().Undefined();
}

// syslogDropped() -> lines dropped and not yet reported.
Napi::Value SyslogDropped(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> g(g_log.lock);
  return Napi::Number::New(info.Env(), static_cast<double>(g_log.dropped));
}

// syslogProbe() -> 0 when /dev/log takes a connection now, else the errno
// of the attempt (ENOENT: no socket there; ECONNREFUSED: nobody reads it).
// Leaves the log's own connection alone.
Napi::Value SyslogProbe(const Napi::CallbackInfo& info) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, _PATH_LOG, sizeof addr.sun_path - 1);
  int last = 0;
  for (int type : {SOCK_DGRAM, SOCK_STREAM}) {
    int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return Napi::Number::New(info.Env(), errno);
    int r = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    last = r == 0 ? 0 : errno;
    close(fd);
    if (last != EPROTOTYPE) break;
  }
  return Napi::Number::New(info.Env(), last);
}

}  // namespace

void InitSyslog(Napi::Env env, Napi::Object exports) {
  exports.Set("openLog", Napi::Function::New(env, OpenLog, "openLog"));
  exports.Set("syslog", Napi::Function::New(env, Syslog, "syslog"));
  exports.Set("syslogDropped", Napi::Function::New(env, SyslogDropped, "syslogDropped"));
  exports.Set("syslogProbe", Napi::Function::New(env, SyslogProbe, "syslogProbe"));
}

}  // namespace tcpproxy
