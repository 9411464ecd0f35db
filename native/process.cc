// Process-wide identity and image changes: dropPrivileges (setgroups(2),
// setresgid(2), setresuid(2); glibc applies them to every thread), nonDumpable
// (prctl(2) PR_SET_DUMPABLE, for workers) and, for inetd mode, execve(2) of a
// request handler with the client socket left on fds 0 and 1, in the
// service's sandbox (sandbox.cc).
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "addon.h"

namespace tcpproxy {
namespace {

// Order matters: groups and gid while still root, uid last; then prove the
// drop cannot be undone before anything touches the connection.
Napi::Value DropPrivileges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) ThrowType(env, "dropPrivileges(uid, gid)");
  uid_t uid = info[0].As<Napi::Number>().Uint32Value();
  gid_t gid = info[1].As<Napi::Number>().Uint32Value();
  if (uid == 0 || gid == 0) ThrowType(env, "dropPrivileges: refusing to drop to uid or gid 0");
  if (setgroups(0, nullptr) < 0) ThrowErrno(env, "setgroups", errno);
  if (setresgid(gid, gid, gid) < 0) ThrowErrno(env, "setresgid", errno);
  if (setresuid(uid, uid, uid) < 0) ThrowErrno(env, "setresuid", errno);
  // The checks: no call failed above, so a failure here is a PrivilegeCheckError
  // with what was observed, never an errno the kernel did not give.
  uid_t r, e, s;
  gid_t gr, ge, gs;
  if (getresuid(&r, &e, &s) < 0) ThrowErrno(env, "getresuid", errno);
  if (getresgid(&gr, &ge, &gs) < 0) ThrowErrno(env, "getresgid", errno);
  if (r != uid || e != uid || s != uid) ThrowCheck(env, "uids", {double(r), double(e), double(s)});
  if (gr != gid || ge != gid || gs != gid) ThrowCheck(env, "gids", {double(gr), double(ge), double(gs)});
  int groups = getgroups(0, nullptr);
  if (groups < 0) ThrowErrno(env, "getgroups", errno);
  if (groups != 0) ThrowCheck(env, "groups", {double(groups)});
  if (setresuid(0, 0, 0) == 0) ThrowCheck(env, "regain-uid", {});
  if (setresgid(0, 0, 0) == 0) ThrowCheck(env, "regain-gid", {});
  return env.Undefined();
}

// The kernel already clears the dumpable flag when the ids change (commit_creds,
// with fs.suid_dumpable 0), but not when there was no drop (started by a user)
// and not if fs.suid_dumpable is 1. Set it explicitly, then read it back: a
// non-dumpable process cannot be ptrace'd by its own uid, its /proc/PID files
// (mem, environ, fd, maps) belong to root, and it leaves no core. The flag
// survives until the next execve(2), which resets it for the handler.
Napi::Value NonDumpable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) ThrowErrno(env, "prctl", errno);
  int now = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
  if (now < 0) ThrowErrno(env, "prctl", errno);
  if (now != 0) ThrowCheck(env, "dumpable", {double(now)});
  return env.Undefined();
}

std::vector<std::string> StringArray(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsArray()) ThrowType(env, what);
  Napi::Array a = v.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsString()) ThrowType(env, what);
    out.push_back(e.As<Napi::String>().Utf8Value());
  }
  return out;
}

// CPU seconds this process has used so far (all threads), rounded up: they
// count against RLIMIT_CPU after the exec too.
rlim_t CpuSecondsUsed() {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) < 0) return 0;
  double s =
      static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  return static_cast<rlim_t>(s) + 1;
}

// execve(file, argv, envp, sandbox). Returns only by throwing. Before the
// call: a session of its own without a controlling terminal and
// PR_SET_NO_NEW_PRIVS (on this thread, the one that execs), O_NONBLOCK and
// FD_CLOEXEC cleared on 0-2 (the handler expects blocking stdio that
// survives the exec), every other fd marked close-on-exec, every signal back
// to SIG_DFL (Node ignores SIGPIPE; ignored signals survive execve), the
// rlimits (last: Node's threads still run until the exec, and a low
// RLIMIT_AS must not hit them for longer than that; RLIMIT_CPU gets the time
// used so far on top) and an empty signal mask. Node's other threads vanish
// with the exec.
Napi::Value Execve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsString()) ThrowType(env, "execve(file, argv, env, sandbox)");
  std::string file = info[0].As<Napi::String>().Utf8Value();
  std::vector<std::string> args = StringArray(env, info[1], "execve: argv must be an array of strings");
  std::vector<std::string> envs = StringArray(env, info[2], "execve: env must be an array of strings");
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  Sandbox sandbox = SandboxArg(env, info[3]);
  // These two can fail; nothing is changed for Node yet when they do.
  int err = OwnSession();
  if (err != 0) ThrowErrno(env, "setsid", err);
  err = ApplyNoNewPrivs(sandbox);
  if (err != 0) ThrowErrno(env, "prctl", err);

  // Node marks inherited stdio close-on-exec at start: the handler must keep 0-2.
  for (int fd = 0; fd <= 2; fd++) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    fcntl(fd, F_SETFD, 0);
  }
  // An error here cannot be reported any more usefully than by the exec
  // itself; CloexecFrom already falls back to fcntl per fd.
  CloexecFrom(3);
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sigaction(sig, &dfl, nullptr);
  }
  err = ApplyLimits(sandbox, CpuSecondsUsed());
  if (err != 0) ThrowErrno(env, "setrlimit", err);
  sigset_t none;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, nullptr);
  execve(file.c_str(), argv.data(), envp.data());
  ThrowErrno(env, "execve", errno);
}

}  // namespace

void InitProcess(Napi::Env env, Napi::Object exports) {
  exports.Set("dropPrivileges", Napi::Function::New(env, DropPrivileges, "dropPrivileges"));
  exports.Set("nonDumpable", Napi::Function::New(env, NonDumpable, "nonDumpable"));
  exports.Set("execve", Napi::Function::New(env, Execve, "execve"));
}

}  // namespace tcpproxy
