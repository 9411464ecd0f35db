// spawnChild: starts a request handler or an access control program without
// forking the Node process: posix_spawn(3), which glibc implements with
// clone(CLONE_VM | CLONE_VFORK), so no page table is copied. The child gets
// exactly fds 0, 1 and 2 (close-from 3), every signal at its default and an
// empty mask, and a process group of its own. It is reaped through a pidfd
// polled on the loop (waitid(P_PIDFD)), so libuv's SIGCHLD handling, which
// waits only for its own children, is not disturbed. See posix_spawn(3),
// pidfd_open(2), waitid(2).
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <string>
#include <vector>

#include "addon.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace tcpproxy {
namespace {

struct Child {
  Napi::Env env;
  Napi::FunctionReference on_exit;
  Napi::AsyncContext async;
  uv_poll_t poll;
  int pidfd = -1;
  pid_t pid = 0;
  Child(Napi::Env e, Napi::Function f) : env(e), on_exit(Napi::Persistent(f)), async(e, "tcpproxy:spawn") {}
};

void OnChildClosed(uv_handle_t* h) {
  delete static_cast<Child*>(h->data);
}

void OnPidfd(uv_poll_t* h, int status, int) {
  auto* c = static_cast<Child*>(h->data);
  siginfo_t si{};
  int r = waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(c->pidfd), &si, WEXITED | WNOHANG);
  if (r == 0 && si.si_pid == 0 && status == 0) return;  // not yet: a spurious wake-up
  uv_poll_stop(h);
  close(c->pidfd);
  c->pidfd = -1;
  Napi::Env env = c->env;
  Napi::HandleScope scope(env);
  try {
    Napi::Object o = Napi::Object::New(env);
    if (r < 0) {
      o.Set("error", MakeErrno(env, "waitid", errno));
    } else if (si.si_code == CLD_EXITED) {
      o.Set("code", si.si_status);
    } else {
      o.Set("signal", si.si_status);
    }
    c->on_exit.MakeCallback(env.Global(), {o}, c->async);
  } catch (const Napi::Error& e) {
    napi_fatal_exception(env, e.Value());
  }
  uv_close(reinterpret_cast<uv_handle_t*>(h), OnChildClosed);
}

std::vector<std::string> Strings(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsArray()) ThrowType(env, what);
  Napi::Array a = v.As<Napi::Array>();
  std::vector<std::string> out;
  out.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsString()) ThrowType(env, what);
    out.push_back(e.As<Napi::String>().Utf8Value());
  }
  return out;
}

std::vector<char*> Pointers(std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (std::string& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// The file description is shared with the child: a program reading a socket
// on its stdin expects blocking reads, as it would get from inetd.
void SetBlocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

// spawnChild(file, argv, env, stdin, stdout, onExit) -> { pid, stderr }:
// stdin and stdout are fds (-1: /dev/null); stderr is the read end of a new
// pipe (non-blocking, close-on-exec), the child's fd 2. onExit({code} |
// {signal} | {error}) runs once, when the child has been reaped.
Napi::Value SpawnChild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[0].IsString() || !info[5].IsFunction()) {
    ThrowType(env, "spawnChild(file, argv, env, stdin, stdout, onExit)");
  }
  std::string file = info[0].As<Napi::String>().Utf8Value();
  std::vector<std::string> argv = Strings(env, info[1], "spawnChild: argv must be an array of strings");
  std::vector<std::string> envv = Strings(env, info[2], "spawnChild: env must be an array of strings");
  int in = IntArg(info, 3, "spawnChild: stdin must be a number");
  int out = IntArg(info, 4, "spawnChild: stdout must be a number");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) ThrowType(env, "spawnChild: no event loop");

  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) < 0) ThrowErrno(env, "pipe2", errno);
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  if (in >= 0) {
    SetBlocking(in);
    posix_spawn_file_actions_adddup2(&fa, in, 0);
  } else {
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  }
  if (out >= 0) {
    SetBlocking(out);
    posix_spawn_file_actions_adddup2(&fa, out, 1);
  } else {
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  }
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  sigset_t none;
  sigset_t all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  std::vector<char*> av = Pointers(argv);
  std::vector<char*> ev = Pointers(envv);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, file.c_str(), &fa, &attr, av.data(), ev.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(err_pipe[1]);
  if (rc != 0) {
    close(err_pipe[0]);
    ThrowErrno(env, "spawn", rc);
  }
  fcntl(err_pipe[0], F_SETFL, fcntl(err_pipe[0], F_GETFL) | O_NONBLOCK);
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    int e = errno;
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    close(err_pipe[0]);
    ThrowErrno(env, "pidfd_open", e);
  }
  auto* c = new Child(env, info[5].As<Napi::Function>());
  c->pid = pid;
  c->pidfd = pidfd;
  c->poll.data = c;
  int e = uv_poll_init(loop, &c->poll, pidfd);
  if (e == 0) {
    e = uv_poll_start(&c->poll, UV_READABLE, OnPidfd);
    if (e < 0) uv_close(reinterpret_cast<uv_handle_t*>(&c->poll), OnChildClosed);
  } else {
    delete c;
  }
  if (e < 0) {
    // Not reaped on the loop then: the child is killed and waited for now.
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    close(pidfd);
    close(err_pipe[0]);
    ThrowErrno(env, "uv_poll_start", -e);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, pid));
  o.Set("stderr", Napi::Number::New(env, err_pipe[0]));
  return o;
}

}  // namespace

void InitSpawn(Napi::Env env, Napi::Object exports) {
  exports.Set("spawnChild", Napi::Function::New(env, SpawnChild, "spawnChild"));
}

}  // namespace tcpproxy
