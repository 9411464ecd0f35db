// The PROXY protocol (proxy.h): the v1 and v2 parser, the builder, the
// reader that takes a header off a socket and not a byte more, and their JS
// bindings (proxyParse, proxyBuild, proxyRead). proxyRead polls the socket on
// Node's loop (uv_poll + uv_timer), as serve.cc's header reads do, and
// calls back once. See haproxy's doc/proxy-protocol.txt, recv(2).
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "addon.h"

namespace tcpproxy {

namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr uint8_t kV2Signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr size_t kV2Fixed = 16;  // signature, ver_cmd, fam, length
constexpr int kV2Local = 0;
constexpr int kV2Proxy = 1;
constexpr int kFamUnspec = 0;
constexpr int kFamInet = 1;
constexpr int kFamInet6 = 2;
constexpr int kFamUnix = 3;
constexpr int kTransportStream = 1;
constexpr int kTransportDgram = 2;
// The v2 address block of each family: addresses, then the two ports.
constexpr size_t kV2Inet = 12;
constexpr size_t kV2Inet6 = 36;
constexpr size_t kV2Unix = 216;
// The longest text of an address in a v1 line (inet_pton accepts no more).
constexpr size_t kV1Inet = 15;   // 255.255.255.255
constexpr size_t kV1Inet6 = 45;  // ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255
constexpr size_t kV1Port = 5;

std::string ErrName(int err) {
  const char* n = strerrorname_np(err);
  return n != nullptr ? n : "E" + std::to_string(err);
}

ProxyParse Invalid(std::string* why, std::string text) {
  *why = std::move(text);
  return ProxyParse::kInvalid;
}

ProxyParse MalformedV1(std::string* why, const char* detail) {
  return Invalid(why, std::string("malformed PROXY v1 header: ") + detail);
}

// A v1 port, all of it (`whole`) or the start of one.
bool V1Port(std::string_view s, bool whole, int* port) {
  if (s.size() > kV1Port || (whole && s.empty())) return false;
  if (s.find_first_not_of("0123456789") != std::string_view::npos) return false;
  int v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  *port = v;
  return v <= 65535;
}

// A v1 address of `family`, all of it (into `ss`, port 0) or the start of one.
bool V1Address(std::string_view s, bool whole, int family, sockaddr_storage* ss) {
  bool v4 = family == AF_INET;
  if (s.size() > (v4 ? kV1Inet : kV1Inet6)) return false;
  if (s.find_first_not_of(v4 ? "0123456789." : "0123456789abcdefABCDEF:.") != std::string_view::npos) return false;
  if (!whole) return true;
  socklen_t len = 0;
  return ParseIp(std::string(s), 0, ss, &len) && ss->ss_family == family;
}

void SetPort(sockaddr_storage* ss, int port) {
  uint16_t p = htons(static_cast<uint16_t>(port));
  if (ss->ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in*>(ss)->sin_port = p;
  } else {
    reinterpret_cast<sockaddr_in6*>(ss)->sin6_port = p;
  }
}

// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN ...\r\n`, at
// most 107 bytes. The header ends at the first CRLF, so without one every
// byte so far is the header's: kNeedMore as long as they can still begin a
// valid line (each field checked as far as it goes), so garbage is refused
// as soon as it shows, not after 107 bytes or the timeout.
ProxyParse ParseV1(const uint8_t* data, size_t len, ProxyHeader* out, std::string* why) {
  std::string_view text(reinterpret_cast<const char*>(data), std::min(len, kProxyV1Max));
  size_t crlf = text.find("\r\n");
  bool complete = crlf != std::string_view::npos;
  if (!complete && len >= kProxyV1Max) return MalformedV1(why, "no CRLF within 107 bytes");
  std::string_view line = complete ? text.substr(0, crlf) : text;
  // A CR last may be the start of the CRLF: what comes before must then be a whole line.
  bool whole = complete;
  if (!complete && !line.empty() && line.back() == '\r') {
    line.remove_suffix(1);
    whole = true;
  }
  if (line.size() < kV1Prefix.size()) return ProxyParse::kNeedMore;  // a start of "PROXY " (the caller checked)
  line.remove_prefix(kV1Prefix.size());

  // UNKNOWN: anything may follow, up to the CRLF; the addresses are not for us.
  if (line.substr(0, 7) == "UNKNOWN") {
    if (!complete) return ProxyParse::kNeedMore;
    out->version = 1;
    out->length = crlf + 2;
    out->local = true;
    return ProxyParse::kOk;
  }
  std::vector<std::string_view> fields;
  for (size_t start = 0;;) {
    size_t sp = line.find(' ', start);
    fields.push_back(line.substr(start, sp == std::string_view::npos ? std::string_view::npos : sp - start));
    if (sp == std::string_view::npos) break;
    start = sp + 1;
  }
  std::string_view proto = fields[0];
  if (!whole && fields.size() == 1) {
    for (std::string_view p : {"TCP4", "TCP6", "UNKNOWN"}) {
      if (p.substr(0, proto.size()) == proto) return ProxyParse::kNeedMore;
    }
    return MalformedV1(why, "bad protocol");
  }
  if (proto != "TCP4" && proto != "TCP6") return MalformedV1(why, "bad protocol");
  if (fields.size() > 5) return MalformedV1(why, "too many fields");
  if (whole && fields.size() < 5) return MalformedV1(why, "missing fields");
  int family = proto == "TCP4" ? AF_INET : AF_INET6;
  sockaddr_storage src{};
  sockaddr_storage dst{};
  int sport = 0;
  int dport = 0;
  for (size_t i = 1; i < fields.size(); i++) {
    bool all = whole || i + 1 < fields.size();  // else the field goes on in bytes to come
    std::string_view f = fields[i];
    switch (i) {
      case 1:
        if (!V1Address(f, all, family, &src)) return MalformedV1(why, "bad source address");
        break;
      case 2:
        if (!V1Address(f, all, family, &dst)) return MalformedV1(why, "bad destination address");
        break;
      case 3:
        if (!V1Port(f, all, &sport)) return MalformedV1(why, "bad source port");
        break;
      default:
        if (!V1Port(f, all, &dport)) return MalformedV1(why, "bad destination port");
        break;
    }
  }
  if (!complete) return ProxyParse::kNeedMore;
  SetPort(&src, sport);
  SetPort(&dst, dport);
  out->version = 1;
  out->length = crlf + 2;
  out->local = false;
  out->source = src;
  out->destination = dst;
  return ProxyParse::kOk;
}

// The 16 fixed bytes are checked as they come, so a bad version, command or
// length is refused before the rest of the header is waited for.
ProxyParse ParseV2(const uint8_t* data, size_t len, ProxyHeader* out, std::string* why) {
  if (len < 13) return ProxyParse::kNeedMore;
  int version = data[12] >> 4;
  int command = data[12] & 0x0f;
  if (version != 2) return Invalid(why, "PROXY v2 header: unknown version " + std::to_string(version));
  if (command != kV2Local && command != kV2Proxy) {
    return Invalid(why, "PROXY v2 header: unknown command " + std::to_string(command));
  }
  if (len < 14) return ProxyParse::kNeedMore;
  int family = data[13] >> 4;
  int transport = data[13] & 0x0f;
  // LOCAL ignores the family byte; with PROXY, values the spec does not
  // define must be refused by a receiver.
  if (command == kV2Proxy && family > kFamUnix) {
    return Invalid(why, "PROXY v2 header: unknown address family " + std::to_string(family));
  }
  if (command == kV2Proxy && transport > kTransportDgram) {
    return Invalid(why, "PROXY v2 header: unknown transport " + std::to_string(transport));
  }
  if (len < kV2Fixed) return ProxyParse::kNeedMore;
  size_t block = (static_cast<size_t>(data[14]) << 8) | data[15];
  size_t total = kV2Fixed + block;
  if (total > kProxyMaxHeader) {
    return Invalid(why, "PROXY header over " + std::to_string(kProxyMaxHeader) + " bytes");
  }
  if (command == kV2Proxy) {
    size_t need = family == kFamInet ? kV2Inet : family == kFamInet6 ? kV2Inet6 : family == kFamUnix ? kV2Unix : 0;
    if (block < need) return Invalid(why, "PROXY v2 header: address block too short");
  }
  if (len < total) return ProxyParse::kNeedMore;
  out->version = 2;
  out->length = total;  // the TLVs after the addresses are skipped
  // LOCAL is a connection the balancer made itself (a health check): the
  // real peer is the client. UNSPEC and UNIX carry no IP address to put in
  // its place, and a DGRAM (or UNSPEC) transport describes a flow that is
  // not this TCP connection: the header is accepted (the sender did speak
  // the protocol) and the real peer kept.
  if (command == kV2Local || (family != kFamInet && family != kFamInet6) || transport != kTransportStream) {
    out->local = true;
    return ProxyParse::kOk;
  }
  const uint8_t* a = data + kV2Fixed;
  out->local = false;
  out->source = sockaddr_storage{};
  out->destination = sockaddr_storage{};
  if (family == kFamInet) {
    auto* s = reinterpret_cast<sockaddr_in*>(&out->source);
    auto* d = reinterpret_cast<sockaddr_in*>(&out->destination);
    s->sin_family = d->sin_family = AF_INET;
    memcpy(&s->sin_addr, a, 4);
    memcpy(&d->sin_addr, a + 4, 4);
    memcpy(&s->sin_port, a + 8, 2);  // both in network order, as on the wire
    memcpy(&d->sin_port, a + 10, 2);
  } else {
    auto* s = reinterpret_cast<sockaddr_in6*>(&out->source);
    auto* d = reinterpret_cast<sockaddr_in6*>(&out->destination);
    s->sin6_family = d->sin6_family = AF_INET6;
    memcpy(&s->sin6_addr, a, 16);
    memcpy(&d->sin6_addr, a + 16, 16);
    memcpy(&s->sin6_port, a + 32, 2);
    memcpy(&d->sin6_port, a + 34, 2);
  }
  return ProxyParse::kOk;
}

// An IPv4-mapped IPv6 address as IPv4; anything else as it is.
sockaddr_storage Unmapped(const sockaddr_storage& ss) {
  if (ss.ss_family != AF_INET6) return ss;
  auto* a6 = reinterpret_cast<const sockaddr_in6*>(&ss);
  if (!IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) return ss;
  sockaddr_storage out{};
  auto* a4 = reinterpret_cast<sockaddr_in*>(&out);
  a4->sin_family = AF_INET;
  a4->sin_port = a6->sin6_port;
  memcpy(&a4->sin_addr, &a6->sin6_addr.s6_addr[12], 4);
  return out;
}

sockaddr_storage Mapped(const sockaddr_storage& ss) {
  if (ss.ss_family != AF_INET) return ss;
  auto* a4 = reinterpret_cast<const sockaddr_in*>(&ss);
  sockaddr_storage out{};
  auto* a6 = reinterpret_cast<sockaddr_in6*>(&out);
  a6->sin6_family = AF_INET6;
  a6->sin6_port = a4->sin_port;
  a6->sin6_addr.s6_addr[10] = a6->sin6_addr.s6_addr[11] = 0xff;
  memcpy(&a6->sin6_addr.s6_addr[12], &a4->sin_addr, 4);
  return out;
}

bool IsIp(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
}

}  // namespace

ProxyParse ParseProxyHeader(const uint8_t* data, size_t len, ProxyHeader* out, std::string* why) {
  if (len == 0) return ProxyParse::kNeedMore;
  // The two starts differ in their first byte ('P', CR): at most one matches.
  if (memcmp(data, kV2Signature, std::min(len, sizeof kV2Signature)) == 0) return ParseV2(data, len, out, why);
  if (memcmp(data, kV1Prefix.data(), std::min(len, kV1Prefix.size())) == 0) return ParseV1(data, len, out, why);
  return Invalid(why, "no PROXY header");
}

// Addresses that are not IP (not possible from the JS binding, which takes
// IP literals only) give the header that says "no address": v1 UNKNOWN, v2
// LOCAL; the receiver then keeps its real peer.
std::string BuildProxyHeader(int version, const sockaddr_storage& source, const sockaddr_storage& destination) {
  sockaddr_storage src = Unmapped(source);
  sockaddr_storage dst = Unmapped(destination);
  bool ip = IsIp(src) && IsIp(dst);
  if (ip && src.ss_family != dst.ss_family) {
    src = Mapped(src);
    dst = Mapped(dst);
  }
  bool v6 = src.ss_family == AF_INET6;
  if (version == 1) {
    if (!ip) return "PROXY UNKNOWN\r\n";
    std::string shost, dhost;
    int sport = 0;
    int dport = 0;
    bool is_v6 = false;
    IpText(src, false, &shost, &sport, &is_v6);
    IpText(dst, false, &dhost, &dport, &is_v6);
    return std::string("PROXY ") + (v6 ? "TCP6 " : "TCP4 ") + shost + " " + dhost + " " + std::to_string(sport) + " " +
           std::to_string(dport) + "\r\n";
  }
  std::string h(reinterpret_cast<const char*>(kV2Signature), sizeof kV2Signature);
  if (!ip) {
    h += std::string("\x20\x00\x00\x00", 4);  // LOCAL, UNSPEC, no address block
    return h;
  }
  size_t block = v6 ? kV2Inet6 : kV2Inet;
  h += static_cast<char>(0x20 | kV2Proxy);
  h += static_cast<char>(((v6 ? kFamInet6 : kFamInet) << 4) | kTransportStream);
  h += static_cast<char>(block >> 8);
  h += static_cast<char>(block & 0xff);
  if (v6) {
    auto* s = reinterpret_cast<const sockaddr_in6*>(&src);
    auto* d = reinterpret_cast<const sockaddr_in6*>(&dst);
    h.append(reinterpret_cast<const char*>(&s->sin6_addr), 16);
    h.append(reinterpret_cast<const char*>(&d->sin6_addr), 16);
    h.append(reinterpret_cast<const char*>(&s->sin6_port), 2);
    h.append(reinterpret_cast<const char*>(&d->sin6_port), 2);
  } else {
    auto* s = reinterpret_cast<const sockaddr_in*>(&src);
    auto* d = reinterpret_cast<const sockaddr_in*>(&dst);
    h.append(reinterpret_cast<const char*>(&s->sin_addr), 4);
    h.append(reinterpret_cast<const char*>(&d->sin_addr), 4);
    h.append(reinterpret_cast<const char*>(&s->sin_port), 2);
    h.append(reinterpret_cast<const char*>(&d->sin_port), 2);
  }
  return h;
}

// Peeks at what is there (up to the most a header can still need), parses
// it after the bytes already taken, and only then takes bytes: all of them
// while they are a valid beginning (no CRLF yet, a v2 header short of its
// length), exactly the rest of the header once it is complete. Taking the
// beginning, rather than peeking again from the start each time, matters on
// a level-triggered poll: bytes left in the queue would make the socket
// readable again at once, and the loop would spin until the rest came.
ProxyParse ProxyReader::Step(int fd, ProxyHeader* out, std::string* why) {
  uint8_t buf[kProxyMaxHeader];
  for (;;) {
    if (have_.size() >= kProxyMaxHeader) {
      return Invalid(why, "PROXY header over " + std::to_string(kProxyMaxHeader) + " bytes");
    }
    ssize_t n = recv(fd, buf, kProxyMaxHeader - have_.size(), MSG_PEEK);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return ProxyParse::kNeedMore;
      return Invalid(why, "recv " + ErrName(errno));
    }
    if (n == 0) return Invalid(why, "closed before the end of the PROXY header");
    std::string data = have_;
    data.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
    ProxyParse r = ParseProxyHeader(reinterpret_cast<const uint8_t*>(data.data()), data.size(), out, why);
    if (r == ProxyParse::kInvalid) return r;
    // kNeedMore: all that was peeked; kOk: what is left of the header (the
    // bytes after it stay in the socket for whoever reads next).
    size_t take = r == ProxyParse::kOk ? out->length - have_.size() : static_cast<size_t>(n);
    while (take > 0) {
      ssize_t got = recv(fd, buf, take, 0);
      if (got < 0 && errno == EINTR) continue;
      // The bytes were peeked and only this reader takes from the socket: a
      // failure or a short read here is an error of the socket itself.
      if (got < 0) return Invalid(why, "recv " + ErrName(errno));
      if (got == 0) return Invalid(why, "closed before the end of the PROXY header");
      have_.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(got));
      take -= static_cast<size_t>(got);
    }
    return r;
  }
}

namespace {

// ---------------------------------------------------------------- JS API

bool EndpointArg(Napi::Value v, sockaddr_storage* ss) {
  if (!v.IsObject()) return false;
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value address = o.Get("address");
  Napi::Value port = o.Get("port");
  if (!address.IsString() || !port.IsNumber()) return false;
  double p = port.As<Napi::Number>().DoubleValue();
  if (!(p >= 0 && p <= 65535) || p != std::floor(p)) return false;
  socklen_t len = 0;
  return ParseIp(address.As<Napi::String>().Utf8Value(), static_cast<int>(p), ss, &len);
}

Napi::Value Endpoint(Napi::Env env, const sockaddr_storage& ss) {
  std::string host;
  int port = 0;
  bool v6 = false;
  if (!IpText(ss, true, &host, &port, &v6)) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("address", host);
  o.Set("port", port);
  return o;
}

// A ProxyParsed of src/sys/native.ts.
Napi::Object Parsed(Napi::Env env, ProxyParse r, const ProxyHeader& h, const std::string& why) {
  Napi::Object o = Napi::Object::New(env);
  if (r == ProxyParse::kNeedMore) {
    o.Set("status", "more");
  } else if (r == ProxyParse::kInvalid) {
    o.Set("status", "invalid");
    o.Set("reason", why);
  } else {
    o.Set("status", "ok");
    o.Set("version", h.version);
    o.Set("length", static_cast<double>(h.length));
    o.Set("local", h.local);
    o.Set("source", h.local ? env.Null() : Endpoint(env, h.source));
    o.Set("destination", h.local ? env.Null() : Endpoint(env, h.destination));
  }
  return o;
}

// proxyParse(buf) -> ProxyParsed.
Napi::Value ProxyParseJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowType(env, "proxyParse(buf): buf must be a Buffer");
  }
  Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
  ProxyHeader h;
  std::string why;
  ProxyParse r = ParseProxyHeader(buf.Data(), buf.ElementLength(), &h, &why);
  return Parsed(env, r, h, why);
}

// proxyBuild(version, source, destination) -> Buffer.
Napi::Value ProxyBuildJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "proxyBuild(version, source, destination): version 1 or 2, { address: IP literal, port }";
  if (info.Length() < 3 || !info[0].IsNumber()) ThrowType(env, usage);
  double version = info[0].As<Napi::Number>().DoubleValue();
  if (version != 1 && version != 2) ThrowType(env, usage);
  sockaddr_storage src{};
  sockaddr_storage dst{};
  if (!EndpointArg(info[1], &src) || !EndpointArg(info[2], &dst)) ThrowType(env, usage);
  std::string h = BuildProxyHeader(static_cast<int>(version), src, dst);
  return Napi::Buffer<char>::Copy(env, h.data(), h.size());
}

struct ReadState;

// One proxyRead: its handles live until both close callbacks have run.
struct PendingRead {
  ReadState* st = nullptr;
  Napi::Env env;
  Napi::FunctionReference done;
  std::unique_ptr<Napi::AsyncContext> async;
  uv_poll_t poll;
  uv_timer_t timer;
  int fd = -1;
  int open_handles = 0;
  bool finished = false;  // done has been called, or never will be
  // The first Step (in proxyRead itself) found the end: it is delivered
  // from the timer, so `done` never runs inside the call that started it.
  bool early = false;
  ProxyParse result = ProxyParse::kNeedMore;
  ProxyHeader header;
  std::string why;
  ProxyReader reader;
  explicit PendingRead(Napi::Env e) : env(e) {}
};

// The reads not finished yet, for the environment's teardown.
struct ReadState {
  std::unordered_set<PendingRead*> live;
};

void OnReadClosed(uv_handle_t* h) {
  auto* r = static_cast<PendingRead*>(h->data);
  if (--r->open_handles > 0) return;
  delete r;
}

// uv_close takes the fd out of epoll at once: the handles are closed before
// `done` runs, so the caller may close the fd (or pass it on) from `done`.
void CloseRead(PendingRead* r) {
  r->finished = true;
  r->st->live.erase(r);
  uv_timer_stop(&r->timer);
  uv_close(reinterpret_cast<uv_handle_t*>(&r->poll), OnReadClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&r->timer), OnReadClosed);
}

// Calls back with a ProxyParsed, or { status: 'timeout' } when `timeout`.
void Finish(PendingRead* r, bool timeout) {
  if (r->finished) return;
  CloseRead(r);
  Napi::Env env = r->env;
  Napi::HandleScope scope(env);
  try {
    Napi::Object o;
    if (timeout) {
      o = Napi::Object::New(env);
      o.Set("status", "timeout");
    } else {
      o = Parsed(env, r->result, r->header, r->why);
    }
    r->done.MakeCallback(env.Global(), {o}, *r->async);
  } catch (const Napi::Error& e) {
    napi_fatal_exception(env, e.Value());
  }
  r->done.Reset();
  r->async.reset();
}

void OnReadable(uv_poll_t* h, int status, int) {
  auto* r = static_cast<PendingRead*>(h->data);
  if (r->finished) return;
  r->result = r->reader.Step(r->fd, &r->header, &r->why);
  // A poll error (EPOLLERR, which libuv reports as UV_EBADF and stops the
  // handle for): the bytes that came before it were taken by that Step; a
  // second one gets the socket's error from recv (a reset: ECONNRESET).
  if (r->result == ProxyParse::kNeedMore && status < 0) r->result = r->reader.Step(r->fd, &r->header, &r->why);
  if (r->result == ProxyParse::kNeedMore && status < 0) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err == 0) err = -status;
    r->result = ProxyParse::kInvalid;
    r->why = "uv_poll " + ErrName(err);
  }
  if (r->result != ProxyParse::kNeedMore) Finish(r, false);
}

void OnReadTimer(uv_timer_t* t) {
  auto* r = static_cast<PendingRead*>(t->data);
  Finish(r, !r->early);
}

// proxyRead(fd, timeoutMs, done): see src/sys/native.ts. The fd is never
// closed here; it is left non-blocking.
Napi::Value ProxyReadJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "proxyRead(fd, timeoutMs, done)";
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsFunction()) {
    ThrowType(env, usage);
  }
  double fd_arg = info[0].As<Napi::Number>().DoubleValue();
  double timeout = info[1].As<Napi::Number>().DoubleValue();
  // fd 0 is the client in inetd mode.
  if (!(fd_arg >= 0 && fd_arg <= INT32_MAX) || fd_arg != std::floor(fd_arg)) {
    ThrowType(env, "proxyRead: fd must be a descriptor number");
  }
  if (!(timeout >= 0 && timeout <= 0x7fffffff)) ThrowType(env, "proxyRead: timeoutMs must be a number of ms >= 0");
  auto* st = static_cast<ReadState*>(Addon::From(env).proxy);
  if (st == nullptr) ThrowType(env, "proxyRead: the addon is shutting down");
  int fd = static_cast<int>(fd_arg);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) ThrowErrno(env, "fcntl", errno);
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) ThrowType(env, "proxyRead: no event loop");

  auto* r = new PendingRead(env);
  r->st = st;
  r->fd = fd;
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  r->open_handles = 1;
  int err = uv_poll_init(loop, &r->poll, fd);
  if (err < 0) {
    r->finished = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&r->timer), OnReadClosed);
    ThrowErrno(env, "uv_poll_init", -err);
  }
  r->poll.data = r;
  r->open_handles = 2;
  r->done = Napi::Persistent(info[2].As<Napi::Function>());
  r->async = std::make_unique<Napi::AsyncContext>(env, "tcpproxy:proxyRead");
  st->live.insert(r);
  // The header may be there already (a client that wrote it with its
  // connect): one Step now, and no poll at all when it settles the matter.
  r->result = r->reader.Step(fd, &r->header, &r->why);
  if (r->result != ProxyParse::kNeedMore) {
    r->early = true;
    uv_timer_start(&r->timer, OnReadTimer, 0, 0);
    return env.Undefined();
  }
  err = uv_poll_start(&r->poll, UV_READABLE, OnReadable);
  if (err < 0) {
    CloseRead(r);
    ThrowErrno(env, "uv_poll_start", -err);
  }
  uv_timer_start(&r->timer, OnReadTimer, static_cast<uint64_t>(std::ceil(timeout)), 0);
  return env.Undefined();
}

// Environment teardown: no JS any more. Pending reads close their handles
// (their close callbacks only free memory) and never call back; their fds
// are the caller's, left open.
void CleanupProxy(void* arg) {
  Addon* addon = static_cast<Addon*>(arg);
  auto* st = static_cast<ReadState*>(addon->proxy);
  if (st == nullptr) return;
  addon->proxy = nullptr;
  std::vector<PendingRead*> live(st->live.begin(), st->live.end());
  for (PendingRead* r : live) {
    CloseRead(r);
    r->done.Reset();
    r->async.reset();
  }
  delete st;
}

}  // namespace

void InitProxy(Napi::Env env, Napi::Object exports) {
  Addon& addon = Addon::From(env);
  addon.proxy = new ReadState();
  napi_add_env_cleanup_hook(env, CleanupProxy, &addon);
  exports.Set("proxyParse", Napi::Function::New(env, ProxyParseJs, "proxyParse"));
  exports.Set("proxyBuild", Napi::Function::New(env, ProxyBuildJs, "proxyBuild"));
  exports.Set("proxyRead", Napi::Function::New(env, ProxyReadJs, "proxyRead"));
}

}  // namespace tcpproxy
