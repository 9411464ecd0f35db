// The worker's fast path for forwarding services: accept (accept4(2), in
// batches), connect upstream (non-blocking connect(2), 10 s bound) and hand
// both sockets to the pump, all on Node's loop with no JS object per
// connection. JS compiles the policy (which listener serves what) and gets
// the log lines back in one call per loop turn: from a uv_check handle, right
// after the poll phase that queued them (events, timers), or from a uv_idle
// handle at the start of the next turn for lines queued after the check
// (close callbacks: a pump aborted by JS). Whichever runs first stops both;
// the idle handle, while active, makes the next poll return at once, so no
// line waits for the next event, and the check spares the common case that
// extra turn of the loop.
//
// A listener whose accept fails for lack of descriptors or memory (EMFILE,
// ENFILE, ENOBUFS, ENOMEM) stops polling for kPauseMs: the clients wait in
// the backlog instead of the loop spinning on a socket that stays readable.
//
// Access lists and limits (limits.h) are checked here, before anything is
// read: a refused client is closed at once (allow/deny, per-source). A
// maxconn place and a rate token are taken before each accept4 (Reserve),
// so a client is only accepted when it can be served, even when workers
// race for the last place or token: at maxconn or out of tokens the
// listener stops polling and the clients wait in the backlog, unaccepted.
// A reservation that found no client, or a client that is refused, gives
// them back. Sessions ending in this worker wake a waiting listener at
// once; those ending in another worker are seen by a short recheck timer.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
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
#include "limits.h"
#include "proxy.h"
#include "reactor.h"

namespace tcpproxy {

namespace {

constexpr int kAcceptBatch = 64;
constexpr uint64_t kPauseMs = 100;
constexpr uint64_t kConnectTimeoutMs = 10000;
// A listener waiting for a place under maxconn rechecks this often (for
// sessions that end in other workers; this worker's wake it at once).
constexpr uint64_t kMaxconnRecheckMs = 10;
constexpr uint64_t kSummaryMs = 1000;
// A server of a group whose connect failed is tried after the others this long.
constexpr uint64_t kDownMs = 10000;
// Log levels as the first character of a line (syslog priorities).
constexpr char kInfo = '6';
constexpr char kWarning = '4';
constexpr char kError = '3';

// One server of a service's group.
struct Upstream {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string text;     // "server 127.0.0.1:80", before a connect error
  std::string node;     // "127.0.0.1:80" / "::1:80", as Node words a connect error
  std::string bracket;  // "127.0.0.1:80" / "[::1]:80", for a timeout and the down/up lines
};

enum class Balance { kFirst, kRoundRobin, kSource };

// What a listener does with its connections: compiled by src/forward/fast.ts.
struct FastService {
  std::string key;          // listen key, for messages
  std::string accept_tail;  // ": server 127.0.0.1:80, uid 65535 gid 65534"
  std::vector<Upstream> servers;
  Balance balance = Balance::kFirst;
  int send_proxy = 0;  // 0, or the PROXY header version written to the upstream first
  bool has_source = false;
  sockaddr_storage source{};  // upstream connections bind here (port 0)
  socklen_t source_len = 0;
  std::string source_text;
  bool accept_proxy = false;  // connections begin with a PROXY header
  AccessTable trusted;        // who may send one (allow rules; empty: anyone)
  uint64_t idle_ms = 0;
  uint32_t slot = 0;  // the service's place in the shared limits
  AccessTable access;
  uint32_t maxconn = 0;  // 0: none
  uint32_t per_source = 0;
  uint32_t rate = 0;
  bool keepalive = true;
  int log_level = 1;  // `loglevel`: 0 quiet (warnings and errors only), 1 normal, 2 verbose
};

// What a session holds of the shared limits, given back when it ends.
struct Admission {
  uint32_t slot = 0;
  bool entered = false;  // a live-session place
  bool source = false;   // a per-source place
  uint32_t rate = 0;     // the rate a token was taken under (0: none): to give it back (GiveBack)
  uint8_t key[16] = {};
};

enum class Waiting { kNone, kMaxconn, kRate };

// The passive health of a group's servers, in one worker: a server whose
// connect failed is tried after the others until kDownMs have passed.
struct Health {
  bool down = false;
  uint64_t until = 0;  // loop time (ms)
};
struct Group {
  uint64_t next = 0;  // roundrobin: where the next connection starts
  std::vector<Health> health;
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
  std::shared_ptr<Group> group;  // of service's servers; a new one when they change
  // Where its clients connected to, when the socket is bound to one address
  // (not a wildcard): then no getsockname per client.
  sockaddr_storage local{};
  bool local_known = false;
  int reads = 0;  // PROXY headers being read from its clients (they outlive a close)
  uv_poll_t poll;
  uv_timer_t pause;
  uv_timer_t wait;     // maxconn recheck, or the next rate token
  uv_timer_t summary;  // the "N more refused" line
  int open_handles = 0;
  bool closing = false;
  bool polling = false;
  Waiting waiting = Waiting::kNone;
  // The limit a wait line named, until a drained backlog (accept's EAGAIN)
  // ends the episode with an "accepting again" line: a service held at its
  // rate gets two lines, not two per token.
  Waiting episode = Waiting::kNone;
  uint32_t episode_limit = 0;
  // The summary timer runs while refusals over the budget (counted in the
  // shared slot, for all workers) wait for their summary line.
  bool summary_running = false;
};

// A client waiting for its upstream connection: the servers in the order
// to try them, one attempt at a time. Both sockets are in the reactor's set
// from the start (the client's events are only remembered, for the pump),
// and stay there when the pump takes them over.
void OnConnectEvents(struct Conn* c, uint32_t events);
struct Conn : Watcher {
  void OnEvents(int, uint32_t events) override { OnConnectEvents(this, events); }

  ServeState* st = nullptr;
  double id = 0;
  int client = -1;
  int server = -1;
  std::shared_ptr<const FastService> service;
  std::shared_ptr<Group> group;
  std::vector<uint16_t> order;
  size_t attempt = 0;
  sockaddr_storage peer{};   // the client (a PROXY header's source when there was one)
  sockaddr_storage local{};  // where it connected to
  bool attempting = false;   // a connect of `server` is in progress
  uv_timer_t timer;
  bool closing = false;
  Admission adm;
  bool adm_live = false;   // still this Conn's to give back
  uint64_t start_ms = 0;   // loop time of the accept, for the status socket and the durations
  bool forwarded = false;  // handed to the pump (which counts the session's end)
};

// A fast-path session being forwarded, as the status socket lists it.
// The client's address is kept as it is and put in words only when listed.
struct FastSession {
  double id = 0;
  sockaddr_storage peer{};
  std::shared_ptr<const FastService> service;
  uint64_t start_ms = 0;
};

// A client of an accept-proxy service whose PROXY header is being read.
struct HeaderRead {
  ServeState* st = nullptr;
  Listener* listener = nullptr;
  int fd = -1;
  sockaddr_storage peer{};
  Admission adm;
  ProxyReader reader;
  uv_poll_t poll;
  uv_timer_t timer;
  int open_handles = 0;
  bool done = false;
};

struct ServeState {
  Napi::Env env;
  Napi::FunctionReference on_batch;
  std::unique_ptr<Napi::AsyncContext> async;
  uv_loop_t* loop = nullptr;
  uv_idle_t flush;
  uv_check_t flush_check;
  bool flush_started = false;
  std::vector<std::string> lines;
  std::deque<std::pair<double, double>> ids;  // blocks: first, count
  double ids_left = 0;
  std::unordered_map<uint64_t, Listener*> listeners;
  std::unordered_set<Conn*> connecting;
  std::unordered_set<HeaderRead*> reading;
  std::unordered_map<uint64_t, FastSession> pumps;  // fast-path sessions by pump id
  uint64_t next_handle = 1;
  size_t waiting_maxconn = 0;  // listeners waiting for a maxconn place
  bool detached = false;

  explicit ServeState(Napi::Env e) : env(e) {}

  size_t Live() const { return reading.size() + connecting.size() + pumps.size(); }

  void Log(char level, std::string line) {
    line.insert(line.begin(), level);
    lines.push_back(std::move(line));
    if (!flush_started && !detached) {
      flush_started = true;
      uv_idle_start(&flush, OnFlush);
      uv_check_start(&flush_check, OnFlushCheck);
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

  static void OnFlushCheck(uv_check_t* h) { Flush(static_cast<ServeState*>(h->data)); }

  static void OnFlush(uv_idle_t* h) { Flush(static_cast<ServeState*>(h->data)); }

  static void Flush(ServeState* st) {
    uv_idle_stop(&st->flush);
    uv_check_stop(&st->flush_check);
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

// ---------------------------------------------------------------- limits

void OnWaitTimer(uv_timer_t* t);

// Gives back a session's places; a listener of this worker waiting for one
// retries on the next loop turn.
void Leave(ServeState* st, const Admission& adm) {
  if (adm.entered) SessionLeave(adm.slot);
  if (adm.source) SourceLeave(adm.slot, adm.key);
  if (!adm.entered || st->waiting_maxconn == 0 || st->detached) return;
  for (auto& entry : st->listeners) {
    Listener* l = entry.second;
    if (l->waiting == Waiting::kMaxconn && l->service->slot == adm.slot) uv_timer_start(&l->wait, OnWaitTimer, 0, 0);
  }
}

// Gives back what a connection that did not become a session took: its
// places and its rate token (a refused client is no new session, and a
// reservation that found no client took the token for nobody).
void GiveBack(ServeState* st, const Admission& adm) {
  if (adm.rate != 0) RateRefund(adm.slot, adm.rate);
  Leave(st, adm);
}

// ---------------------------------------------------------------- connect

void OnConnClosed(uv_handle_t* h) {
  delete static_cast<Conn*>(h->data);
}

Reactor* ReactorOfState(ServeState* st) {
  return ReactorOf(st->env);
}

// The attempt in progress sends no more events here: its socket may be
// closed, or given to the pump (which takes its events over), right after.
void StopAttempt(Conn* c) {
  if (!c->attempting) return;
  c->attempting = false;
  if (c->server >= 0) ReactorForget(ReactorOfState(c->st), c->server, false);
}

// Closes the client, which is in the set.
void CloseClient(Conn* c) {
  if (c->client < 0) return;
  ReactorForget(ReactorOfState(c->st), c->client, false);
  close(c->client);
  c->client = -1;
}

// Ends the connect phase: the handles close (the Conn is freed on the last
// close callback); the fds are closed unless handed to the pump.
void EndConnect(Conn* c) {
  if (c->closing) return;
  c->closing = true;
  c->st->connecting.erase(c);
  // A session that never reached the pump (no server answered, the PROXY header failed, aborted) ends here.
  if (!c->forwarded) StatsEnd(c->service->slot, 0, 0, uv_now(c->st->loop) - c->start_ms);
  if (c->adm_live) {
    c->adm_live = false;
    Leave(c->st, c->adm);
  }
  uv_timer_stop(&c->timer);
  StopAttempt(c);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), OnConnClosed);
}

// FNV-1a, then a final mix: FNV's low bits depend only on the low bits of
// the input bytes, and the server is picked with a small modulus.
uint32_t SourceHash(const uint8_t* p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  h ^= h >> 16;
  h *= 0x45d9f3bu;
  h ^= h >> 16;
  return h;
}

// The order a connection tries the servers in: `balance` picks the first,
// the rest follow in list order; servers marked down go after the others
// (so when all are down, all are still tried, in that order).
std::vector<uint16_t> Order(const FastService& svc, Group& g, const uint8_t key[16], uint64_t now) {
  size_t n = svc.servers.size();
  size_t first = 0;
  if (svc.balance == Balance::kRoundRobin) first = g.next++ % n;
  if (svc.balance == Balance::kSource) first = SourceHash(key, 16) % n;
  std::vector<uint16_t> up, down;
  for (size_t i = 0; i < n; i++) {
    size_t k = (first + i) % n;
    const Health& h = g.health[k];
    (h.down && now < h.until ? down : up).push_back(static_cast<uint16_t>(k));
  }
  up.insert(up.end(), down.begin(), down.end());
  return up;
}

const Upstream& Current(const Conn* c) {
  return c->service->servers[c->order[c->attempt]];
}

// Marks the server of the failed attempt down (in a group of two or more).
void MarkDown(Conn* c) {
  if (c->service->servers.size() < 2) return;
  Health& h = c->group->health[c->order[c->attempt]];
  h.until = uv_now(c->st->loop) + kDownMs;
  if (h.down) return;
  h.down = true;
  c->st->Log(kWarning, "service " + c->service->key + ": server " + Current(c).bracket + ": down for " +
                           std::to_string(kDownMs / 1000) + " s");
}

void MarkUp(Conn* c) {
  if (c->service->servers.size() < 2) return;
  Health& h = c->group->health[c->order[c->attempt]];
  if (!h.down) return;
  h.down = false;
  h.until = 0;
  c->st->Log(kInfo, "service " + c->service->key + ": server " + Current(c).bracket + ": up again");
}

void NextAttempt(Conn* c);

// The current attempt failed: logged as the session code words it; the next server is tried.
void AttemptFailed(Conn* c, const std::string& why, bool down) {
  c->st->Log(kError, "connection " + IdText(c->id) + ": " + Current(c).text + ": " + why);
  StatsConnectFailed(c->service->slot, c->order[c->attempt]);
  if (down) MarkDown(c);
  StopAttempt(c);
  uv_timer_stop(&c->timer);
  if (c->server >= 0) close(c->server);
  c->server = -1;
  c->attempt++;
}

void Connected(Conn* c) {
  ServeState* st = c->st;
  MarkUp(c);
  std::string tag = "connection " + IdText(c->id);
  int level = c->service->log_level;
  // The end line's first words, as the session code words them, with where the
  // connection to the server comes from (to find it in the server's logs);
  // nothing to build for a quiet service, which logs neither line.
  std::string route;
  if (level >= 1) {
    sockaddr_storage from{};
    socklen_t flen = sizeof from;
    std::string src =
        getsockname(c->server, reinterpret_cast<sockaddr*>(&from), &flen) == 0 ? HostPort(from, true) : "?";
    if (level >= 2) st->Log(kInfo, tag + ": connected to " + Current(c).bracket + " from " + src);
    route = "client " + HostPort(c->peer, true) + " on " + HostPort(c->local, true) + ", server " + Current(c).bracket +
            " from " + src;
  }
  if (c->service->send_proxy != 0) {
    std::string header = BuildProxyHeader(c->service->send_proxy, c->peer, c->local);
    // A fresh connection's send buffer takes a few hundred bytes whole.
    ssize_t n;
    do {
      n = send(c->server, header.data(), header.size(), MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(header.size())) {
      std::string why = n < 0 ? ErrName(errno) : "short write";
      st->Log(kError, tag + ": " + Current(c).text + ": cannot send the PROXY header: " + why);
      StopAttempt(c);
      close(c->server);
      c->server = -1;
      CloseClient(c);
      EndConnect(c);
      return;
    }
  }
  int client = c->client;
  int server = c->server;
  Admission adm = c->adm;
  bool adm_live = c->adm_live;
  c->adm_live = false;
  c->client = c->server = -1;
  c->forwarded = true;
  // The sockets stay in the set; the pump takes their events from here on.
  c->attempting = false;
  EndConnect(c);
  auto pump_id = std::make_shared<uint64_t>(0);
  const char* failed = "pump";
  FastSession info{c->id, c->peer, c->service, c->start_ms};
  uint32_t slot = c->service->slot;
  uint64_t accepted = c->start_ms;
  int err = StartPump(
      st->env, client, server, c->service->idle_ms, false, true, true,
      [st, tag, route, pump_id, adm, adm_live, level, slot, accepted](const PumpOutcome& o) {
        st->pumps.erase(*pump_id);
        if (adm_live) Leave(st, adm);
        // Timed from the accept, as the session code times its sessions.
        uint64_t now = uv_now(st->loop);
        StatsEnd(slot, o.bytes_up, o.bytes_down, now > accepted ? now - accepted : 0);
        // As describeEnd in src/session/session.ts words it.
        std::string why = o.end;
        if (o.syscall != nullptr) {
          why += " (";
          if (o.side != nullptr) why += std::string(o.side) + ": ";
          why += std::string(o.syscall) + " " + ErrName(o.err) + ")";
        } else if (o.side != nullptr) {
          why += " (" + std::string(o.side) + ")";
        }
        if (level >= 1)
          st->Log(kInfo, tag + ": end: " + route + ", " + std::to_string(o.bytes_up) + " bytes up, " +
                             std::to_string(o.bytes_down) + " down, " +
                             std::to_string(static_cast<uint64_t>(o.duration_ms)) + " ms, " + why + ", " +
                             (o.copy ? "copy" : "splice"));
      },
      pump_id.get(), &failed);
  if (err != 0) {
    st->Log(kError, tag + ": cannot forward: " + std::string(failed) + " " + ErrName(err));
    if (adm_live) Leave(st, adm);
    StatsEnd(slot, 0, 0, uv_now(st->loop) - accepted);
    return;
  }
  st->pumps.emplace(*pump_id, std::move(info));
}

// An event of the socket being connected: writable without an error is
// connected (the kernel raises EPOLLERR and EPOLLHUP for a connect that
// failed, so SO_ERROR is read only then, to name the error).
void OnConnectEvents(Conn* c, uint32_t events) {
  if (c->closing || !c->attempting) return;
  if ((events & (EPOLLERR | EPOLLHUP)) == 0) {
    if (events & EPOLLOUT) Connected(c);
    return;
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->server, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  // A hang-up with no error to read: the connection is gone all the same.
  if (err == 0) err = ECONNRESET;
  AttemptFailed(c, "connect " + ErrName(err) + " " + Current(c).node, true);
  NextAttempt(c);
}

void OnConnectTimeout(uv_timer_t* t) {
  auto* c = static_cast<Conn*>(t->data);
  if (c->closing || !c->attempting) return;
  AttemptFailed(c, "connect " + Current(c).bracket + ": timed out", true);
  NextAttempt(c);
}

// Starts a connect to the next server of the order, each within its own
// bound; with none left, the client is closed (a FIN, as the session code's).
void NextAttempt(Conn* c) {
  ServeState* st = c->st;
  const FastService& svc = *c->service;
  while (c->attempt < c->order.size()) {
    const Upstream& u = Current(c);
    int server = socket(u.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (server < 0) {
      AttemptFailed(c, "socket " + ErrName(errno), false);
      continue;
    }
    c->server = server;
    if (svc.has_source && bind(server, reinterpret_cast<const sockaddr*>(&svc.source), svc.source_len) < 0) {
      AttemptFailed(c, "bind " + svc.source_text + ": " + ErrName(errno), false);
      continue;
    }
    // Dead peers end even without an idle timeout (a failure here is harmless: no keepalive).
    if (svc.keepalive) Keepalive(server);
    int r;
    do {
      r = connect(server, reinterpret_cast<const sockaddr*>(&u.addr), u.len);
    } while (r < 0 && errno == EINTR);
    if (r < 0 && errno != EINPROGRESS) {
      AttemptFailed(c, "connect " + ErrName(errno) + " " + u.node, true);
      continue;
    }
    // Edge-triggered: a connect already done by now raises its event on the next wait.
    int err = ReactorAdd(ReactorOfState(st), server, c);
    if (err != 0) {
      AttemptFailed(c, "epoll_ctl " + ErrName(err), false);
      continue;
    }
    c->attempting = true;
    uv_timer_start(&c->timer, OnConnectTimeout, kConnectTimeoutMs, 0);
    return;
  }
  CloseClient(c);
  EndConnect(c);
}

// The client has its keepalive options from the listener (ListenerKeepalive).
void StartConnect(ServeState* st, double id, int client, const sockaddr_storage& peer, const sockaddr_storage& local,
                  std::shared_ptr<const FastService> svc, std::shared_ptr<Group> group, const Admission& adm) {
  auto* c = new Conn();
  c->st = st;
  c->id = id;
  c->client = client;
  c->peer = peer;
  c->local = local;
  c->order = Order(*svc, *group, adm.key, uv_now(st->loop));
  c->service = std::move(svc);
  c->group = std::move(group);
  c->adm = adm;
  c->adm_live = true;
  c->start_ms = uv_now(st->loop);
  uv_timer_init(st->loop, &c->timer);
  c->timer.data = c;
  st->connecting.insert(c);
  int err = ReactorAdd(ReactorOfState(st), client, nullptr);
  if (err != 0) {
    st->Log(kError, "connection " + IdText(id) + ": cannot forward: epoll_ctl " + ErrName(err));
    close(client);
    c->client = -1;
    EndConnect(c);
    return;
  }
  NextAttempt(c);
}

// ---------------------------------------------------------------- accept

void OnAccept(uv_poll_t* h, int status, int events);

void StartPolling(Listener* l) {
  if (l->closing || l->polling || l->waiting != Waiting::kNone) return;
  if (uv_poll_start(&l->poll, UV_READABLE, OnAccept) == 0) l->polling = true;
}

void StopPolling(Listener* l) {
  if (!l->polling) return;
  uv_poll_stop(&l->poll);
  l->polling = false;
}

void OnPauseEnd(uv_timer_t* t) {
  StartPolling(static_cast<Listener*>(t->data));
}

void Pause(Listener* l) {
  StopPolling(l);
  uv_timer_start(&l->pause, OnPauseEnd, kPauseMs, 0);
}

std::string ServiceTag(const Listener* l) {
  return "service " + l->service->key;
}

const char* LimitName(Waiting w) {
  return w == Waiting::kMaxconn ? "maxconn " : "rate ";
}

// Stops accepting until `ms` from now (a maxconn recheck, the next token).
void StartWait(Listener* l, Waiting why, uint32_t limit, uint64_t ms) {
  ServeState* st = l->st;
  StopPolling(l);
  if (l->waiting != why) {
    if (l->waiting == Waiting::kMaxconn) st->waiting_maxconn--;
    if (why == Waiting::kMaxconn) st->waiting_maxconn++;
    l->waiting = why;
  }
  if (l->episode != why || l->episode_limit != limit) {
    l->episode = why;
    l->episode_limit = limit;
    st->Log(kInfo, ServiceTag(l) + ": " + LimitName(why) + std::to_string(limit) + " reached: new connections wait");
  }
  uv_timer_start(&l->wait, OnWaitTimer, ms, 0);
}

// Accepts again, at once: a backlog found empty ends the episode.
void EndWait(Listener* l) {
  if (l->waiting == Waiting::kNone) return;
  if (l->waiting == Waiting::kMaxconn) l->st->waiting_maxconn--;
  l->waiting = Waiting::kNone;
  uv_timer_stop(&l->wait);
  StartPolling(l);
  if (l->polling) OnAccept(&l->poll, 0, 0);
}

void LogSummary(Listener* l, uint64_t n) {
  if (n != 0) l->st->Log(kWarning, ServiceTag(l) + ": " + std::to_string(n) + " more refused");
}

// Once a second while the service has refusals over the budget: the
// summary line, when this process has the second's turn (RefusalSummary);
// the timer stops once none are left, in any worker (one that counts more
// starts its own).
void OnSummary(uv_timer_t* t) {
  auto* l = static_cast<Listener*>(t->data);
  bool pending = false;
  LogSummary(l, RefusalSummary(l->service->slot, false, &pending));
  if (pending) return;
  uv_timer_stop(t);
  l->summary_running = false;
}

// Closes a refused client at once: nothing read or written, no connection number.
void Refuse(Listener* l, int fd, const sockaddr_storage& peer, const std::string& rule, RefusalReason why) {
  close(fd);
  uint32_t slot = l->service->slot;
  CountRefusal(slot, why);
  if (RefusalLogAllowed(slot)) {
    l->st->Log(kWarning, ServiceTag(l) + ": refused " + HostPort(peer, true) + ": " + rule);
    return;
  }
  // A PROXY header read that outlived its listener: its timers are gone
  // (the count waits in the slot for another listener's summary).
  if (l->closing || l->summary_running) return;
  l->summary_running = true;
  uv_timer_start(&l->summary, OnSummary, kSummaryMs, kSummaryMs);
}

// `via`: the balancer a PROXY header came from, when it named the client.
void Serve(Listener* l, int fd, const sockaddr_storage& peer, const Admission& adm,
           const sockaddr_storage* via = nullptr) {
  ServeState* st = l->st;
  double id = st->TakeId();
  if (id < 0) {
    // Only a header read that ended after a whole block went by: not worth a session.
    st->Log(kError, ServiceTag(l) + ": client " + HostPort(peer, true) + ": out of connection numbers");
    close(fd);
    GiveBack(st, adm);
    return;
  }
  StatsSession(l->service->slot);
  sockaddr_storage local = l->local;
  if (!l->local_known) {
    socklen_t llen = sizeof local;
    getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen);
  }
  std::string from = HostPort(peer, true);
  if (via != nullptr) from += " via " + HostPort(*via, true);
  if (l->service->log_level >= 1)
    st->Log(kInfo,
            "connection " + IdText(id) + ": client " + from + " on " + HostPort(local, true) + l->service->accept_tail);
  StartConnect(st, id, fd, peer, local, l->service, l->group, adm);
}

// ---------------------------------------------------------------- PROXY header

void FreeListener(Listener* l);

// The access lists and per-source, for the client a PROXY header named.
// `peer` is null when the header kept the real peer as the client (v1
// UNKNOWN, v2 LOCAL): then there is no balancer to name.
void AfterHeader(Listener* l, int fd, const sockaddr_storage* peer, const sockaddr_storage& client, Admission adm) {
  const FastService& svc = *l->service;
  ClientKeyOf(client, adm.key);
  if (!svc.access.Empty()) {
    const std::string* why = svc.access.Check(adm.key);
    if (why != nullptr) {
      Refuse(l, fd, client, *why, why == &svc.access.no_allow ? kRefusedNoAllow : kRefusedDeny);
      return GiveBack(l->st, adm);
    }
  }
  if (svc.per_source != 0) {
    if (!SourceEnter(svc.slot, adm.key, svc.per_source)) {
      Refuse(l, fd, client, "per-source " + std::to_string(svc.per_source), kRefusedPerSource);
      return GiveBack(l->st, adm);
    }
    adm.source = true;
  }
  Serve(l, fd, client, adm, peer);
}

void OnHeaderClosed(uv_handle_t* h) {
  auto* r = static_cast<HeaderRead*>(h->data);
  if (--r->open_handles > 0) return;
  delete r;
}

// The read is over: its handles close; the fd is the caller's.
void EndHeader(HeaderRead* r) {
  if (r->done) return;
  r->done = true;
  r->st->reading.erase(r);
  uv_timer_stop(&r->timer);
  uv_close(reinterpret_cast<uv_handle_t*>(&r->poll), OnHeaderClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&r->timer), OnHeaderClosed);
  Listener* l = r->listener;
  r->listener = nullptr;
  if (l != nullptr && --l->reads == 0 && l->closing && l->open_handles == 0) FreeListener(l);
}

void HeaderFailed(HeaderRead* r, const std::string& why) {
  Listener* l = r->listener;
  int fd = r->fd;
  r->fd = -1;
  Admission adm = r->adm;
  sockaddr_storage peer = r->peer;
  ServeState* st = r->st;
  if (l != nullptr) l->reads++;  // l stays through the refusal
  EndHeader(r);
  if (l == nullptr) {
    close(fd);
    return GiveBack(st, adm);
  }
  Refuse(l, fd, peer, why, kRefusedProxy);
  GiveBack(l->st, adm);
  if (--l->reads == 0 && l->closing && l->open_handles == 0) FreeListener(l);
}

void HeaderStep(HeaderRead* r) {
  ProxyHeader header;
  std::string why;
  switch (r->reader.Step(r->fd, &header, &why)) {
    case ProxyParse::kNeedMore: return;
    case ProxyParse::kInvalid: return HeaderFailed(r, why);
    case ProxyParse::kOk: break;
  }
  Listener* l = r->listener;
  int fd = r->fd;
  r->fd = -1;
  sockaddr_storage peer = r->peer;
  sockaddr_storage client = header.local ? peer : header.source;
  Admission adm = r->adm;
  l->reads++;
  EndHeader(r);
  AfterHeader(l, fd, header.local ? nullptr : &peer, client, adm);
  if (--l->reads == 0 && l->closing && l->open_handles == 0) FreeListener(l);
}

void OnHeaderPoll(uv_poll_t* h, int status, int) {
  auto* r = static_cast<HeaderRead*>(h->data);
  if (r->done) return;
  if (status < 0) return HeaderFailed(r, "uv_poll " + ErrName(-status));
  HeaderStep(r);
}

void OnHeaderTimeout(uv_timer_t* t) {
  auto* r = static_cast<HeaderRead*>(t->data);
  if (r->done) return;
  HeaderFailed(r, "no complete PROXY header within " + std::to_string(kProxyHeaderTimeoutMs / 1000) + " s");
}

// Reads the PROXY header of a client (it holds its maxconn place and rate token).
void StartHeader(Listener* l, int fd, const sockaddr_storage& peer, const Admission& adm) {
  ServeState* st = l->st;
  // The header is usually in by now, with the first segment: read it at
  // once, and set up a poll and a timer only when it is not (or not all).
  ProxyReader reader;
  ProxyHeader header;
  std::string why;
  switch (reader.Step(fd, &header, &why)) {
    case ProxyParse::kNeedMore: break;
    case ProxyParse::kInvalid: Refuse(l, fd, peer, why, kRefusedProxy); return GiveBack(st, adm);
    case ProxyParse::kOk:
      return AfterHeader(l, fd, header.local ? nullptr : &peer, header.local ? peer : header.source, adm);
  }
  auto* r = new HeaderRead();
  r->st = st;
  r->fd = fd;
  r->peer = peer;
  r->adm = adm;
  r->reader = std::move(reader);
  int err = uv_poll_init(st->loop, &r->poll, fd);
  if (err < 0) {
    delete r;
    st->Log(kError, ServiceTag(l) + ": client " + HostPort(peer, true) + ": uv_poll_init " + ErrName(-err));
    close(fd);
    return GiveBack(st, adm);
  }
  uv_timer_init(st->loop, &r->timer);
  r->poll.data = r;
  r->timer.data = r;
  r->open_handles = 2;
  r->listener = l;
  l->reads++;
  st->reading.insert(r);
  uv_poll_start(&r->poll, UV_READABLE, OnHeaderPoll);
  uv_timer_start(&r->timer, OnHeaderTimeout, kProxyHeaderTimeoutMs, 0);
}

// A place under maxconn, then a rate token, taken before accept4: a
// client is accepted only when it can be served, and the next one stays in
// the listen queue. False: none left, the listener waits. (A reservation
// that then finds the queue empty, given back at once, may make another
// worker that wanted the same last place wait one recheck: a cheap price
// for never holding a client that cannot be served.)
bool Reserve(Listener* l, Admission* adm) {
  const FastService& svc = *l->service;
  adm->slot = svc.slot;
  if (!SessionEnter(svc.slot, svc.maxconn)) {
    StartWait(l, Waiting::kMaxconn, svc.maxconn, kMaxconnRecheckMs);
    return false;
  }
  adm->entered = true;
  if (svc.rate != 0) {
    uint64_t ms = RateTake(svc.slot, svc.rate);
    if (ms != 0) {
      SessionLeave(svc.slot);
      adm->entered = false;
      StartWait(l, Waiting::kRate, svc.rate, ms);
      return false;
    }
    adm->rate = svc.rate;
  }
  return true;
}

// A new connection, with its reservation: the access lists and per-source
// refuse at once (the reservation given back); accept-proxy reads the
// header first (the client it names is the one judged).
void Admit(Listener* l, int fd, const sockaddr_storage& peer, Admission adm) {
  const FastService& svc = *l->service;
  ClientKeyOf(peer, adm.key);
  if (svc.accept_proxy) {
    if (!svc.trusted.Empty() && svc.trusted.Check(adm.key) != nullptr) {
      Refuse(l, fd, peer, "untrusted PROXY source", kRefusedProxy);
      return GiveBack(l->st, adm);
    }
    return StartHeader(l, fd, peer, adm);
  }
  if (!svc.access.Empty()) {
    const std::string* why = svc.access.Check(adm.key);
    if (why != nullptr) {
      Refuse(l, fd, peer, *why, why == &svc.access.no_allow ? kRefusedNoAllow : kRefusedDeny);
      return GiveBack(l->st, adm);
    }
  }
  if (svc.per_source != 0) {
    if (!SourceEnter(svc.slot, adm.key, svc.per_source)) {
      Refuse(l, fd, peer, "per-source " + std::to_string(svc.per_source), kRefusedPerSource);
      return GiveBack(l->st, adm);
    }
    adm.source = true;
  }
  Serve(l, fd, peer, adm);
}

// The wait is over when a place is free (a session of another worker
// ended: rechecked every kMaxconnRecheckMs) or a token is there; accepting
// again reserves anew, and a worker that lost the place or the token to
// another one waits again.
void OnWaitTimer(uv_timer_t* t) {
  auto* l = static_cast<Listener*>(t->data);
  if (l->closing || l->waiting == Waiting::kNone) return;
  const FastService& svc = *l->service;
  if (svc.maxconn != 0 && SessionsLive(svc.slot) >= svc.maxconn) {
    uv_timer_start(&l->wait, OnWaitTimer, kMaxconnRecheckMs, 0);
    return;
  }
  uint64_t ms = RatePeek(svc.slot, svc.rate);
  if (ms != 0) {
    uv_timer_start(&l->wait, OnWaitTimer, ms, 0);
    return;
  }
  EndWait(l);
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
    // At maxconn or out of tokens: the next client stays in the backlog.
    Admission adm;
    if (!Reserve(l, &adm)) return;
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    int fd = accept4(l->fd, reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      GiveBack(st, adm);
      if (err == EAGAIN || err == EWOULDBLOCK) {
        if (l->episode != Waiting::kNone) {
          st->Log(kInfo, ServiceTag(l) + ": " + LimitName(l->episode) + std::to_string(l->episode_limit) +
                             ": accepting again");
          l->episode = Waiting::kNone;
        }
        return;
      }
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      st->Log(kError, "accept on " + l->service->key + ": accept " + ErrName(err) + ": retrying in " +
                          std::to_string(kPauseMs) + " ms");
      return Pause(l);
    }
    Admit(l, fd, peer, adm);
  }
}

void FreeListener(Listener* l) {
  delete l;
}

void OnListenerClosed(uv_handle_t* h) {
  auto* l = static_cast<Listener*>(h->data);
  if (--l->open_handles > 0) return;
  if (l->fd >= 0) close(l->fd);
  l->fd = -1;
  // Header reads of its clients still use it: the last one frees it.
  if (l->reads == 0) FreeListener(l);
}

void CloseListener(Listener* l) {
  if (l->closing) return;
  l->closing = true;
  l->st->listeners.erase(l->handle_id);
  if (l->waiting == Waiting::kMaxconn) l->st->waiting_maxconn--;
  l->waiting = Waiting::kNone;
  // The refusals still to summarize: now (the workers that count more report those).
  if (l->summary_running) {
    bool pending = false;
    LogSummary(l, RefusalSummary(l->service->slot, true, &pending));
  }
  uv_timer_stop(&l->pause);
  uv_timer_stop(&l->wait);
  uv_timer_stop(&l->summary);
  uv_close(reinterpret_cast<uv_handle_t*>(&l->poll), OnListenerClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&l->pause), OnListenerClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&l->wait), OnListenerClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&l->summary), OnListenerClosed);
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

// A limit: 0 (none) or a whole number up to the config's largest.
uint32_t LimitProp(Napi::Env env, Napi::Object o, const char* key) {
  double v = NumberProp(env, o, key);
  if (!(v >= 0 && v <= 1e9) || v != std::floor(v)) ThrowType(env, (std::string("fast service: bad ") + key).c_str());
  return static_cast<uint32_t>(v);
}

std::shared_ptr<const FastService> ParseService(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) ThrowType(env, "fast service must be an object");
  Napi::Object o = v.As<Napi::Object>();
  auto s = std::make_shared<FastService>();
  s->key = StringProp(env, o, "key");
  s->accept_tail = StringProp(env, o, "acceptTail");
  Napi::Value list = o.Get("servers");
  if (!list.IsArray()) ThrowType(env, "fast service: servers must be an array");
  Napi::Array servers = list.As<Napi::Array>();
  if (servers.Length() < 1 || servers.Length() > 1024) ThrowType(env, "fast service: bad servers");
  for (uint32_t i = 0; i < servers.Length(); i++) {
    Napi::Value sv = servers.Get(i);
    if (!sv.IsObject()) ThrowType(env, "fast service: a server must be an object");
    Napi::Object so = sv.As<Napi::Object>();
    std::string address = StringProp(env, so, "address");
    double port = NumberProp(env, so, "port");
    if (!(port >= 1 && port <= 65535) || port != std::floor(port)) ThrowType(env, "fast service: bad port");
    Upstream u;
    if (!ParseIp(address, static_cast<int>(port), &u.addr, &u.len)) {
      ThrowType(env, "fast service: address must be an IP literal");
    }
    u.text = StringProp(env, so, "text");
    u.node = HostPort(u.addr, false);
    u.bracket = HostPort(u.addr, true);
    s->servers.push_back(std::move(u));
  }
  std::string balance = StringProp(env, o, "balance");
  if (balance == "first") {
    s->balance = Balance::kFirst;
  } else if (balance == "roundrobin") {
    s->balance = Balance::kRoundRobin;
  } else if (balance == "source") {
    s->balance = Balance::kSource;
  } else {
    ThrowType(env, "fast service: bad balance");
  }
  double send_proxy = NumberProp(env, o, "sendProxy");
  if (send_proxy != 0 && send_proxy != 1 && send_proxy != 2) ThrowType(env, "fast service: bad sendProxy");
  s->send_proxy = static_cast<int>(send_proxy);
  Napi::Value source = o.Get("source");
  if (!source.IsNull()) {
    if (!source.IsString()) ThrowType(env, "fast service: source must be a string or null");
    s->source_text = source.As<Napi::String>().Utf8Value();
    if (!ParseIp(s->source_text, 0, &s->source, &s->source_len)) ThrowType(env, "fast service: bad source");
    s->has_source = true;
  }
  Napi::Value trusted = o.Get("acceptProxy");
  if (!trusted.IsNull()) {
    s->accept_proxy = true;
    s->trusted = ParseAccess(env, trusted);
  }
  double idle = NumberProp(env, o, "idleMs");
  if (!(idle >= 0 && idle <= 0x7fffffff)) ThrowType(env, "fast service: bad idleMs");
  s->idle_ms = static_cast<uint64_t>(idle);
  double slot = NumberProp(env, o, "slot");
  if (!(slot >= 0 && slot < kLimitSlots) || slot != std::floor(slot)) ThrowType(env, "fast service: bad slot");
  s->slot = static_cast<uint32_t>(slot);
  s->maxconn = LimitProp(env, o, "maxconn");
  s->per_source = LimitProp(env, o, "perSource");
  s->rate = LimitProp(env, o, "rate");
  s->access = ParseAccess(env, o.Get("rules"));
  Napi::Value ka = o.Get("keepalive");
  if (!ka.IsBoolean()) ThrowType(env, "fast service: keepalive must be a boolean");
  s->keepalive = ka.As<Napi::Boolean>().Value();
  double level = NumberProp(env, o, "logLevel");
  if (!(level == 0 || level == 1 || level == 2)) ThrowType(env, "fast service: logLevel must be 0, 1 or 2");
  s->log_level = static_cast<int>(level);
  return s;
}

// A fresh health record for a service's servers.
std::shared_ptr<Group> NewGroup(const FastService& s) {
  auto g = std::make_shared<Group>();
  g->health.resize(s.servers.size());
  return g;
}

bool SameServers(const FastService& a, const FastService& b) {
  if (a.servers.size() != b.servers.size()) return false;
  for (size_t i = 0; i < a.servers.size(); i++) {
    if (a.servers[i].bracket != b.servers[i].bracket) return false;
  }
  return true;
}

// The listener's keepalive options, which its clients start with (addon.h):
// every taker of a listening socket sets them (the session code's turns them
// off, and sets them per client), so a socket that changes hands on a reload
// never keeps the last one's.
void ListenerKeepalive(Listener* l) {
  if (l->service->keepalive) {
    Keepalive(l->fd);
  } else {
    KeepaliveOff(l->fd);
  }
}

bool IsWildcard(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return reinterpret_cast<const sockaddr_in&>(ss).sin_addr.s_addr == htonl(INADDR_ANY);
  if (ss.ss_family == AF_INET6) return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr);
  return true;
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
  uv_check_init(st->loop, &st->flush_check);
  st->flush_check.data = st;
  uv_unref(reinterpret_cast<uv_handle_t*>(&st->flush_check));
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
  l->group = NewGroup(*svc);
  l->service = std::move(svc);
  l->handle_id = st.next_handle++;
  for (uv_timer_t* t : {&l->pause, &l->wait, &l->summary}) {
    uv_timer_init(st.loop, t);
    t->data = l;
  }
  l->open_handles = 3;
  int err = uv_poll_init(st.loop, &l->poll, fd);
  if (err < 0) {
    l->fd = -1;
    l->closing = true;
    for (uv_timer_t* t : {&l->pause, &l->wait, &l->summary})
      uv_close(reinterpret_cast<uv_handle_t*>(t), OnListenerClosed);
    ThrowErrno(env, "uv_poll_init", -err);
  }
  l->poll.data = l;
  l->open_handles = 4;
  socklen_t llen = sizeof l->local;
  l->local_known = getsockname(fd, reinterpret_cast<sockaddr*>(&l->local), &llen) == 0 && !IsWildcard(l->local);
  ListenerKeepalive(l);
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
  if (l == nullptr) return env.Undefined();
  // The servers' health and the rotation carry over while the group is the same.
  if (!SameServers(*l->service, *svc)) l->group = NewGroup(*svc);
  bool keepalive = l->service->keepalive;
  l->service = std::move(svc);
  if (l->service->keepalive != keepalive) ListenerKeepalive(l);
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
  std::vector<HeaderRead*> reads(st.reading.begin(), st.reading.end());
  for (HeaderRead* r : reads) {
    close(r->fd);
    r->fd = -1;
    GiveBack(&st, r->adm);
    EndHeader(r);
  }
  std::vector<Conn*> conns(st.connecting.begin(), st.connecting.end());
  for (Conn* c : conns) {
    if (c->service->log_level >= 1)
      st.Log(kInfo, "connection " + IdText(c->id) + ": end: aborted while connecting to the server");
    StopAttempt(c);
    if (c->server >= 0) close(c->server);
    c->server = -1;
    CloseClient(c);
    EndConnect(c);
  }
  std::vector<uint64_t> pumps;
  for (const auto& entry : st.pumps) pumps.push_back(entry.first);
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

// serveSessions() -> [{ id, client, service, phase, ageMs, bytesUp, bytesDown, idleMs }]:
// the fast path's sessions with a connection number, for the status socket.
Napi::Value ServeSessions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ServeState* st = StateOf(env);
  Napi::Array arr = Napi::Array::New(env);
  if (st == nullptr) return arr;
  uint64_t now = uv_now(st->loop);
  uint32_t i = 0;
  auto add = [&](double id, const std::string& client, const std::string& key, const char* phase, uint64_t age,
                 const PumpLive& l) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", id);
    o.Set("client", client);
    o.Set("service", key);
    o.Set("phase", phase);
    o.Set("ageMs", static_cast<double>(age));
    o.Set("bytesUp", static_cast<double>(l.bytes_up));
    o.Set("bytesDown", static_cast<double>(l.bytes_down));
    o.Set("idleMs", static_cast<double>(l.idle_ms));
    arr.Set(i++, o);
  };
  for (Conn* c : st->connecting) {
    uint64_t age = now > c->start_ms ? now - c->start_ms : 0;
    PumpLive l;
    l.idle_ms = age;
    add(c->id, HostPort(c->peer, true), c->service->key, "connecting", age, l);
  }
  for (const auto& entry : st->pumps) {
    PumpLive l;
    if (!PumpSnapshot(env, entry.first, &l)) continue;
    const FastSession& f = entry.second;
    add(f.id, HostPort(f.peer, true), f.service->key, "forwarding", now > f.start_ms ? now - f.start_ms : 0, l);
  }
  return arr;
}

// serveHealth() -> [{ service, down: [server places] }]: the servers this
// worker's fast path has marked down (groups of two or more only).
Napi::Value ServeHealth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ServeState* st = StateOf(env);
  Napi::Array arr = Napi::Array::New(env);
  if (st == nullptr) return arr;
  uint64_t now = uv_now(st->loop);
  uint32_t i = 0;
  for (const auto& entry : st->listeners) {
    const Listener* l = entry.second;
    if (l->closing || !l->group || !l->service) continue;
    Napi::Array down = Napi::Array::New(env);
    uint32_t n = 0;
    for (size_t k = 0; k < l->group->health.size(); k++) {
      const Health& h = l->group->health[k];
      if (h.down && now < h.until) down.Set(n++, static_cast<double>(k));
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("service", l->service->key);
    o.Set("down", down);
    arr.Set(i++, o);
  }
  return arr;
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
  for (HeaderRead* r : st->reading) {
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
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
  exports.Set("serveSessions", Napi::Function::New(env, ServeSessions, "serveSessions"));
  exports.Set("serveHealth", Napi::Function::New(env, ServeHealth, "serveHealth"));
  exports.Set("serveTake", Napi::Function::New(env, ServeTake, "serveTake"));
}

}  // namespace tcpproxy
