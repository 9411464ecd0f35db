// Errors crossing the boundary. Native code never writes message text: it
// hands (syscall, errno) to the SysError class injected from TypeScript.
#include "addon.h"

namespace tcpproxy {

Napi::Value MakeErrno(Napi::Env env, const char* syscall, int err) {
  Addon& addon = Addon::From(env);
  if (addon.sys_error.IsEmpty()) {
    Napi::Error e = Napi::Error::New(env, std::string(syscall) + " errno " + std::to_string(err));
    return e.Value();
  }
  return addon.sys_error.New({Napi::String::New(env, syscall), Napi::Number::New(env, err)});
}

void ThrowErrno(Napi::Env env, const char* syscall, int err) {
  throw Napi::Error(env, MakeErrno(env, syscall, err));
}

void ThrowCheck(Napi::Env env, const char* check, std::initializer_list<double> observed) {
  Addon& addon = Addon::From(env);
  Napi::Array values = Napi::Array::New(env, observed.size());
  uint32_t i = 0;
  for (double v : observed) values.Set(i++, Napi::Number::New(env, v));
  if (addon.check_error.IsEmpty()) {
    throw Napi::Error::New(env, std::string("privilege check failed: ") + check);
  }
  throw Napi::Error(env, addon.check_error.New({Napi::String::New(env, check), values}));
}

void ThrowType(Napi::Env env, const char* message) {
  throw Napi::TypeError::New(env, message);
}

int IntArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) ThrowType(info.Env(), what);
  return info[i].As<Napi::Number>().Int32Value();
}

}  // namespace tcpproxy
