// Module entry: per-environment state, init(SysError, PrivilegeCheckError),
// and the primitives.
#include "addon.h"

#include "limits.h"

namespace tcpproxy {
namespace {

Napi::Value Init(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) ThrowType(info.Env(), "init(SysError, PrivilegeCheckError)");
  Addon& addon = Addon::From(info.Env());
  addon.sys_error = Napi::Persistent(info[0].As<Napi::Function>());
  if (info.Length() > 1 && info[1].IsFunction()) addon.check_error = Napi::Persistent(info[1].As<Napi::Function>());
  return info.Env().Undefined();
}

}  // namespace

Napi::Object Register(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new Addon());
  exports.Set("abiVersion", Napi::Number::New(env, kAbiVersion));
  exports.Set("init", Napi::Function::New(env, Init, "init"));
  InitFd(env, exports);
  InitSyslog(env, exports);
  InitProcess(env, exports);
  InitReactor(env, exports);
  InitPump(env, exports);
  InitListen(env, exports);
  InitServe(env, exports);
  InitSpawn(env, exports);
  InitProxy(env, exports);
  InitNotify(env, exports);
  InitUsers(env, exports);
  InitLimits(env, exports);
  InitAccess(env, exports);
  return exports;
}

}  // namespace tcpproxy

static Napi::Object RegisterModule(Napi::Env env, Napi::Object exports) {
  return tcpproxy::Register(env, exports);
}

NODE_API_MODULE(tcpproxy, RegisterModule)
