// The connection path's epoll set: see reactor.h. epoll(7) on edge-triggered
// use, epoll_ctl(2), epoll_wait(2).
//
// A socket's registration carries its fd and a generation number; the table
// indexed by fd says which generation is current and who owns it. An event
// of a socket that was forgotten while its batch was being dispatched (the
// session that owned it ended on an earlier event of the same batch), or of
// an fd number since reused, names an old generation and is dropped.
#include "reactor.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <vector>

#include "addon.h"

namespace tcpproxy {

namespace {

constexpr int kBatch = 256;
// Batches per wake-up, so that other handles of the loop get their turn too;
// what is left makes the set's fd readable again, and the loop comes back.
constexpr int kMaxBatches = 4;
constexpr uint32_t kInterest = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

struct Entry {
  Watcher* w = nullptr;
  uint32_t gen = 0;  // 0: not in the set
  uint32_t seen = 0;
};

}  // namespace

struct Reactor {
  int epfd = -1;
  uv_poll_t poll;
  uv_idle_t idle;
  std::vector<Entry> table;
  std::vector<Watcher*> deferred;
  uint32_t next_gen = 1;
  uint64_t wakeups = 0;
  size_t fds = 0;
  int open_handles = 0;
  bool closed = false;

  static void OnPoll(uv_poll_t* h, int status, int) {
    auto* r = static_cast<Reactor*>(h->data);
    if (status < 0 || r->closed) return;
    r->wakeups++;
    epoll_event ev[kBatch];
    for (int round = 0; round < kMaxBatches; round++) {
      int n;
      do {
        n = epoll_wait(r->epfd, ev, kBatch, 0);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) return;
      for (int i = 0; i < n && !r->closed; i++) {
        int fd = static_cast<int>(ev[i].data.u64 & 0xffffffffu);
        uint32_t gen = static_cast<uint32_t>(ev[i].data.u64 >> 32);
        if (fd < 0 || static_cast<size_t>(fd) >= r->table.size()) continue;
        Entry& e = r->table[fd];
        if (e.gen != gen) continue;
        e.seen |= ev[i].events;
        // The entry may move (a watcher adding a socket can grow the table): not used after this.
        if (e.w != nullptr) e.w->OnEvents(fd, ev[i].events);
      }
      if (n < kBatch) return;
    }
  }

  static void OnIdle(uv_idle_t* h) {
    auto* r = static_cast<Reactor*>(h->data);
    std::vector<Watcher*> turn;
    turn.swap(r->deferred);
    uv_idle_stop(h);
    for (Watcher* w : turn) {
      // A watcher cancelled during this loop (its session ended) is no longer marked.
      if (!w->deferred) continue;
      w->deferred = false;
      w->OnDeferred();
    }
  }
};

namespace {

void OnReactorClosed(uv_handle_t* h) {
  auto* r = static_cast<Reactor*>(h->data);
  if (--r->open_handles == 0) delete r;
}

// Environment teardown. The struct lives on until its handles have closed,
// which is after every cleanup hook has run: the pump's and the fast path's
// may still forget sockets, which is then all they do.
void CleanupReactor(void* arg) {
  Addon* addon = static_cast<Addon*>(arg);
  auto* r = static_cast<Reactor*>(addon->reactor);
  if (r == nullptr) return;
  r->closed = true;
  r->deferred.clear();
  if (r->epfd >= 0) close(r->epfd);
  r->epfd = -1;
  uv_close(reinterpret_cast<uv_handle_t*>(&r->poll), OnReactorClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&r->idle), OnReactorClosed);
}

// Returns 0 or the errno of epoll_create1 (ENXIO: no loop; uv_poll_init's).
int Create(Napi::Env env) {
  Addon& addon = Addon::From(env);
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return ENXIO;
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return errno;
  auto* r = new Reactor();
  r->epfd = epfd;
  int err = uv_poll_init(loop, &r->poll, epfd);
  if (err != 0) {
    close(epfd);
    delete r;
    return -err;
  }
  r->poll.data = r;
  uv_idle_init(loop, &r->idle);
  r->idle.data = r;
  r->open_handles = 2;
  // Neither keeps the loop alive by itself: see ReactorAdd.
  uv_unref(reinterpret_cast<uv_handle_t*>(&r->poll));
  uv_unref(reinterpret_cast<uv_handle_t*>(&r->idle));
  uv_poll_start(&r->poll, UV_READABLE, Reactor::OnPoll);
  addon.reactor = r;
  napi_add_env_cleanup_hook(env, CleanupReactor, &addon);
  return 0;
}

// reactorStats() -> { fds, wakeups, deferred }: for tests and diagnostics.
Napi::Value ReactorStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* r = static_cast<Reactor*>(Addon::From(env).reactor);
  Napi::Object o = Napi::Object::New(env);
  o.Set("fds", static_cast<double>(r ? r->fds : 0));
  o.Set("wakeups", static_cast<double>(r ? r->wakeups : 0));
  o.Set("deferred", static_cast<double>(r ? r->deferred.size() : 0));
  return o;
}

}  // namespace

Reactor* ReactorOf(Napi::Env env, int* err) {
  auto* r = static_cast<Reactor*>(Addon::From(env).reactor);
  if (r == nullptr) {
    // Made at load; this is a second chance after a failure there (no fd left, say).
    int e = Create(env);
    if (err != nullptr) *err = e;
    r = static_cast<Reactor*>(Addon::From(env).reactor);
  } else if (r->closed) {
    if (err != nullptr) *err = ENXIO;
    return nullptr;
  }
  return r;
}

int ReactorAdd(Reactor* r, int fd, Watcher* w) {
  if (r == nullptr || r->closed) return ENXIO;
  if (fd < 0) return EBADF;
  if (static_cast<size_t>(fd) >= r->table.size()) r->table.resize(std::max<size_t>(fd + 1, r->table.size() * 2));
  Entry& e = r->table[fd];
  uint32_t gen = r->next_gen++;
  if (r->next_gen == 0) r->next_gen = 1;
  epoll_event ev{};
  ev.events = kInterest;
  ev.data.u64 = (static_cast<uint64_t>(gen) << 32) | static_cast<uint32_t>(fd);
  if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return errno;
  // The set's handle keeps the loop alive while it holds sockets (an
  // inetd-mode forward has no other handle), and only then.
  if (e.gen == 0 && r->fds++ == 0) uv_ref(reinterpret_cast<uv_handle_t*>(&r->poll));
  e.w = w;
  e.gen = gen;
  e.seen = 0;
  return 0;
}

void ReactorSet(Reactor* r, int fd, Watcher* w) {
  if (r == nullptr || fd < 0 || static_cast<size_t>(fd) >= r->table.size()) return;
  r->table[fd].w = w;
}

uint32_t ReactorSeen(Reactor* r, int fd) {
  if (r == nullptr || fd < 0 || static_cast<size_t>(fd) >= r->table.size()) return 0;
  return r->table[fd].seen;
}

void ReactorForget(Reactor* r, int fd, bool remove) {
  if (r == nullptr || fd < 0 || static_cast<size_t>(fd) >= r->table.size()) return;
  Entry& e = r->table[fd];
  if (e.gen == 0) return;
  if (remove && !r->closed) epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, nullptr);
  e = Entry();
  if (--r->fds == 0 && !r->closed) uv_unref(reinterpret_cast<uv_handle_t*>(&r->poll));
}

void ReactorDefer(Reactor* r, Watcher* w) {
  if (r == nullptr || r->closed || w->deferred) return;
  w->deferred = true;
  if (r->deferred.empty()) uv_idle_start(&r->idle, Reactor::OnIdle);
  r->deferred.push_back(w);
}

void ReactorCancel(Reactor* r, Watcher* w) {
  if (!w->deferred) return;
  w->deferred = false;
  if (r == nullptr) return;
  auto it = std::find(r->deferred.begin(), r->deferred.end(), w);
  if (it != r->deferred.end()) r->deferred.erase(it);
}

// The set is made at load, while the process surely has an fd to spare
// (a pump's first use may come with the fd table full); it is one fd, in
// every process and thread that loads the addon.
void InitReactor(Napi::Env env, Napi::Object exports) {
  exports.Set("reactorStats", Napi::Function::New(env, ReactorStats, "reactorStats"));
  Create(env);
}

}  // namespace tcpproxy
