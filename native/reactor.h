// The connection path's own epoll set (reactor.cc), nested in Node's loop:
// the set's fd is one uv_poll handle of the loop, and its sockets are
// registered once, edge-triggered, for reading, writing and the peer's
// FIN. A socket costs one epoll_ctl for its life (close(2) takes it out of
// the set), where a uv_poll handle costs an FIONBIO ioctl and two
// epoll_ctl at its init, and one more at each start, change and stop of
// its interest. Edge-triggered means an event says "something changed":
// the owner keeps its own "drained" and "full" flags, and reads or writes
// until the kernel says EAGAIN (or the call itself proves the socket is
// empty or full).
#pragma once
#include <napi.h>
#include <sys/epoll.h>

#include <cstdint>

namespace tcpproxy {

struct Reactor;

// Who gets a socket's events. Events come on the JS thread, from the uv_poll
// callback; a watcher may add, hand over and forget sockets from there, the
// one it is called for included.
class Watcher {
 public:
  virtual ~Watcher() = default;
  virtual void OnEvents(int fd, uint32_t events) = 0;
  // A turn asked for with ReactorDefer: go on where a budget stopped.
  virtual void OnDeferred() {}
  bool deferred = false;  // the reactor's: on its list of turns to give
};

// The env's set, or null (then `err`, if given, says why: epoll_create1's
// errno, or ENXIO once the environment is going away).
Reactor* ReactorOf(Napi::Env env, int* err = nullptr);

// Adds a socket, owned by `w` (or by nobody yet: its events are only
// remembered, see ReactorSeen). Returns 0 or an errno.
int ReactorAdd(Reactor* r, int fd, Watcher* w);
// Gives a socket of the set to another watcher, with no system call.
void ReactorSet(Reactor* r, int fd, Watcher* w);
// The events seen for the socket since it was added (EPOLLIN, EPOLLOUT, ...).
uint32_t ReactorSeen(Reactor* r, int fd);
// Before the socket is closed: no more events for it, including those
// already fetched in the batch being dispatched. `remove` takes it out of
// the set as well (EPOLL_CTL_DEL): needed when another fd shares the file
// description (a dup kept elsewhere), as close(2) then leaves it in.
void ReactorForget(Reactor* r, int fd, bool remove);
// One more turn for `w` on the next loop iteration (from the loop's idle
// phase): for a watcher that stopped short of EAGAIN, which edge-triggered
// epoll would never wake again.
void ReactorDefer(Reactor* r, Watcher* w);
void ReactorCancel(Reactor* r, Watcher* w);

void InitReactor(Napi::Env env, Napi::Object exports);

}  // namespace tcpproxy
