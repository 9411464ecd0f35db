// Per-environment addon state and the registration hooks of each primitive.
// No static mutable state: everything lives in the Addon instance data.
#pragma once
#include <napi.h>

namespace tcpproxy {

constexpr int kAbiVersion = 1;

struct PumpState;  // pump.cc: live sessions and the idle pipe pool

struct Addon {
  Napi::FunctionReference sys_error;  // the SysError class of src/errors.ts
  PumpState* pump = nullptr;          // owned by pump.cc's env cleanup hook
  static Addon& From(Napi::Env env) { return *env.GetInstanceData<Addon>(); }
};

// errors.cc: the only place that builds and throws errors.
[[noreturn]] void ThrowErrno(Napi::Env env, const char* syscall, int err);
Napi::Value MakeErrno(Napi::Env env, const char* syscall, int err);
[[noreturn]] void ThrowType(Napi::Env env, const char* message);
int IntArg(const Napi::CallbackInfo& info, size_t i, const char* what);

void InitFd(Napi::Env env, Napi::Object exports);
void InitSyslog(Napi::Env env, Napi::Object exports);
void InitPump(Napi::Env env, Napi::Object exports);
void InitProcess(Napi::Env env, Napi::Object exports);

}  // namespace tcpproxy
