// The sandbox of a request handler or access control program, applied by
// the process that is about to exec it: a session of its own without a
// controlling terminal (setsid(2)), resource limits (setrlimit(2), soft and
// hard alike so that the program cannot raise them again) and
// PR_SET_NO_NEW_PRIVS (prctl(2): setuid bits and file capabilities no longer
// raise privileges across execve). spawn.cc calls these in its cloned child,
// process.cc in inetd mode before execve. Everything but SandboxArg is
// async-signal-safe: plain system calls, no allocation, no lock.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>

#include "addon.h"

namespace tcpproxy {
namespace {

// The largest limit JS can give exactly (Number.MAX_SAFE_INTEGER).
constexpr double kMaxLimit = 9007199254740991.0;

struct Field {
  const char* name;
  int resource;
};
constexpr Field kFields[] = {
    {"rlimitNproc", RLIMIT_NPROC},
    {"rlimitAs", RLIMIT_AS},
    {"rlimitCpu", RLIMIT_CPU},
    {"rlimitNofile", RLIMIT_NOFILE},
};

}  // namespace

Sandbox SandboxArg(Napi::Env env, Napi::Value v) {
  const char* usage = "sandbox must be { noNewPrivs, rlimitNproc, rlimitAs, rlimitCpu, rlimitNofile }";
  if (!v.IsObject()) ThrowType(env, usage);
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value nnp = o.Get("noNewPrivs");
  if (!nnp.IsBoolean()) ThrowType(env, usage);
  Sandbox s;
  s.no_new_privs = nnp.As<Napi::Boolean>().Value();
  for (const Field& f : kFields) {
    Napi::Value x = o.Get(f.name);
    if (x.IsNull() || x.IsUndefined()) continue;
    if (!x.IsNumber()) ThrowType(env, usage);
    double d = x.As<Napi::Number>().DoubleValue();
    if (!(d >= 1 && d <= kMaxLimit) || std::floor(d) != d)
      ThrowType(env, "sandbox: a limit must be a whole number from 1 up");
    s.limits[s.count].resource = f.resource;
    s.limits[s.count].value = static_cast<rlim_t>(d);
    s.count++;
  }
  return s;
}

int ApplyLimits(const Sandbox& s, rlim_t cpu_used) {
  for (int i = 0; i < s.count; i++) {
    const Sandbox::Limit& l = s.limits[i];
    rlim_t v = l.value;
    if (l.resource == RLIMIT_CPU) v += cpu_used;
    // Never above the hard limit this process has: a service's limit can
    // only tighten what tcpproxy was given (raising it would need root).
    rlimit old{};
    if (getrlimit(l.resource, &old) < 0) return errno;
    if (old.rlim_max != RLIM_INFINITY && v > old.rlim_max) v = old.rlim_max;
    rlimit r{v, v};
    if (setrlimit(l.resource, &r) < 0) return errno;
  }
  return 0;
}

int ApplyNoNewPrivs(const Sandbox& s) {
  if (!s.no_new_privs) return 0;
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ? errno : 0;
}

int OwnSession() {
  // A fresh child is never a process group leader: setsid succeeds. In inetd
  // mode the process may lead its session already (inetd and systemd call
  // setsid) or only its process group (setsid fails with EPERM then).
  if (getsid(0) != getpid() && setsid() < 0 && errno != EPERM) return errno;
  // Still a controlling terminal (a session leader that had one, or a group
  // leader that could not start a session)? Then it is let go: /dev/tty is
  // the terminal itself, and ENXIO means there is none.
  int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return 0;
  // A session leader's TIOCNOTTY sends SIGHUP to the foreground group, which
  // may be this process: ignored for the moment.
  struct sigaction ign = {};
  struct sigaction old = {};
  ign.sa_handler = SIG_IGN;
  sigaction(SIGHUP, &ign, &old);
  int r = ioctl(fd, TIOCNOTTY);
  int err = errno;
  sigaction(SIGHUP, &old, nullptr);
  close(fd);
  return r < 0 ? err : 0;
}

}  // namespace tcpproxy
