// Access lists (allow/deny) for the fast path: the longest prefix that
// matches decides, a tie denies, no match refuses when there is an allow.
// An IPv4 client, and an IPv4-mapped IPv6 one, is matched against the IPv4
// prefixes only; a plain IPv6 client against the IPv6 ones. The same rules
// as src/table/access.ts (a differential test holds them together).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include <cmath>

#include "addon.h"
#include "limits.h"

namespace tcpproxy {

namespace {

const uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool IsMapped(const uint8_t key[16]) {
  return memcmp(key, kMappedPrefix, 12) == 0;
}

// The first `bits` bits of a and b are equal.
bool SamePrefix(const uint8_t* a, const uint8_t* b, int bits) {
  int whole = bits / 8;
  if (memcmp(a, b, whole) != 0) return false;
  int rest = bits % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

}  // namespace

void ClientKeyOf(const sockaddr_storage& ss, uint8_t out[16]) {
  memset(out, 0, 16);
  if (ss.ss_family == AF_INET) {
    memcpy(out, kMappedPrefix, 12);
    memcpy(out + 12, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, 4);
  } else if (ss.ss_family == AF_INET6) {
    memcpy(out, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, 16);
  }
}

bool ClientKey(const std::string& text, uint8_t out[16]) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (!ParseIp(text, 0, &ss, &len)) return false;
  ClientKeyOf(ss, out);
  return true;
}

const std::string* AccessTable::Check(const uint8_t key[16]) const {
  bool v4 = IsMapped(key);
  int best = -1;
  const std::string* verdict = nullptr;
  for (const AccessRule& r : rules) {
    if (r.v4 != v4) continue;
    const uint8_t* a = v4 ? key + 12 : key;
    const uint8_t* b = v4 ? r.addr + 12 : r.addr;
    if (r.bits < best || !SamePrefix(a, b, r.bits)) continue;
    if (r.bits > best) {
      best = r.bits;
      verdict = r.allow ? nullptr : &r.text;
    } else if (!r.allow) {
      verdict = &r.text;  // a tie: deny wins
    }
  }
  if (best >= 0) return verdict;
  return any_allow ? &no_allow : nullptr;
}

AccessTable ParseAccess(Napi::Env env, Napi::Value v) {
  AccessTable t;
  if (v.IsUndefined() || v.IsNull()) return t;
  if (!v.IsArray()) ThrowType(env, "access rules must be an array");
  Napi::Array arr = v.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsObject()) ThrowType(env, "access rule must be an object");
    Napi::Object o = e.As<Napi::Object>();
    Napi::Value allow = o.Get("allow");
    Napi::Value address = o.Get("address");
    Napi::Value bits = o.Get("bits");
    Napi::Value text = o.Get("text");
    if (!allow.IsBoolean() || !address.IsString() || !bits.IsNumber() || !text.IsString()) {
      ThrowType(env, "access rule: { allow, address, bits, text }");
    }
    AccessRule r;
    r.allow = allow.As<Napi::Boolean>().Value();
    std::string a = address.As<Napi::String>().Utf8Value();
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (!ParseIp(a, 0, &ss, &len)) ThrowType(env, "access rule: address must be an IP literal");
    ClientKeyOf(ss, r.addr);
    r.v4 = ss.ss_family == AF_INET;
    double b = bits.As<Napi::Number>().DoubleValue();
    if (!(b >= 0 && b <= (r.v4 ? 32 : 128)) || b != std::floor(b)) ThrowType(env, "access rule: bad bits");
    r.bits = static_cast<int>(b);
    r.text = text.As<Napi::String>().Utf8Value();
    if (r.allow) t.any_allow = true;
    t.rules.push_back(std::move(r));
  }
  return t;
}

namespace {

// accessCheck(rules, client) -> null or the refusing rule's text: the
// native matcher as JS can call it (the differential test, the JS path).
Napi::Value AccessCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AccessTable t = ParseAccess(env, info.Length() > 0 ? info[0] : env.Undefined());
  if (info.Length() < 2 || !info[1].IsString()) ThrowType(env, "accessCheck(rules, client)");
  uint8_t key[16];
  if (!ClientKey(info[1].As<Napi::String>().Utf8Value(), key))
    ThrowType(env, "accessCheck: client must be an IP literal");
  const std::string* why = t.Check(key);
  return why == nullptr ? env.Null() : Napi::String::New(env, *why);
}

}  // namespace

void InitAccess(Napi::Env env, Napi::Object exports) {
  exports.Set("accessCheck", Napi::Function::New(env, AccessCheck, "accessCheck"));
}

}  // namespace tcpproxy
