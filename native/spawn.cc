// spawnChild: starts a request handler or an access control program without
// forking the Node process: clone(CLONE_VM | CLONE_VFORK), as glibc's
// posix_spawn(3) does, so no page table is copied, with a child function of
// our own because posix_spawn cannot apply the sandbox (prctl, setrlimit).
// The child gets exactly fds 0, 1 and 2 (close-from 3), every signal at its
// default and an empty mask, a session and process group of its own without
// a controlling terminal, the service's sandbox (sandbox.cc), and SIGKILL as
// its parent-death signal: a worker that dies (SIGKILL, a crash) takes its
// handlers and ACPs with it, so that the places the master then gives back
// (limitsForget) are not still held by running programs. It is
// reaped through a pidfd polled on the loop (waitid(P_PIDFD)), so libuv's
// SIGCHLD handling, which waits only for its own children, is not disturbed.
// See clone(2), pidfd_open(2), waitid(2).
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <cstdlib>
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

// What the child needs, prepared by the parent (the child must not
// allocate: it shares the parent's memory until its execve).
struct ChildArgs {
  const char* file;
  char* const* argv;
  char* const* envp;
  int fds[3];  // the sources of fds 0, 1, 2; -1: /dev/null
  const Sandbox* sandbox;
  pid_t parent;            // the worker: the child ends if it is gone
  volatile int error = 0;  // set by the child when a step failed
};

// Closes every fd from 3 up: close_range(2), or on a kernel without it
// (before 5.9) each fd listed in /proc/self/fd, read again from the start
// after a batch that closed any.
int CloseFrom3() {
  if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0) return 0;
  if (errno != ENOSYS && errno != EINVAL) return errno;
  int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return errno;
  alignas(dirent64) char buf[4096];
  for (;;) {
    long n = syscall(SYS_getdents64, dir, buf, sizeof buf);
    if (n < 0) {
      int err = errno;
      close(dir);
      return err;
    }
    if (n == 0) break;
    bool closed = false;
    for (long off = 0; off < n;) {
      auto* d = reinterpret_cast<dirent64*>(buf + off);
      off += d->d_reclen;
      int fd = 0;
      const char* c = d->d_name;
      if (*c < '0' || *c > '9') continue;
      for (; *c >= '0' && *c <= '9'; c++) fd = fd * 10 + (*c - '0');
      if (fd >= 3 && fd != dir) {
        close(fd);
        closed = true;
      }
    }
    if (closed) lseek(dir, 0, SEEK_SET);
  }
  close(dir);
  return 0;
}

// The child, on its own stack: only async-signal-safe calls (other threads
// of the worker run on in the shared memory). A failed step leaves its errno
// for the parent, which is resumed once the child has exited or exec'd.
int ChildMain(void* p) {
  auto* a = static_cast<ChildArgs*>(p);
  // Dispositions first, while every signal is still blocked: a handler of
  // the worker must never run in the child.
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  }
  int err = 0;
  int src[3] = {a->fds[0], a->fds[1], a->fds[2]};
  // A source below 3 could be overwritten by an earlier dup2: moved up first
  // (the copy goes with the close-from-3 below).
  for (int& fd : src) {
    if (fd >= 0 && fd < 3 && (fd = fcntl(fd, F_DUPFD, 3)) < 0) goto fail;
  }
  for (int i = 0; i < 3; i++) {
    int fd = src[i];
    if (fd < 0 && (fd = open("/dev/null", i == 0 ? O_RDONLY : O_WRONLY)) < 0) goto fail;
    if (fd != i && dup2(fd, i) < 0) goto fail;
  }
  if ((err = CloseFrom3()) != 0) goto report;
  if ((err = OwnSession()) != 0) goto report;
  // SIGKILL when the thread that cloned us ends: the worker's JS thread, so
  // when the worker does. Kept across the execve (not across a set-user-ID
  // one, which no-new-privs prevents by default), not passed to the
  // program's own children. A parent that died before the prctl is not
  // ours any more (we were reparented): nothing would signal us then.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) goto fail;
  if (getppid() != a->parent) _exit(127);
  if ((err = ApplyLimits(*a->sandbox, 0)) != 0) goto report;
  if ((err = ApplyNoNewPrivs(*a->sandbox)) != 0) goto report;
  {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
  }
  execve(a->file, a->argv, a->envp);
fail:
  err = errno;
report:
  a->error = err;
  _exit(127);
}

// The child's stack: the calls above need little; mapped for each spawn.
constexpr size_t kChildStack = 128 * 1024;

// Starts the child; returns its pid, or -1 with the errno in *err.
pid_t StartChild(ChildArgs* a, int* err) {
  void* stack = mmap(nullptr, kChildStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    *err = errno;
    return -1;
  }
  sigset_t all;
  sigset_t old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = clone(ChildMain, static_cast<char*>(stack) + kChildStack, CLONE_VM | CLONE_VFORK | SIGCHLD, a);
  int clone_err = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  munmap(stack, kChildStack);
  if (pid < 0) {
    *err = clone_err;
    return -1;
  }
  if (a->error != 0) {
    // It has exited already (CLONE_VFORK resumed us at its _exit).
    waitpid(pid, nullptr, 0);
    *err = a->error;
    return -1;
  }
  return pid;
}

// spawnChild(file, argv, env, stdin, stdout, sandbox, onExit) -> { pid, stderr }:
// stdin and stdout are fds (-1: /dev/null); stderr is the read end of a new
// pipe (non-blocking, close-on-exec), the child's fd 2. onExit({code} |
// {signal} | {error}) runs once, when the child has been reaped.
Napi::Value SpawnChild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 7 || !info[0].IsString() || !info[6].IsFunction()) {
    ThrowType(env, "spawnChild(file, argv, env, stdin, stdout, sandbox, onExit)");
  }
  std::string file = info[0].As<Napi::String>().Utf8Value();
  std::vector<std::string> argv = Strings(env, info[1], "spawnChild: argv must be an array of strings");
  std::vector<std::string> envv = Strings(env, info[2], "spawnChild: env must be an array of strings");
  int in = IntArg(info, 3, "spawnChild: stdin must be a number");
  int out = IntArg(info, 4, "spawnChild: stdout must be a number");
  Sandbox sandbox = SandboxArg(env, info[5]);
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) ThrowType(env, "spawnChild: no event loop");

  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) < 0) ThrowErrno(env, "pipe2", errno);
  if (in >= 0) SetBlocking(in);
  if (out >= 0) SetBlocking(out);
  std::vector<char*> av = Pointers(argv);
  std::vector<char*> ev = Pointers(envv);
  ChildArgs args;
  args.file = file.c_str();
  args.argv = av.data();
  args.envp = ev.data();
  args.fds[0] = in;
  args.fds[1] = out;
  args.fds[2] = err_pipe[1];
  args.sandbox = &sandbox;
  args.parent = getpid();
  int rc = 0;
  pid_t pid = StartChild(&args, &rc);
  close(err_pipe[1]);
  if (pid < 0) {
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
  auto* c = new Child(env, info[6].As<Napi::Function>());
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
