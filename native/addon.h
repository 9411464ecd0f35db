// Per-environment addon state and the registration hooks of each primitive.
// No static mutable state: everything lives in the Addon instance data.
#pragma once
#include <napi.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>

namespace tcpproxy {

constexpr int kAbiVersion = 15;

struct PumpState;  // pump.cc: live sessions and the idle pipe pool

struct Addon {
  Napi::FunctionReference sys_error;    // the SysError class of src/sys/errors.ts
  Napi::FunctionReference check_error;  // its PrivilegeCheckError
  PumpState* pump = nullptr;            // owned by pump.cc's env cleanup hook
  void* serve = nullptr;                // serve.cc's ServeState, owned by its cleanup hook
  void* reactor = nullptr;              // reactor.cc's epoll set, owned by its cleanup hook
  void* proxy = nullptr;                // proxy.cc's pending proxyRead calls, owned by its cleanup hook
  static Addon& From(Napi::Env env) { return *env.GetInstanceData<Addon>(); }
};

// errors.cc: the only place that builds and throws errors.
[[noreturn]] void ThrowErrno(Napi::Env env, const char* syscall, int err);
Napi::Value MakeErrno(Napi::Env env, const char* syscall, int err);
// A privilege drop whose calls succeeded but whose check failed: `check`
// names it (see PrivilegeCheck in src/sys/errors.ts), `observed` what was seen.
[[noreturn]] void ThrowCheck(Napi::Env env, const char* check, std::initializer_list<double> observed);
[[noreturn]] void ThrowType(Napi::Env env, const char* message);
int IntArg(const Napi::CallbackInfo& info, size_t i, const char* what);

// address.cc: an IP literal and a port as a socket address (false: not an
// IP literal); a socket address as text and port (false: not AF_INET or
// AF_INET6), an IPv4-mapped IPv6 address as IPv4 when `unmap`.
bool ParseIp(const std::string& text, int port, sockaddr_storage* ss, socklen_t* len);
bool IpText(const sockaddr_storage& ss, bool unmap, std::string* host, int* port, bool* v6);

// fd.cc: marks every fd >= first close-on-exec (close_range(2), or one
// fcntl(2) per fd on a kernel without it). Returns 0 or an errno.
int CloexecFrom(unsigned first);
// TCP keepalive on a socket (`keepalive yes`): the first probe after
// kKeepaliveIdleS idle seconds, then one every kKeepaliveIntervalS; a peer
// that answers none of kKeepaliveProbes is gone (about 7 minutes in all).
// Returns 0 or an errno.
constexpr int kKeepaliveIdleS = 300;
constexpr int kKeepaliveIntervalS = 30;
constexpr int kKeepaliveProbes = 4;
int Keepalive(int fd);
int KeepaliveOff(int fd);
// A socket accepted from a listening socket starts with the listener's
// keepalive options (SO_KEEPALIVE and the three timings): the fast path sets
// them once on its listeners, and spares every client its four setsockopt.

// sandbox.cc: what a handler or ACP gets before its exec (see Sandbox in
// src/table/service.ts): PR_SET_NO_NEW_PRIVS and up to four rlimits.
struct Sandbox {
  struct Limit {
    int resource;
    rlim_t value;
  };
  bool no_new_privs = true;
  int count = 0;
  Limit limits[4] = {};
};
// From the JS object; throws a TypeError when it is not one.
Sandbox SandboxArg(Napi::Env env, Napi::Value v);
// The rest are async-signal-safe and return 0 or an errno. ApplyLimits sets
// each limit as soft and hard limit, never above the current hard limit;
// `cpu_used` seconds are added to RLIMIT_CPU (time the process has used).
int ApplyLimits(const Sandbox& s, rlim_t cpu_used);
int ApplyNoNewPrivs(const Sandbox& s);
// A session of its own (setsid) and no controlling terminal.
int OwnSession();

// pump.cc: how a forwarded connection ended (see PumpResult in src/sys/native.ts).
struct PumpOutcome {
  const char* end = "eof";  // eof, idle-timeout, reset, error, aborted
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  double duration_ms = 0;
  bool copy = false;              // the read/write path moved the bytes
  const char* syscall = nullptr;  // for reset and error: the failed call
  int err = 0;
  const char* side = nullptr;  // "client", "server" or none
};
using PumpDone = std::function<void(const PumpOutcome&)>;
// Forwards client <-> server on the env's loop; owns both fds from now on,
// on every path. `registered`: both are in the reactor's set already (the
// fast path's sockets; see reactor.h), and non-blocking. `automatic`:
// splice-auto (pump.cc), else splice from the first byte (unless `copy`:
// read/write only). `done` runs once on
// the JS thread (never after env teardown). Returns 0 and the session's id,
// or an errno and, in `syscall`, the call it is of (epoll_ctl; epoll_create1
// when the set could not be made; pump: no loop or the env is going away).
int StartPump(Napi::Env env, int client, int server, uint64_t idle_ms, bool copy, bool automatic, bool registered,
              PumpDone done, uint64_t* id, const char** syscall = nullptr);
// Resets a live session; nothing once it has ended.
void AbortPump(Napi::Env env, uint64_t id);
// A live session's bytes so far, and how long it has been idle and open; false once it has ended.
struct PumpLive {
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  uint64_t idle_ms = 0;
  uint64_t age_ms = 0;
};
bool PumpSnapshot(Napi::Env env, uint64_t id, PumpLive* out);

void InitFd(Napi::Env env, Napi::Object exports);
void InitSyslog(Napi::Env env, Napi::Object exports);
void InitReactor(Napi::Env env, Napi::Object exports);
void InitPump(Napi::Env env, Napi::Object exports);
void InitProcess(Napi::Env env, Napi::Object exports);
void InitListen(Napi::Env env, Napi::Object exports);
void InitServe(Napi::Env env, Napi::Object exports);
void InitSpawn(Napi::Env env, Napi::Object exports);
void InitProxy(Napi::Env env, Napi::Object exports);
void InitNotify(Napi::Env env, Napi::Object exports);
void InitUsers(Napi::Env env, Napi::Object exports);

}  // namespace tcpproxy
