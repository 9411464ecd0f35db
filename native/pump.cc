// pump(): forwards one proxied connection, client <-> server, until both sides
// have closed, either side fails, the idle timer fires or JS aborts. Bytes move
// socket -> pipe -> socket with splice(2) (read(2)/write(2) as the fallback) on
// Node's own event loop. Also owns the per-environment pipe pool. See splice(2),
// pipe(7) and F_GETPIPE_SZ in fcntl(2), shutdown(2), SO_LINGER in socket(7).
//
// Why uv_poll on Node's loop and not a native thread with its own epoll: the
// pump runs in per-identity worker processes whose JS is otherwise idle, and
// there the two measured the same (1 MiB pipes: 1857 vs 1829 MiB/s, 0.24 vs
// 0.23 s CPU per GiB; native-findings.md 1.8, 2.4). uv_poll only loses when JS
// blocks the loop (679 vs 1106 MiB/s with JS busy half the time), which a
// forwarding worker does not do. In exchange it needs no locks, no thread-safe
// functions and no shutdown handshake, and the session's lifetime is that of
// its libuv handles: every callback, `done` included, runs on the JS thread.
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <vector>

#include "addon.h"

namespace tcpproxy {

class PumpSession;

namespace {

// Pipes keep the default size (64 KiB): bigger ones are faster but use up the
// per-user pipe budget (pipe-user-pages-soft) after a few dozen connections of
// one identity, and then new pipes silently shrink to 8 KiB. The real size is
// read back with F_GETPIPE_SZ, never assumed.
constexpr size_t kDefaultPipeSize = 64 * 1024;
constexpr size_t kCopyBufferSize = 64 * 1024;
// Idle pipe pairs kept for reuse; extras are closed.
constexpr size_t kMaxIdlePipes = 64;
// A direction that has filled its pipe after moving kStreamBytes is a stream:
// its next pipes are big ones (kBigPipeSize, F_SETPIPE_SZ), which halve the
// splice calls per byte. At most kMaxBigPipes of them exist per process, in
// use or idle, so the per-user pipe budget (pipe-user-pages-soft, 16 MiB
// worth here) is never the reason a new connection's pipe shrinks to 8 KiB;
// F_SETPIPE_SZ failing (EPERM over the budget) just leaves the pipe at 64 KiB.
constexpr size_t kBigPipeSize = 1024 * 1024;
constexpr size_t kMaxBigPipes = 8;
constexpr uint64_t kStreamBytes = 1024 * 1024;
// Bytes one direction may move per wake-up before yielding to the loop, so a
// fast connection cannot starve timers and the other sessions. Level-triggered
// polling brings us back at once if there is more.
constexpr uint64_t kBudgetPerWakeup = 1024 * 1024;
// Never SPLICE_F_MORE: it sets MSG_MORE on the socket write, and the last
// bytes of every message then sit in the send queue until the 200 ms persist
// timer (measured: 416 ms instead of 0.1 ms per 1-byte round trip).
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

enum Side { kClient = 0, kServer = 1, kNoSide = 2 };
enum class End { kEof, kIdleTimeout, kReset, kError, kAborted };

const char* EndName(End end) {
  switch (end) {
    case End::kEof: return "eof";
    case End::kIdleTimeout: return "idle-timeout";
    case End::kReset: return "reset";
    case End::kError: return "error";
    case End::kAborted: return "aborted";
  }
  return "error";
}

struct Pipe {
  int rd = -1;
  int wr = -1;
  size_t capacity = 0;
};

void ClosePipe(Pipe* p) {
  if (p->rd >= 0) close(p->rd);
  if (p->wr >= 0) close(p->wr);
  *p = Pipe();
}

// An RST instead of a FIN: SO_LINGER {1, 0} makes close() abort the connection.
// Errors are ignored on purpose: the socket is being closed either way.
void SetAbortOnClose(int fd) {
  struct linger l = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

}  // namespace

// Per-environment state (Addon::pump): live sessions and the pipe pool. Pipes
// are handed out only while a direction has data in flight (HAProxy's
// get_pipe/put_pipe), so an idle connection holds just its two sockets.
struct PumpState {
  std::vector<Pipe> idle;
  std::vector<Pipe> big_idle;  // pipes grown to kBigPipeSize, for streams
  size_t big = 0;              // big pipes in existence, in use or idle
  std::unordered_map<uint64_t, PumpSession*> sessions;
  uint64_t next_id = 1;
  size_t busy = 0;       // pipes held by sessions
  uint64_t wakeups = 0;  // poll callbacks: a stalled session must not add to it

  // Returns 0 or the errno of pipe2(). A stream gets a big pipe when one is
  // idle or may be made, else a default one.
  int Get(Pipe* p, bool stream) {
    if (stream && !big_idle.empty()) {
      *p = big_idle.back();
      big_idle.pop_back();
      busy++;
      return 0;
    }
    if (stream && big < kMaxBigPipes) {
      int err = Get(p, false);
      if (err != 0) return err;
      int size = fcntl(p->wr, F_SETPIPE_SZ, static_cast<int>(kBigPipeSize));
      if (size >= static_cast<int>(kBigPipeSize)) {
        p->capacity = static_cast<size_t>(size);
        big++;
      }
      return 0;
    }
    if (!idle.empty()) {
      *p = idle.back();
      idle.pop_back();
      busy++;
      return 0;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) return errno;
    int size = fcntl(fds[0], F_GETPIPE_SZ);
    p->rd = fds[0];
    p->wr = fds[1];
    // Without F_GETPIPE_SZ one page is the only size a pipe is sure to have.
    p->capacity = size > 0 ? static_cast<size_t>(size) : 4096;
    busy++;
    return 0;
  }

  // Only an empty pipe goes back to the pool: bytes left in one would be
  // delivered to the next connection that takes it. A pipe shrunk by the
  // per-user budget is not kept either, so that full-size pipes come back
  // once the budget allows.
  void Put(Pipe* p, bool empty) {
    if (p->rd < 0) return;
    busy--;
    if (p->capacity >= kBigPipeSize) {
      if (empty) {
        big_idle.push_back(*p);
        *p = Pipe();
      } else {
        big--;
        ClosePipe(p);
      }
      return;
    }
    if (empty && p->capacity >= kDefaultPipeSize && idle.size() < kMaxIdlePipes) {
      idle.push_back(*p);
      *p = Pipe();
    } else {
      ClosePipe(p);
    }
  }

  ~PumpState() {
    for (Pipe& p : idle) ClosePipe(&p);
    for (Pipe& p : big_idle) ClosePipe(&p);
  }
};

class PumpSession {
 public:
  PumpSession(PumpState* state, int client, int server, uint64_t idle_ms, bool copy, PumpDone done)
      : state_(state), idle_ms_(idle_ms), copy_(copy), done_(std::move(done)) {
    fd_[kClient] = client;
    fd_[kServer] = server;
    dir_[kClient].src = kClient;  // up: client -> server
    dir_[kClient].dst = kServer;
    dir_[kServer].src = kServer;  // down: server -> client
    dir_[kServer].dst = kClient;
    start_ns_ = uv_hrtime();
  }

  // Registers the handles. On failure returns a negative libuv error; the
  // handles that were set up are closing and the session frees itself.
  int Start(uv_loop_t* loop) {
    loop_ = loop;
    // The loop's clock is cached at the start of the iteration, which may be
    // long past; without a refresh the first idle period would come up short.
    uv_update_time(loop);
    last_activity_ms_ = uv_now(loop);
    uv_timer_init(loop, &timer_);
    timer_.data = this;
    open_handles_ = 1;
    for (int side : {kClient, kServer}) {
      int err = uv_poll_init(loop, &poll_[side], fd_[side]);
      if (err < 0) {
        Abandon();
        return err;
      }
      poll_[side].data = this;
      open_handles_++;
    }
    if (idle_ms_ > 0) uv_timer_start(&timer_, OnTimer, idle_ms_, 0);
    UpdateInterest();
    return 0;
  }

  void Snapshot(PumpLive* o) const {
    o->bytes_up = dir_[kClient].bytes;
    o->bytes_down = dir_[kServer].bytes;
    uint64_t now = uv_now(loop_);
    o->idle_ms = now > last_activity_ms_ ? now - last_activity_ms_ : 0;
    o->age_ms = (uv_hrtime() - start_ns_) / 1000000ull;
  }

  // JS asked to stop: reset both peers. A no-op once the session is ending.
  void Abort() { Finish(End::kAborted, nullptr, 0, kNoSide); }

  // The environment is going away (worker exit, process teardown): reset and
  // close everything now without calling back into JS, which no longer exists
  // by the time the handles' close callbacks run. Those only free memory.
  void Detach() {
    detached_ = true;
    if (!finishing_) {
      finishing_ = true;
      end_ = End::kAborted;
      CloseHandles();
    }
    state_ = nullptr;  // the pool is going too: pipes are closed, not returned
    ReleaseResources();
    done_ = nullptr;
  }

 private:
  // One direction: bytes read from fd_[src] wait in a pipe (splice path) or a
  // buffer (copy path) until written to fd_[dst].
  struct Direction {
    int src = kClient;
    int dst = kServer;
    Pipe pipe;                    // held only while data is in flight
    std::unique_ptr<char[]> buf;  // the copy path's "pipe", same rule
    size_t off = 0;               // copy path: first pending byte in buf
    size_t pending = 0;           // bytes read from src, not yet written to dst
    // splice() into a pipe says EAGAIN both when the socket is empty and when
    // the pipe is full, and a pipe can fill up before `capacity` bytes (each
    // small skb takes a whole pipe slot). So an EAGAIN with data already in the
    // pipe means "maybe full": stop reading until a write drains some
    // (HAProxy does the same). With an empty pipe EAGAIN means "socket empty".
    bool may_be_full = false;
    bool stream = false;       // filled a pipe after kStreamBytes: gets big pipes
    bool src_drained = false;  // last read said EAGAIN; cleared by readiness
    bool dst_full = false;     // last write said EAGAIN; cleared by readiness
    bool eof = false;          // src sent FIN (splice/read returned 0)
    bool shut = false;         // eof forwarded: shutdown(dst, SHUT_WR) done
    uint64_t bytes = 0;        // delivered to dst
  };

  bool CanRead(const Direction& d) const {
    if (d.eof) return false;
    if (copy_) return d.pending < kCopyBufferSize;
    if (d.may_be_full) return false;
    return d.pipe.rd < 0 || d.pending < d.pipe.capacity;
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    auto* s = static_cast<PumpSession*>(handle->data);
    int side = handle == &s->poll_[kClient] ? kClient : kServer;
    if (s->finishing_) return;
    s->state_->wakeups++;
    if (status < 0) {
      // EPOLLERR (libuv reports it as UV_EBADF and stops the handle). Fatal:
      // SO_ERROR is consumed by reading it, and the next splice() would then
      // return 0 and forward the reset as a clean FIN. Read it only to name it.
      // Without a pending socket error no call has failed: libuv's UV_EBADF
      // stands for any EPOLLERR and is not an errno of this fd, so the end is
      // an error on this side with no error record, never an invented errno.
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(s->fd_[side], SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        s->Fail("getsockopt", errno, side);
      } else if (err != 0) {
        s->Fail("poll", err, side);
      } else {
        s->Finish(End::kError, nullptr, 0, side);
      }
      return;
    }
    Direction& out = s->dir_[side];     // this fd is its source
    Direction& in = s->dir_[1 - side];  // this fd is its destination
    if (events & (UV_READABLE | UV_DISCONNECT)) out.src_drained = false;
    if (events & UV_WRITABLE) in.dst_full = false;
    if ((events & (UV_READABLE | UV_DISCONNECT | UV_WRITABLE)) == 0) {
      out.src_drained = false;
      in.dst_full = false;
    }
    s->Run(out);
    if (!s->finishing_) s->Run(in);
    if (s->finishing_) return;
    if (s->dir_[kClient].shut && s->dir_[kServer].shut) {
      s->Finish(End::kEof, nullptr, 0, kNoSide);
    } else {
      s->UpdateInterest();
    }
  }

  // Moves what can be moved in one direction without blocking: read while the
  // pipe has room, write while it has data, until neither makes progress.
  void Run(Direction& d) {
    uint64_t moved = 0;
    while (moved < kBudgetPerWakeup && !finishing_) {
      uint64_t before = moved;
      if (!d.src_drained && CanRead(d)) {
        ssize_t n = copy_ ? ReadCopy(d) : ReadSplice(d);
        if (n < 0) return;  // the session is finishing
        moved += n;
      }
      if (d.pending > 0 && !d.dst_full) {
        ssize_t n = copy_ ? WriteCopy(d) : WriteSplice(d);
        if (n < 0) return;
        moved += n;
      }
      // Half-close: the FIN travels only after every byte read before it.
      if (d.eof && d.pending == 0 && !d.shut) {
        d.shut = true;
        if (shutdown(fd_[d.dst], SHUT_WR) < 0) {
          return Fail("shutdown", errno, d.dst);
        }
      }
      if (moved == before) break;
    }
    if (moved > 0) last_activity_ms_ = uv_now(loop_);
  }

  // Returns bytes read, 0 for EAGAIN or EOF, -1 when the session failed.
  ssize_t ReadSplice(Direction& d) {
    if (d.pipe.rd < 0) {
      int err = state_->Get(&d.pipe, d.stream);
      if (err != 0) {
        Fail("pipe2", err, kNoSide);
        return -1;
      }
    }
    size_t room = d.pipe.capacity - d.pending;  // > 0: CanRead checked it
    ssize_t n;
    do {
      n = splice(fd_[d.src], nullptr, d.pipe.wr, nullptr, room, kSpliceFlags);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      spliced_ = true;
      d.pending += n;
      if (d.pending >= d.pipe.capacity && d.bytes >= kStreamBytes) d.stream = true;
      return n;
    }
    if (n == 0) {
      d.eof = true;
    } else if (errno == EAGAIN) {
      if (d.pending > 0) {
        d.may_be_full = true;
      } else {
        d.src_drained = true;
      }
    } else if ((errno == EINVAL || errno == ENOSYS) && !spliced_) {
      // This kind of socket cannot splice (HAProxy: "splice not supported on
      // this end"). Nothing has gone through a pipe yet, so all pipes are
      // empty and the connection can switch to read/write without loss.
      copy_ = true;
      state_->Put(&dir_[kClient].pipe, true);
      state_->Put(&dir_[kServer].pipe, true);
      return 0;
    } else {
      // Act on the first error: a reset is reported once, and the next call
      // returns 0, which would forward the reset as a clean FIN.
      Fail("splice", errno, d.src);
      return -1;
    }
    if (d.pending == 0) state_->Put(&d.pipe, true);
    return 0;
  }

  ssize_t WriteSplice(Direction& d) {
    ssize_t n;
    do {
      n = splice(d.pipe.rd, nullptr, fd_[d.dst], nullptr, d.pending, kSpliceFlags);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      d.pending -= n;
      d.bytes += n;
      d.may_be_full = false;
      if (d.pending == 0) state_->Put(&d.pipe, true);
      return n;
    }
    // 0 from a pipe we believe holds data means our bookkeeping is wrong:
    // end the session rather than spin.
    return WriteStalled(d, n, "splice");
  }

  // A write (splice or write(2)) of pending bytes that moved none: EAGAIN
  // (0, wait for writable), else the end of the session (-1). A call that
  // returned 0 did not fail, so there is no errno to report, only the side.
  ssize_t WriteStalled(Direction& d, ssize_t n, const char* syscall) {
    if (n < 0 && errno == EAGAIN) {
      d.dst_full = true;
      return 0;
    }
    if (n == 0) {
      Finish(End::kError, nullptr, 0, d.dst);
    } else {
      Fail(syscall, errno, d.dst);
    }
    return -1;
  }

  ssize_t ReadCopy(Direction& d) {
    if (!d.buf) d.buf.reset(new char[kCopyBufferSize]);
    if (d.off + d.pending == kCopyBufferSize) {  // tail full: compact
      memmove(d.buf.get(), d.buf.get() + d.off, d.pending);
      d.off = 0;
    }
    size_t tail = d.off + d.pending;
    ssize_t n;
    do {
      n = read(fd_[d.src], d.buf.get() + tail, kCopyBufferSize - tail);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      d.pending += n;
      return n;
    }
    if (n == 0) {
      d.eof = true;
    } else if (errno == EAGAIN) {
      d.src_drained = true;
    } else {
      Fail("read", errno, d.src);
      return -1;
    }
    if (d.pending == 0) d.buf.reset();
    return 0;
  }

  ssize_t WriteCopy(Direction& d) {
    ssize_t n;
    do {
      n = write(fd_[d.dst], d.buf.get() + d.off, d.pending);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      d.off += n;
      d.pending -= n;
      d.bytes += n;
      if (d.pending == 0) {
        d.off = 0;
        d.buf.reset();
      }
      return n;
    }
    return WriteStalled(d, n, "write");
  }

  // Interest per fd: readable while its outgoing direction may read, writable
  // while its incoming direction has data for it. An empty set stops the poll
  // handle, and libuv then drops the fd from epoll, so the EPOLLERR/EPOLLHUP
  // that epoll reports regardless of the mask cannot spin the loop; an error
  // on such a fd surfaces on the next splice that touches it.
  void UpdateInterest() {
    for (int side : {kClient, kServer}) {
      int events = 0;
      // UV_DISCONNECT (EPOLLRDHUP) only together with UV_READABLE: it stays
      // raised after the peer's FIN, so alone it would fire forever.
      if (CanRead(dir_[side])) events |= UV_READABLE | UV_DISCONNECT;
      if (dir_[1 - side].pending > 0) events |= UV_WRITABLE;
      if (events == events_[side]) continue;
      events_[side] = events;
      if (events != 0) {
        int err = uv_poll_start(&poll_[side], events, OnPoll);
        if (err < 0) return Fail("uv_poll_start", -err, side);
      } else {
        int err = uv_poll_stop(&poll_[side]);
        if (err < 0) return Fail("uv_poll_stop", -err, side);
      }
    }
  }

  static void OnTimer(uv_timer_t* timer) {
    auto* s = static_cast<PumpSession*>(timer->data);
    if (s->finishing_) return;
    // One timer per session, re-armed on expiry from the last activity time,
    // rather than restarted on every byte moved.
    uint64_t idle = uv_now(s->loop_) - s->last_activity_ms_;
    if (idle >= s->idle_ms_) {
      s->Finish(End::kIdleTimeout, nullptr, 0, kNoSide);
    } else {
      uv_timer_start(&s->timer_, OnTimer, s->idle_ms_ - idle, 0);
    }
  }

  void Fail(const char* syscall, int err, int side) {
    End end = err == ECONNRESET || err == EPIPE ? End::kReset : End::kError;
    Finish(end, syscall, err, side);
  }

  // Ending is two steps: stop and close the handles now, then (once libuv has
  // called back for all three) close the sockets, release the pipes and call
  // `done`. libuv requires the fd to stay open while it is being polled, and
  // the session memory to live until the last close callback.
  void Finish(End end, const char* syscall, int err, int side) {
    if (finishing_) return;
    finishing_ = true;
    end_ = end;
    syscall_ = syscall;
    errno_ = err;
    side_ = side;
    CloseHandles();
  }

  void CloseHandles() {
    uv_timer_stop(&timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), OnClosed);
    // uv_close stops a poll handle itself (one EPOLL_CTL_DEL): a uv_poll_stop
    // before it would be a second DEL, which fails with ENOENT.
    for (int side : {kClient, kServer}) uv_close(reinterpret_cast<uv_handle_t*>(&poll_[side]), OnClosed);
  }

  // Start() failed at uv_poll_init: close what exists and the fds right away
  // (the caller gets an exception, not a callback), free on the last close.
  void Abandon() {
    finishing_ = true;
    detached_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), OnClosed);
    if (open_handles_ > 1) {
      uv_close(reinterpret_cast<uv_handle_t*>(&poll_[kClient]), OnClosed);
    }
    for (int side : {kClient, kServer}) {
      close(fd_[side]);
      fd_[side] = -1;
    }
    state_ = nullptr;
  }

  static void OnClosed(uv_handle_t* handle) {
    auto* s = static_cast<PumpSession*>(handle->data);
    if (--s->open_handles_ > 0) return;
    if (!s->detached_) {
      s->ReleaseResources();
      s->CallDone();
    }
    delete s;
  }

  // Every end but a clean EOF on both sides resets both peers: a transparent
  // proxy must pass an RST on as an RST, never as a FIN.
  void ReleaseResources() {
    for (int side : {kClient, kServer}) {
      if (fd_[side] < 0) continue;
      if (end_ != End::kEof) SetAbortOnClose(fd_[side]);
      close(fd_[side]);
      fd_[side] = -1;
    }
    for (Direction& d : dir_) {
      if (state_ != nullptr) {
        state_->Put(&d.pipe, d.pending == 0);
      } else {
        ClosePipe(&d.pipe);
      }
      d.buf.reset();
    }
    if (state_ != nullptr) state_->sessions.erase(id_);
  }

  void CallDone() {
    PumpOutcome o;
    o.end = EndName(end_);
    o.bytes_up = dir_[kClient].bytes;
    o.bytes_down = dir_[kServer].bytes;
    o.duration_ms = std::round((uv_hrtime() - start_ns_) / 1e6);
    o.copy = copy_;
    o.syscall = syscall_;
    o.err = errno_;
    o.side = side_ == kClient ? "client" : side_ == kServer ? "server" : nullptr;
    PumpDone done = std::move(done_);
    if (done) done(o);
  }

 public:
  uint64_t id_ = 0;

 private:
  PumpState* state_;
  uv_loop_t* loop_ = nullptr;
  int fd_[2];
  Direction dir_[2];  // indexed by source side: [kClient] is up, [kServer] down
  uv_poll_t poll_[2];
  int events_[2] = {0, 0};
  uv_timer_t timer_;
  int open_handles_ = 0;
  uint64_t idle_ms_;
  uint64_t last_activity_ms_ = 0;
  uint64_t start_ns_ = 0;
  bool copy_;
  bool spliced_ = false;    // a splice moved bytes: no more fallback to copy
  bool finishing_ = false;  // handles are closing; nothing may move any more
  bool detached_ = false;   // no JS to call back: just free on the last close
  End end_ = End::kEof;
  const char* syscall_ = nullptr;
  int errno_ = 0;
  int side_ = kNoSide;
  PumpDone done_;
};

int StartPump(Napi::Env env, int client, int server, uint64_t idle_ms, bool copy, PumpDone done, uint64_t* id) {
  Addon& addon = Addon::From(env);
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || addon.pump == nullptr) {
    close(client);
    close(server);
    return UV_ENXIO;
  }
  // Both sockets must be non-blocking: a child that had one on its stdio
  // (an ACP) leaves the shared file description blocking (libuv clears
  // O_NONBLOCK on a child's stdio), and a blocking splice would stall the loop.
  for (int fd : {client, server}) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  }
  uint64_t sid = addon.pump->next_id++;
  auto* s = new PumpSession(addon.pump, client, server, idle_ms, copy, std::move(done));
  s->id_ = sid;
  int err = s->Start(loop);
  if (err < 0) return err;
  addon.pump->sessions[sid] = s;
  *id = sid;
  return 0;
}

void AbortPump(Napi::Env env, uint64_t id) {
  PumpState* state = Addon::From(env).pump;
  if (state == nullptr) return;
  auto it = state->sessions.find(id);
  if (it != state->sessions.end()) it->second->Abort();
}

bool PumpSnapshot(Napi::Env env, uint64_t id, PumpLive* out) {
  PumpState* state = Addon::From(env).pump;
  if (state == nullptr) return false;
  auto it = state->sessions.find(id);
  if (it == state->sessions.end()) return false;
  it->second->Snapshot(out);
  return true;
}

namespace {

int FdProp(Napi::Env env, Napi::Object req, const char* key) {
  Napi::Value v = req.Get(key);
  double fd = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (fd != std::floor(fd) || fd <= 2 || fd > INT32_MAX) {
    ThrowType(env, "pump(req, done): req.client and req.server must be fds above 2");
  }
  return static_cast<int>(fd);
}

Napi::Value Pump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
    ThrowType(env, "pump(req, done)");
  }
  Napi::Object req = info[0].As<Napi::Object>();
  int client = FdProp(env, req, "client");
  int server = FdProp(env, req, "server");
  if (client == server) {
    ThrowType(env, "pump(req, done): req.client and req.server are the same fd");
  }
  Napi::Value idle = req.Get("idleMs");
  double idle_ms = idle.IsNumber() ? idle.As<Napi::Number>().DoubleValue() : -1;
  if (!(idle_ms >= 0 && idle_ms <= 0x7fffffff)) {
    ThrowType(env, "pump(req, done): req.idleMs must be a number of ms >= 0");
  }
  Napi::Value copy = req.Get("copy");
  if (!copy.IsUndefined() && !copy.IsBoolean()) {
    ThrowType(env, "pump(req, done): req.copy must be a boolean");
  }

  // From here on the fds belong to the session, on every path.
  struct JsDone {
    Napi::FunctionReference fn;
    Napi::AsyncContext async;
  };
  auto js = std::make_shared<JsDone>(
      JsDone{Napi::Persistent(info[1].As<Napi::Function>()), Napi::AsyncContext(env, "tcpproxy:pump")});
  PumpDone done = [env, js](const PumpOutcome& o) {
    Napi::HandleScope scope(env);
    // No JS frame is below us to catch an exception (from `done`, or from
    // building the result): report it like one thrown by any I/O callback,
    // i.e. 'uncaughtException', or the end of the process.
    try {
      Napi::Object r = Napi::Object::New(env);
      r.Set("end", o.end);
      r.Set("bytesUp", static_cast<double>(o.bytes_up));
      r.Set("bytesDown", static_cast<double>(o.bytes_down));
      r.Set("durationMs", o.duration_ms);
      r.Set("path", o.copy ? "copy" : "splice");
      if (o.syscall != nullptr) r.Set("error", MakeErrno(env, o.syscall, o.err));
      if (o.side != nullptr) r.Set("side", o.side);
      // napi_make_callback wants an object as the receiver.
      js->fn.MakeCallback(env.Global(), {r}, js->async);
    } catch (const Napi::Error& e) {
      napi_fatal_exception(env, e.Value());
    }
  };
  uint64_t id = 0;
  int err = StartPump(env, client, server, static_cast<uint64_t>(std::ceil(idle_ms)),
                      copy.IsBoolean() && copy.As<Napi::Boolean>().Value(), std::move(done), &id);
  if (err < 0) ThrowErrno(env, err == UV_ENXIO ? "pump" : "uv_poll_init", -err);

  // The handle refers to the session by id, so abort() after the end (when the
  // session is freed) finds nothing and does nothing.
  Napi::Object handle = Napi::Object::New(env);
  handle.Set("abort", Napi::Function::New(
                          env,
                          [id](const Napi::CallbackInfo& info) {
                            AbortPump(info.Env(), id);
                            return info.Env().Undefined();
                          },
                          "abort"));
  // stats() -> { bytesUp, bytesDown, idleMs } so far, or null once the session has ended.
  handle.Set("stats", Napi::Function::New(
                          env,
                          [id](const Napi::CallbackInfo& info) -> Napi::Value {
                            PumpLive l;
                            if (!PumpSnapshot(info.Env(), id, &l)) return info.Env().Null();
                            Napi::Object o = Napi::Object::New(info.Env());
                            o.Set("bytesUp", static_cast<double>(l.bytes_up));
                            o.Set("bytesDown", static_cast<double>(l.bytes_down));
                            o.Set("idleMs", static_cast<double>(l.idle_ms));
                            return o;
                          },
                          "stats"));
  return handle;
}

// pumpStats() -> { sessions, pipesBusy, pipesIdle, pipesBig, wakeups }: for tests and
// diagnostics.
Napi::Value PumpStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  PumpState* state = Addon::From(env).pump;
  Napi::Object o = Napi::Object::New(env);
  o.Set("sessions", static_cast<double>(state ? state->sessions.size() : 0));
  o.Set("pipesBusy", static_cast<double>(state ? state->busy : 0));
  o.Set("pipesIdle", static_cast<double>(state ? state->idle.size() : 0));
  o.Set("pipesBig", static_cast<double>(state ? state->big : 0));
  o.Set("wakeups", static_cast<double>(state ? state->wakeups : 0));
  return o;
}

// Environment teardown (worker exit, process exit): no JS callbacks any more,
// so sessions are reset and closed here, before the instance data goes away.
void CleanupPump(void* arg) {
  Addon* addon = static_cast<Addon*>(arg);
  PumpState* state = addon->pump;
  if (state == nullptr) return;
  addon->pump = nullptr;
  // Detach() drops its state pointer before releasing anything, so it does not
  // touch the map; collect first anyway so that stays a local detail.
  std::vector<PumpSession*> live;
  live.reserve(state->sessions.size());
  for (auto& entry : state->sessions) live.push_back(entry.second);
  for (PumpSession* s : live) s->Detach();
  delete state;
}

}  // namespace

void InitPump(Napi::Env env, Napi::Object exports) {
  Addon& addon = Addon::From(env);
  addon.pump = new PumpState();
  napi_add_env_cleanup_hook(env, CleanupPump, &addon);
  exports.Set("pump", Napi::Function::New(env, Pump, "pump"));
  exports.Set("pumpStats", Napi::Function::New(env, PumpStats, "pumpStats"));
}

}  // namespace tcpproxy
