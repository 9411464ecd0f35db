// syslog(3) for Node, which has no AF_UNIX datagram sockets. glibc keeps the
// ident pointer given to openlog(), so the string is kept alive here for as
// long as the log is open (process-wide by nature: syslog is per process).
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>

#include "addon.h"

namespace tcpproxy {
namespace {

std::mutex ident_lock;
std::string* ident_storage = nullptr;  // leaked on purpose: glibc may still point at it

// With no /dev/log (no syslog daemon), glibc tries to open and connect a
// socket again on every call: three failing system calls per line. Whether
// the socket exists is looked up at most once a second instead.
constexpr int64_t kRecheckNs = 1000000000;
std::atomic<int64_t> next_check_ns{0};
std::atomic<bool> dev_log{true};

bool DevLogPresent() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  int64_t now = static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  if (now >= next_check_ns.load(std::memory_order_relaxed)) {
    dev_log.store(access(_PATH_LOG, F_OK) == 0, std::memory_order_relaxed);
    next_check_ns.store(now + kRecheckNs, std::memory_order_relaxed);
  }
  return dev_log.load(std::memory_order_relaxed);
}

Napi::Value OpenLog(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[0].IsString()) ThrowType(info.Env(), "openLog(ident, facility)");
  int facility = IntArg(info, 1, "openLog(ident, facility): facility must be a number");
  std::lock_guard<std::mutex> g(ident_lock);
  // A new string each time: the old one may still be referenced until openlog returns.
  ident_storage = new std::string(info[0].As<Napi::String>().Utf8Value());
  // LOG_NDELAY: connect now, before any privilege change could make /dev/log unreachable.
  openlog(ident_storage->c_str(), LOG_PID | LOG_NDELAY, facility);
  return info.Env().Undefined();
}

Napi::Value Syslog(const Napi::CallbackInfo& info) {
  int priority = IntArg(info, 0, "syslog(priority, line): priority must be a number");
  if (info.Length() < 2 || !info[1].IsString()) ThrowType(info.Env(), "syslog(priority, line)");
  if (!DevLogPresent()) return info.Env().Undefined();
  std::string line = info[1].As<Napi::String>().Utf8Value();
  syslog(priority, "%s", line.c_str());
  return info.Env().Undefined();
}

}  // namespace

void InitSyslog(Napi::Env env, Napi::Object exports) {
  exports.Set("openLog", Napi::Function::New(env, OpenLog, "openLog"));
  exports.Set("syslog", Napi::Function::New(env, Syslog, "syslog"));
}

}  // namespace tcpproxy
