// The system's user and group databases, for `uid NAME` and `gid NAME`:
// getpwnam_r(3) and getgrnam_r(3), so that every source nsswitch.conf names
// (files, LDAP, systemd's dynamic users) answers, as it does for login(1).
// Node has no such lookup. Called by the master while it reads the config.
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "addon.h"

namespace tcpproxy {
namespace {

// The buffer the _r calls need, grown on ERANGE up to 1 MiB (a group with
// many members can need more than sysconf suggests).
constexpr size_t kMaxBuffer = 1 << 20;

size_t FirstBuffer(int name) {
  long n = sysconf(name);
  return n > 0 ? static_cast<size_t>(n) : 4096;
}

std::string NameArg(const Napi::CallbackInfo& info, const char* usage) {
  if (info.Length() < 1 || !info[0].IsString()) ThrowType(info.Env(), usage);
  return info[0].As<Napi::String>().Utf8Value();
}

// userByName(name) -> { uid, gid } | null (no such user); throws the errno
// as a SysError when the database cannot be read.
Napi::Value UserByName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = NameArg(info, "userByName(name)");
  std::vector<char> buf(FirstBuffer(_SC_GETPW_R_SIZE_MAX));
  for (;;) {
    passwd pw{};
    passwd* found = nullptr;
    int err = getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
    if (err == ERANGE && buf.size() < kMaxBuffer) {
      buf.resize(buf.size() * 2);
      continue;
    }
    // POSIX lets "not found" come back as ENOENT, ESRCH, EBADF or EPERM too.
    if (err == ENOENT || err == ESRCH || err == EBADF || err == EPERM) return env.Null();
    if (err != 0) ThrowErrno(env, "getpwnam_r", err);
    if (found == nullptr) return env.Null();
    Napi::Object o = Napi::Object::New(env);
    o.Set("uid", Napi::Number::New(env, static_cast<double>(pw.pw_uid)));
    o.Set("gid", Napi::Number::New(env, static_cast<double>(pw.pw_gid)));
    return o;
  }
}

// groupByName(name) -> gid | null (no such group); throws as userByName.
Napi::Value GroupByName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = NameArg(info, "groupByName(name)");
  std::vector<char> buf(FirstBuffer(_SC_GETGR_R_SIZE_MAX));
  for (;;) {
    group gr{};
    group* found = nullptr;
    int err = getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found);
    if (err == ERANGE && buf.size() < kMaxBuffer) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (err == ENOENT || err == ESRCH || err == EBADF || err == EPERM) return env.Null();
    if (err != 0) ThrowErrno(env, "getgrnam_r", err);
    if (found == nullptr) return env.Null();
    return Napi::Number::New(env, static_cast<double>(gr.gr_gid));
  }
}

}  // namespace

void InitUsers(Napi::Env env, Napi::Object exports) {
  exports.Set("userByName", Napi::Function::New(env, UserByName, "userByName"));
  exports.Set("groupByName", Napi::Function::New(env, GroupByName, "groupByName"));
}

}  // namespace tcpproxy
