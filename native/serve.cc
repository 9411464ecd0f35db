// The worker's fast path for forwarding services: accept (accept4(2), in
// batches), connect upstream (non-blocking connect(2), 10 s bound) and hand
// both sockets to the pump, all on Node's loop with no JS object per
// connection. JS compiles the policy (which listener serves what) and gets
// the log lines back in one call per loop turn, from a uv_idle handle: an
// active idle handle makes the next poll return at once, so lines queued by
// a close callback (the pump's end) are not left waiting for the next event,
// as they would be with a uv_check handle.
//
// A listener whose accept fails for lack of descriptors or memory (EMFILE,
// ENFILE, ENOBUFS, ENOMEM) stops polling for kPauseMs: the clients wait in
// the backlog instead of the loop spinning on a socket that stays readable.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cmath>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "addon.h"

namespace tcpproxy {

namespace {

constexpr int kAcceptBatch = 64;
constexpr uint64_t kPauseMs = 100;
constexpr uint64_t kConnectTimeoutMs = 10000;
// Log levels as the first character of a line (syslog priorities).
constexpr char kInfo = '6';
constexpr char kError = '3';

// What a listener does with its connections: compiled by src/forward/fast.ts.
struct FastService {
  std::string key;          // listen key, for messages
  std::string accept_tail;  // ": server 127.0.0.1:80, uid 65535 gid 65534"
  std::string server_text;  // "server 127.0.0.1:80", before a connect error
  sockaddr_storage upstream{};
  socklen_t upstream_len = 0;
  std::string upstream_node;     // "127.0.0.1:80" / "::1:80", as Node words a connect error
  std::string upstream_bracket;  // "127.0.0.1:80" / "[::1]:80", for a timeout
  uint64_t idle_ms = 0;
};

std::string HostPort(const sockaddr_storage& ss, bool brackets) {
  std::string host;
  int port = 0;
  bool v6 = false;
  // A dual-stack listener's IPv4 client is shown as IPv4, as everywhere else.
  if (!IpText(ss, true, &host, &port, &v6)) return "?";
  if (v6 && brackets) host = "[" + host + "]";
  return host + ":" + std::to_string(port);
}

std::string ErrName(int err) {
  const char* n = strerrorname_np(err);
  return n != nullptr ? n : "E" + std::to_string(err);
}

std::string IdText(double id) {
  return std::to_string(static_cast<uint64_t>(id));
}

struct ServeState;

struct Listener {
  ServeState* st = nullptr;
  uint64_t handle_id = 0;
  int fd = -1;
  std::shared_ptr<const FastService> service;
  uv_poll_t poll;
  uv_timer_t pause;
  int open_handles = 0;
  bool closing = false;
  bool polling = false;
};

// A client waiting for its upstream connection.
struct Conn {
  ServeState* st = nullptr;
  double id = 0;
  int client = -1;
  int server = -1;
  std::shared_ptr<const FastService> service;
  uv_poll_t poll;
  uv_timer_t timer;
  int open_handles = 0;
  bool closing = false;
};

struct ServeState {
  Napi::Env env;
  Napi::FunctionReference on_batch;
  std::unique_ptr<Napi::AsyncContext> async;
  uv_loop_t* loop = nullptr;
  uv_idle_t flush;
  bool flush_started = false;
  std::vector<std::string> lines;
  std::deque<std::pair<double, double>> ids;  // blocks: first, count
  double ids_left = 0;
  std::unordered_map<uint64_t, Listener*> listeners;
  std::unordered_set<Conn*> connecting;
  std::unordered_set<uint64_t> pumps;  // pump ids of fast-path sessions
  uint64_t next_handle = 1;
  bool detached = false;

  explicit ServeState(Napi::Env e) : env(e) {}

  size_t Live() const { return connecting.size() + pumps.size(); }

  void Log(char level, std::string line) {
    line.insert(line.begin(), level);
    lines.push_back(std::move(line));
    if (!flush_started && !detached) {
      flush_started = true;
      uv_idle_start(&flush, OnFlush);
    }
  }

  // Next connection number, or -1 when JS has not topped the blocks up.
  double TakeId() {
    while (!ids.empty() && ids.front().second <= 0) ids.pop_front();
    if (ids.empty()) return -1;
    auto& b = ids.front();
    double id = b.first;
    b.first += 1;
    b.second -= 1;
    ids_left -= 1;
    return id;
  }

  static void OnFlush(uv_idle_t* h) {
    auto* st = static_cast<ServeState*>(h->data);
    uv_idle_stop(h);
    st->flush_started = false;
    if (st->detached || st->on_batch.IsEmpty()) {
      st->lines.clear();
      return;
    }
    std::vector<std::string> out;
    out.swap(st->lines);
    Napi::Env env = st->env;
    Napi::HandleScope scope(env);
    try {
      Napi::Array arr = Napi::Array::New(env, out.size());
      for (uint32_t i = 0; i < out.size(); i++) arr.Set(i, Napi::String::New(env, out[i]));
      st->on_batch.MakeCallback(
          env.Global(),
          {arr, Napi::Number::New(env, static_cast<double>(st->Live())), Napi::Number::New(env, st->ids_left)},
          *st->async);
    } catch (const Napi::Error& e) {
      napi_fatal_exception(env, e.Value());
    }
  }
};

ServeState* StateOf(Napi::Env env) {
  return static_cast<ServeState*>(Addon::From(env).serve);
}

// ---------------------------------------------------------------- connect

void OnConnClosed(uv_handle_t* h) {
  auto* c = static_cast<Conn*>(h->data);
  if (--c->open_handles > 0) return;
  delete c;
}

// Ends the connect phase: the handles close (the Conn is freed on the last
// close callback); the fds are closed unless handed to the pump.
void EndConnect(Conn* c) {
  if (c->closing) return;
  c->closing = true;
  c->st->connecting.erase(c);
  uv_timer_stop(&c->timer);
  // uv_close stops the poll handle at once (its one EPOLL_CTL_DEL), so the
  // pump may register the same fd right after.
  uv_close(reinterpret_cast<uv_handle_t*>(&c->poll), OnConnClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), OnConnClosed);
}

void FailConnect(Conn* c, const std::string& why) {
  ServeState* st = c->st;
  st->Log(kError, "connection " + IdText(c->id) + ": " + c->service->server_text + ": " + why);
  close(c->server);
  close(c->client);  // a FIN, as the JS path's release
  c->server = c->client = -1;
  EndConnect(c);
}

void Connected(Conn* c) {
  ServeState* st = c->st;
  int client = c->client;
  int server = c->server;
  double id = c->id;
  c->client = c->server = -1;
  // EndConnect's uv_close has taken the fd out of epoll: the pump may poll it at once.
  EndConnect(c);
  auto pump_id = std::make_shared<uint64_t>(0);
  std::string tag = "connection " + IdText(id);
  int err = StartPump(
      st->env, client, server, c->service->idle_ms, false,
      [st, tag, pump_id](const PumpOutcome& o) {
        st->pumps.erase(*pump_id);
        // As describeEnd in src/session/session.ts words it.
        std::string why = o.end;
        if (o.syscall != nullptr) {
          why += " (";
          if (o.side != nullptr) why += std::string(o.side) + ": ";
          why += std::string(o.syscall) + " " + ErrName(o.err) + ")";
        } else if (o.side != nullptr) {
          why += " (" + std::string(o.side) + ")";
        }
        st->Log(kInfo, tag + ": end: " + std::to_string(o.bytes_up) + " bytes up, " + std::to_string(o.bytes_down) +
                           " down, " + std::to_string(static_cast<uint64_t>(o.duration_ms)) + " ms, " + why + ", " +
                           (o.copy ? "copy" : "splice"));
      },
      pump_id.get());
  if (err < 0) {
    st->Log(kError, tag + ": cannot forward: uv_poll_init " + ErrName(-err));
    return;
  }
  st->pumps.insert(*pump_id);
}

void OnConnectPoll(uv_poll_t* h, int status, int) {
  auto* c = static_cast<Conn*>(h->data);
  if (c->closing) return;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->server, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  if (err == 0 && status < 0) err = -status;
  if (err != 0) return FailConnect(c, "connect " + ErrName(err) + " " + c->service->upstream_node);
  Connected(c);
}

void OnConnectTimeout(uv_timer_t* t) {
  auto* c = static_cast<Conn*>(t->data);
  if (c->closing) return;
  FailConnect(c, "connect " + c->service->upstream_bracket + ": timed out");
}

void StartConnect(ServeState* st, double id, int client, std::shared_ptr<const FastService> svc) {
  int server = socket(svc->upstream.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  std::string tag = "connection " + IdText(id);
  if (server < 0) {
    st->Log(kError, tag + ": " + svc->server_text + ": socket " + ErrName(errno));
    close(client);
    return;
  }
  int r;
  do {
    r = connect(server, reinterpret_cast<const sockaddr*>(&svc->upstream), svc->upstream_len);
  } while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EINPROGRESS) {
    int err = errno;
    st->Log(kError, tag + ": " + svc->server_text + ": connect " + ErrName(err) + " " + svc->upstream_node);
    close(server);
    close(client);
    return;
  }
  auto* c = new Conn();
  c->st = st;
  c->id = id;
  c->client = client;
  c->server = server;
  c->service = std::move(svc);
  uv_timer_init(st->loop, &c->timer);
  c->timer.data = c;
  c->open_handles = 1;
  int err = uv_poll_init(st->loop, &c->poll, server);
  if (err < 0) {
    c->closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), OnConnClosed);
    st->Log(kError, tag + ": " + c->service->server_text + ": uv_poll_init " + ErrName(-err));
    close(server);
    close(client);
    return;
  }
  c->poll.data = c;
  c->open_handles = 2;
  st->connecting.insert(c);
  if (r == 0) return Connected(c);
  uv_poll_start(&c->poll, UV_WRITABLE, OnConnectPoll);
  uv_timer_start(&c->timer, OnConnectTimeout, kConnectTimeoutMs, 0);
}

// ---------------------------------------------------------------- accept

void OnAccept(uv_poll_t* h, int status, int events);

void StartPolling(Listener* l) {
  if (l->closing || l->polling) return;
  if (uv_poll_start(&l->poll, UV_READABLE, OnAccept) == 0) l->polling = true;
}

void OnPauseEnd(uv_timer_t* t) {
  StartPolling(static_cast<Listener*>(t->data));
}

void Pause(Listener* l) {
  uv_poll_stop(&l->poll);
  l->polling = false;
  uv_timer_start(&l->pause, OnPauseEnd, kPauseMs, 0);
}

void OnAccept(uv_poll_t* h, int status, int) {
  auto* l = static_cast<Listener*>(h->data);
  ServeState* st = l->st;
  if (l->closing) return;
  if (status < 0) {
    st->Log(kError, "accept on " + l->service->key + ": uv_poll " + ErrName(-status));
    return Pause(l);
  }
  for (int i = 0; i < kAcceptBatch; i++) {
    if (st->ids_left < 1) {
      // Out of connection numbers until JS tops them up (next flush): wait.
      return Pause(l);
    }
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    int fd = accept4(l->fd, reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      st->Log(kError, "accept on " + l->service->key + ": accept " + ErrName(err) + ": retrying in " +
                          std::to_string(kPauseMs) + " ms");
      return Pause(l);
    }
    double id = st->TakeId();
    sockaddr_storage local{};
    socklen_t llen = sizeof local;
    getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen);
    st->Log(kInfo, "connection " + IdText(id) + ": client " + HostPort(peer, true) + " on " + HostPort(local, true) +
                       l->service->accept_tail);
    StartConnect(st, id, fd, l->service);
  }
}

void OnListenerClosed(uv_handle_t* h) {
  auto* l = static_cast<Listener*>(h->data);
  if (--l->open_handles > 0) return;
  if (l->fd >= 0) close(l->fd);
  delete l;
}

void CloseListener(Listener* l) {
  if (l->closing) return;
  l->closing = true;
  l->st->listeners.erase(l->handle_id);
  uv_timer_stop(&l->pause);
  uv_close(reinterpret_cast<uv_handle_t*>(&l->poll), OnListenerClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&l->pause), OnListenerClosed);
}

// ---------------------------------------------------------------- JS API

std::string StringProp(Napi::Env env, Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) ThrowType(env, (std::string("fast service: ") + key + " must be a string").c_str());
  return v.As<Napi::String>().Utf8Value();
}

double NumberProp(Napi::Env env, Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) ThrowType(env, (std::string("fast service: ") + key + " must be a number").c_str());
  return v.As<Napi::Number>().DoubleValue();
}

std::shared_ptr<const FastService> ParseService(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) ThrowType(env, "fast service must be an object");
  Napi::Object o = v.As<Napi::Object>();
  auto s = std::make_shared<FastService>();
  s->key = StringProp(env, o, "key");
  s->accept_tail = StringProp(env, o, "acceptTail");
  s->server_text = StringProp(env, o, "serverText");
  std::string address = StringProp(env, o, "address");
  double port = NumberProp(env, o, "port");
  double idle = NumberProp(env, o, "idleMs");
  if (!(port >= 1 && port <= 65535) || port != std::floor(port)) ThrowType(env, "fast service: bad port");
  if (!(idle >= 0 && idle <= 0x7fffffff)) ThrowType(env, "fast service: bad idleMs");
  s->idle_ms = static_cast<uint64_t>(idle);
  if (!ParseIp(address, static_cast<int>(port), &s->upstream, &s->upstream_len)) {
    ThrowType(env, "fast service: address must be an IP literal");
  }
  s->upstream_node = HostPort(s->upstream, false);
  s->upstream_bracket = HostPort(s->upstream, true);
  return s;
}

ServeState& Ready(const Napi::CallbackInfo& info) {
  ServeState* st = StateOf(info.Env());
  if (st == nullptr || st->loop == nullptr) ThrowType(info.Env(), "serveInit(onBatch) first");
  return *st;
}

// serveInit(onBatch(lines, live, idsLeft)): once per process.
Napi::Value ServeInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) ThrowType(env, "serveInit(onBatch)");
  ServeState* st = StateOf(env);
  if (st->loop != nullptr) ThrowType(env, "serveInit: already done");
  if (napi_get_uv_event_loop(env, &st->loop) != napi_ok) ThrowType(env, "serveInit: no event loop");
  st->on_batch = Napi::Persistent(info[0].As<Napi::Function>());
  st->async = std::make_unique<Napi::AsyncContext>(env, "tcpproxy:serve");
  uv_idle_init(st->loop, &st->flush);
  st->flush.data = st;
  uv_unref(reinterpret_cast<uv_handle_t*>(&st->flush));
  return env.Undefined();
}

// serveListen(fd, service): a handle id. The fd (a listening socket) is owned from now on.
Napi::Value ServeListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ServeState& st = Ready(info);
  int fd = IntArg(info, 0, "serveListen(fd, service): fd must be a number");
  if (fd <= 2) ThrowType(env, "serveListen: fd must be above 2");
  auto svc = ParseService(env, info.Length() > 1 ? info[1] : env.Undefined());
  auto* l = new Listener();
  l->st = &st;
  l->fd = fd;
  l->service = std::move(svc);
  l->handle_id = st.next_handle++;
  uv_timer_init(st.loop, &l->pause);
  l->pause.data = l;
  l->open_handles = 1;
  int err = uv_poll_init(st.loop, &l->poll, fd);
  if (err < 0) {
    l->fd = -1;
    l->closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&l->pause), OnListenerClosed);
    ThrowErrno(env, "uv_poll_init", -err);
  }
  l->poll.data = l;
  l->open_handles = 2;
  st.listeners[l->handle_id] = l;
  StartPolling(l);
  return Napi::Number::New(env, static_cast<double>(l->handle_id));
}

Listener* ListenerArg(const Napi::CallbackInfo& info) {
  ServeState& st = Ready(info);
  double h = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  auto it = st.listeners.find(static_cast<uint64_t>(h));
  return it == st.listeners.end() ? nullptr : it->second;
}

// serveUpdate(handle, service): later connections use the new service.
Napi::Value ServeUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Listener* l = ListenerArg(info);
  auto svc = ParseService(env, info.Length() > 1 ? info[1] : env.Undefined());
  if (l != nullptr) l->service = std::move(svc);
  return env.Undefined();
}

// serveClose(handle): stops accepting and closes the fd (the master keeps its copy).
Napi::Value ServeClose(const Napi::CallbackInfo& info) {
  Listener* l = ListenerArg(info);
  if (l != nullptr) CloseListener(l);
  return info.Env().Undefined();
}

// serveIds(first, count): more connection numbers.
Napi::Value ServeIds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ServeState& st = Ready(info);
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) ThrowType(env, "serveIds(first, count)");
  double first = info[0].As<Napi::Number>().DoubleValue();
  double count = info[1].As<Napi::Number>().DoubleValue();
  if (!(first >= 1 && count >= 1) || first != std::floor(first) || count != std::floor(count)) {
    ThrowType(env, "serveIds: first and count must be whole numbers >= 1");
  }
  // A listener that ran out meanwhile resumes at the end of its pause.
  st.ids.emplace_back(first, count);
  st.ids_left += count;
  return env.Undefined();
}

// serveAbortAll(): resets every fast-path session (the end of a drain).
Napi::Value ServeAbortAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (StateOf(env) == nullptr || StateOf(env)->loop == nullptr) return env.Undefined();
  ServeState& st = Ready(info);
  std::vector<Conn*> conns(st.connecting.begin(), st.connecting.end());
  for (Conn* c : conns) {
    st.Log(kInfo, "connection " + IdText(c->id) + ": end: aborted while connecting to the server");
    close(c->server);
    close(c->client);
    c->server = c->client = -1;
    EndConnect(c);
  }
  std::vector<uint64_t> pumps(st.pumps.begin(), st.pumps.end());
  for (uint64_t id : pumps) AbortPump(env, id);
  return env.Undefined();
}

// serveTake(): the log lines not yet delivered, now (a worker about to exit).
Napi::Value ServeTake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ServeState* st = StateOf(env);
  std::vector<std::string> out;
  if (st != nullptr) out.swap(st->lines);
  Napi::Array arr = Napi::Array::New(env, out.size());
  for (uint32_t i = 0; i < out.size(); i++) arr.Set(i, Napi::String::New(env, out[i]));
  return arr;
}

// serveStats() -> { live, listeners, idsLeft }.
Napi::Value ServeStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ServeState* st = StateOf(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("live", static_cast<double>(st ? st->Live() : 0));
  o.Set("listeners", static_cast<double>(st ? st->listeners.size() : 0));
  o.Set("idsLeft", st ? st->ids_left : 0);
  return o;
}

// Environment teardown: no more JS. Listeners and connect attempts close
// their fds; the pump cleans up its own sessions.
void CleanupServe(void* arg) {
  Addon* addon = static_cast<Addon*>(arg);
  auto* st = static_cast<ServeState*>(addon->serve);
  if (st == nullptr) return;
  addon->serve = nullptr;
  st->detached = true;
  for (auto& entry : st->listeners) {
    if (entry.second->fd >= 0) close(entry.second->fd);
    entry.second->fd = -1;
  }
  for (Conn* c : st->connecting) {
    if (c->client >= 0) close(c->client);
    if (c->server >= 0) close(c->server);
    c->client = c->server = -1;
  }
  st->on_batch.Reset();
  st->async.reset();
  // The handles and the state itself are left to the process's exit: the
  // loop that owns them is going away with it.
}

}  // namespace

void InitServe(Napi::Env env, Napi::Object exports) {
  Addon& addon = Addon::From(env);
  addon.serve = new ServeState(env);
  napi_add_env_cleanup_hook(env, CleanupServe, &addon);
  exports.Set("serveInit", Napi::Function::New(env, ServeInit, "serveInit"));
  exports.Set("serveListen", Napi::Function::New(env, ServeListen, "serveListen"));
  exports.Set("serveUpdate", Napi::Function::New(env, ServeUpdate, "serveUpdate"));
  exports.Set("serveClose", Napi::Function::New(env, ServeClose, "serveClose"));
  exports.Set("serveIds", Napi::Function::New(env, ServeIds, "serveIds"));
  exports.Set("serveAbortAll", Napi::Function::New(env, ServeAbortAll, "serveAbortAll"));
  exports.Set("serveStats", Napi::Function::New(env, ServeStats, "serveStats"));
  exports.Set("serveTake", Napi::Function::New(env, ServeTake, "serveTake"));
}

}  // namespace tcpproxy
