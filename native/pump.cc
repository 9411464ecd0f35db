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
#include <sys/epoll.h>
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
#include "reactor.h"

namespace tcpproxy {

class PumpSession;

namespace {

// Pipes keep the default size (64 KiB): bigger ones are faster but use up the
// per-user pipe budget (pipe-user-pages-soft) after a few dozen connections of
// one identity, and then new pipes silently shrink to 8 KiB. The real size is
// read back with F_GETPIPE_SZ, never assumed.
constexpr size_t kDefaultPipeSize = 64 * 1024;
constexpr size_t kCopyBufferSize = 64 * 1024;
// Idle pipe pairs and copy buffers kept for reuse; extras are closed or freed.
constexpr size_t kMaxIdlePipes = 64;
constexpr size_t kMaxIdleBuffers = 64;
constexpr int kBigReads = 2;
// splice-auto (HAProxy's name), the default: a direction moves its bytes
// through a buffer with read(2)/write(2) until its reads show a stream (one
// that fills the buffer, or two in a row of half of it or more), and splices
// from then on. A small message then costs one read, which by
// coming back short proves the socket empty, and one write; through a pipe
// it costs a splice in, a splice out and a splice that says EAGAIN, as a
// pipe gives no such proof. Streams reach the pipe within their first
// buffer. (Measured, bench `--base`: CPU per connection 100 against 106 µs,
// RTT p50 122 against 124 µs, with splice from the first byte.)
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
  uint64_t wakeups = 0;  // events and turns given to sessions: a stalled session must not add to it
  std::vector<std::unique_ptr<char[]>> buffers;  // idle copy buffers

  std::unique_ptr<char[]> GetBuffer() {
    if (buffers.empty()) return std::unique_ptr<char[]>(new char[kCopyBufferSize]);
    std::unique_ptr<char[]> b = std::move(buffers.back());
    buffers.pop_back();
    return b;
  }

  void PutBuffer(std::unique_ptr<char[]> b) {
    if (b && buffers.size() < kMaxIdleBuffers) buffers.push_back(std::move(b));
  }

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

class PumpSession : public Watcher {
 public:
  PumpSession(PumpState* state, int client, int server, uint64_t idle_ms, bool copy, bool automatic, PumpDone done)
      : state_(state), idle_ms_(idle_ms), copy_(copy), done_(std::move(done)) {
    fd_[kClient] = client;
    fd_[kServer] = server;
    dir_[kClient].src = kClient;  // up: client -> server
    dir_[kClient].dst = kServer;
    dir_[kServer].src = kServer;  // down: server -> client
    dir_[kServer].dst = kClient;
    // Without splice-auto a direction splices from its first byte.
    for (Direction& d : dir_) d.splice = !copy_ && !automatic;
    start_ns_ = uv_hrtime();
  }

  // Takes both sockets into the reactor's set: `registered` ones are there
  // already (the fast path's, with what was seen of them while connecting),
  // others are added, and taken out again at the end (JS may hold a dup).
  // On failure returns an errno; the fds are closed and the session frees
  // itself.
  int Start(uv_loop_t* loop, Reactor* reactor, bool registered) {
    loop_ = loop;
    reactor_ = reactor;
    own_set_ = !registered;
    // The loop's clock is cached at the start of the iteration, which may be
    // long past; without a refresh the first idle period would come up short.
    uv_update_time(loop);
    last_activity_ms_ = uv_now(loop);
    uv_timer_init(loop, &timer_);
    timer_.data = this;
    for (int side : {kClient, kServer}) {
      if (registered) {
        ReactorSet(reactor, fd_[side], this);
        continue;
      }
      int err = ReactorAdd(reactor, fd_[side], this);
      if (err != 0) {
        if (side == kServer) ReactorForget(reactor, fd_[kClient], true);
        Abandon();
        return err;
      }
    }
    if (idle_ms_ > 0) uv_timer_start(&timer_, OnTimer, idle_ms_, 0);
    // Edge-triggered: what arrived while the sockets were someone else's
    // (the client's first bytes, during the connect) raises no new event.
    bool ready = false;
    for (int side : {kClient, kServer}) {
      uint32_t seen = registered ? ReactorSeen(reactor, fd_[side]) : 0;
      Direction& out = dir_[side];
      out.src_drained = (seen & kReadable) == 0;
      if (seen & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) out.rdhup = true;
      if (!out.src_drained) ready = true;
    }
    if (ready) Step(nullptr, 0);
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
  // `done` comes later, from the loop, never from inside the caller's call.
  void Abort() { Finish(End::kAborted, nullptr, 0, kNoSide, false); }

  // The environment is going away (worker exit, process teardown): reset and
  // close everything now without calling back into JS, which no longer exists
  // by the time the timer's close callback runs. That only frees memory.
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

  void OnEvents(int fd, uint32_t events) override {
    if (finishing_) return;
    Step(fd == fd_[kClient] ? &dir_[kClient] : &dir_[kServer], events);
  }

  void OnDeferred() override {
    if (!finishing_) Step(nullptr, 0);
  }

 private:
  static constexpr uint32_t kReadable = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR;

  // One direction: bytes read from fd_[src] wait in a pipe (splice) or a
  // buffer (copy) until written to fd_[dst].
  struct Direction {
    int src = kClient;
    int dst = kServer;
    bool splice = false;          // through a pipe; else through a buffer
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
    bool filled = false;       // copy: a stream (see ReadCopy); splice from when the buffer is empty
    int big_reads = 0;         // copy: reads in a row of half a buffer or more
    bool src_drained = false;  // src has nothing to read; cleared by its next event
    bool dst_full = false;     // dst takes nothing more; cleared by its next event
    // src's peer has sent its FIN (EPOLLRDHUP): a short read no longer
    // proves src empty, as the FIN behind the bytes raises no new event.
    bool rdhup = false;
    bool eof = false;    // src sent FIN (splice/read returned 0)
    bool shut = false;   // eof forwarded: shutdown(dst, SHUT_WR) done, or left to close(2)
    uint64_t bytes = 0;  // delivered to dst
  };

  bool CanRead(const Direction& d) const {
    if (d.eof) return false;
    if (!d.splice) return d.pending < kCopyBufferSize;
    if (d.may_be_full) return false;
    return d.pipe.rd < 0 || d.pending < d.pipe.capacity;
  }

  // An event of one socket (`out` is the direction it is the source of), or
  // none (a deferred turn, the start): move what can be moved both ways.
  void Step(Direction* out, uint32_t events) {
    state_->wakeups++;
    if (out != nullptr) {
      int side = out->src;
      if (events & EPOLLERR) {
        // Fatal: SO_ERROR is consumed by reading it, and the next splice()
        // would then return 0 and forward the reset as a clean FIN. Read it
        // only to name it. Without a pending socket error no call has failed,
        // so the end is an error on this side with no errno invented for it.
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd_[side], SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
          Fail("getsockopt", errno, side);
        } else if (err != 0) {
          Fail("poll", err, side);
        } else {
          Finish(End::kError, nullptr, 0, side);
        }
        return;
      }
      Direction& in = dir_[1 - side];  // this fd is its destination
      if (events & kReadable) out->src_drained = false;
      if (events & (EPOLLRDHUP | EPOLLHUP)) out->rdhup = true;
      if (events & (EPOLLOUT | EPOLLHUP)) in.dst_full = false;
    }
    bool more = Run(dir_[kClient]);
    if (!finishing_) more = Run(dir_[kServer]) || more;
    if (finishing_) return;
    if (dir_[kClient].shut && dir_[kServer].shut) {
      Finish(End::kEof, nullptr, 0, kNoSide);
    } else if (more) {
      ReactorDefer(reactor_, this);
    }
  }

  // Moves what can be moved in one direction without blocking: read while
  // there is room, write while there is data, until neither makes progress.
  // True: stopped by the budget with more to move (the caller defers).
  bool Run(Direction& d) {
    uint64_t moved = 0;
    bool more = false;
    while (!finishing_) {
      if (moved >= kBudgetPerWakeup) {
        more = true;
        break;
      }
      uint64_t before = moved;
      if (!d.src_drained && CanRead(d)) {
        ssize_t n = d.splice ? ReadSplice(d) : ReadCopy(d);
        if (n < 0) return false;  // the session is finishing
        moved += n;
      }
      if (d.pending > 0 && !d.dst_full) {
        ssize_t n = d.splice ? WriteSplice(d) : WriteCopy(d);
        if (n < 0) return false;
        moved += n;
      }
      // Half-close: the FIN travels only after every byte read before it.
      // When the other way is over too, close(2) at the end sends it.
      if (d.eof && d.pending == 0 && !d.shut) {
        d.shut = true;
        if (!dir_[1 - d.src].shut && shutdown(fd_[d.dst], SHUT_WR) < 0) {
          Fail("shutdown", errno, d.dst);
          return false;
        }
      }
      if (moved == before) break;
    }
    if (moved > 0) last_activity_ms_ = uv_now(loop_);
    return more;
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
    } else if ((errno == EINVAL || errno == ENOSYS) && d.pending == 0) {
      // This kind of socket cannot splice (HAProxy: "splice not supported on
      // this end"). The pipe is empty, so the direction can switch to
      // read/write without loss, for good.
      copy_ = true;
      for (Direction& any : dir_) {
        if (any.pending == 0) state_->Put(&any.pipe, true);
        if (any.pipe.rd < 0) any.splice = false;
      }
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
      if (d.pending == 0) {
        state_->Put(&d.pipe, true);
        // A direction of a session that fell back to copy goes on with it.
        if (copy_) d.splice = false;
      }
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
    if (!d.buf) d.buf = state_->GetBuffer();
    if (d.off + d.pending == kCopyBufferSize) {  // tail full: compact
      memmove(d.buf.get(), d.buf.get() + d.off, d.pending);
      d.off = 0;
    }
    size_t tail = d.off + d.pending;
    size_t room = kCopyBufferSize - tail;
    ssize_t n;
    do {
      n = read(fd_[d.src], d.buf.get() + tail, room);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      d.pending += n;
      copied_ = true;
      if (static_cast<size_t>(n) < room) {
        // A stream socket that gives less than asked for had no more (TCP
        // copies until the buffer is full or the queue empty): wait for its
        // next event, unless its FIN is in and would raise none.
        if (!d.rdhup) d.src_drained = true;
      }
      // A stream: splice from when the buffer is empty. A read that fills the
      // buffer says so, and so do reads of half a buffer or more in a row: on
      // loopback a reader that keeps up gets one segment a read, 65,483 bytes
      // at most, and never fills 64 KiB.
      d.big_reads = static_cast<size_t>(n) >= kCopyBufferSize / 2 ? d.big_reads + 1 : 0;
      if (!copy_ && (d.pending == kCopyBufferSize || d.big_reads >= kBigReads)) d.filled = true;
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
    if (d.pending == 0) state_->PutBuffer(std::move(d.buf));
    return 0;
  }

  ssize_t WriteCopy(Direction& d) {
    ssize_t n;
    do {
      n = write(fd_[d.dst], d.buf.get() + d.off, d.pending);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      // A short write: the socket's send buffer is full; its next event says when it has room.
      if (static_cast<size_t>(n) < d.pending) d.dst_full = true;
      d.off += n;
      d.pending -= n;
      d.bytes += n;
      if (d.pending == 0) {
        d.off = 0;
        state_->PutBuffer(std::move(d.buf));
        if (d.filled) d.splice = true;
      }
      return n;
    }
    return WriteStalled(d, n, "write");
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

  // Ending: no more events, the sockets closed, the pipes released and
  // `done` called, now (an event or the timer: the fast path's end line is
  // then flushed in this loop iteration), or once libuv has closed the timer
  // (`now` false: an abort, which a JS call made). The memory goes with the
  // timer's close.
  void Finish(End end, const char* syscall, int err, int side, bool now = true) {
    if (finishing_) return;
    finishing_ = true;
    end_ = end;
    syscall_ = syscall;
    errno_ = err;
    side_ = side;
    CloseHandles();
    if (now) Conclude();
  }

  void Conclude() {
    if (ended_ || detached_) return;
    ended_ = true;
    ReleaseResources();
    CallDone();
  }

  void CloseHandles() {
    ReactorCancel(reactor_, this);
    for (int side : {kClient, kServer}) {
      if (fd_[side] >= 0) ReactorForget(reactor_, fd_[side], own_set_);
    }
    uv_timer_stop(&timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), OnClosed);
  }

  // Start() could not add a socket to the set: close the fds right away (the
  // caller gets an error, not a callback), free on the timer's close.
  void Abandon() {
    finishing_ = true;
    detached_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), OnClosed);
    for (int side : {kClient, kServer}) {
      close(fd_[side]);
      fd_[side] = -1;
    }
    state_ = nullptr;
  }

  static void OnClosed(uv_handle_t* handle) {
    auto* s = static_cast<PumpSession*>(handle->data);
    s->Conclude();
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
        if (d.buf) state_->PutBuffer(std::move(d.buf));
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
    // copy: read/write was all there was, or all that moved bytes (small
    // messages under splice-auto); splice once a pipe has moved any.
    o.copy = copy_ ? !spliced_ : copied_ && !spliced_;
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
  Reactor* reactor_ = nullptr;
  uv_loop_t* loop_ = nullptr;
  int fd_[2];
  Direction dir_[2];  // indexed by source side: [kClient] is up, [kServer] down
  uv_timer_t timer_;
  uint64_t idle_ms_;
  uint64_t last_activity_ms_ = 0;
  uint64_t start_ns_ = 0;
  bool copy_;               // read/write only: asked for, or a socket that cannot splice
  bool own_set_ = false;    // the sockets were added by Start: taken out of the set at the end
  bool spliced_ = false;    // a splice moved bytes
  bool copied_ = false;     // a read moved bytes
  bool finishing_ = false;  // the session is ending; nothing may move any more
  bool detached_ = false;   // no JS to call back: just free on the timer's close
  bool ended_ = false;      // Conclude() has run
  End end_ = End::kEof;
  const char* syscall_ = nullptr;
  int errno_ = 0;
  int side_ = kNoSide;
  PumpDone done_;
};

int StartPump(Napi::Env env, int client, int server, uint64_t idle_ms, bool copy, bool automatic, bool registered,
              PumpDone done, uint64_t* id, const char** syscall) {
  if (syscall != nullptr) *syscall = "epoll_ctl";
  Addon& addon = Addon::From(env);
  uv_loop_t* loop = nullptr;
  int reactor_err = ENXIO;
  Reactor* reactor = ReactorOf(env, &reactor_err);
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || addon.pump == nullptr || reactor == nullptr) {
    // (Registered sockets imply a reactor: only the loop or the pump can be missing then.)
    if (registered && reactor != nullptr) {
      ReactorForget(reactor, client, false);
      ReactorForget(reactor, server, false);
    }
    close(client);
    close(server);
    if (syscall != nullptr) *syscall = reactor == nullptr && reactor_err != ENXIO ? "epoll_create1" : "pump";
    return reactor == nullptr ? reactor_err : ENXIO;
  }
  // Both sockets must be non-blocking: a child that had one on its stdio
  // (an ACP) leaves the shared file description blocking (libuv clears
  // O_NONBLOCK on a child's stdio), and a blocking splice would stall the
  // loop. The fast path's sockets were made non-blocking by accept4 and socket.
  if (!registered) {
    for (int fd : {client, server}) {
      int fl = fcntl(fd, F_GETFL);
      if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    }
  }
  uint64_t sid = addon.pump->next_id++;
  auto* s = new PumpSession(addon.pump, client, server, idle_ms, copy, automatic, std::move(done));
  s->id_ = sid;
  addon.pump->sessions[sid] = s;
  int err = s->Start(loop, reactor, registered);
  if (err != 0) {
    addon.pump->sessions.erase(sid);
    return err;
  }
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
  Napi::Value automatic = req.Get("auto");
  if (!automatic.IsUndefined() && !automatic.IsBoolean()) {
    ThrowType(env, "pump(req, done): req.auto must be a boolean");
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
  const char* syscall = nullptr;
  int err =
      StartPump(env, client, server, static_cast<uint64_t>(std::ceil(idle_ms)),
                copy.IsBoolean() && copy.As<Napi::Boolean>().Value(),
                !automatic.IsBoolean() || automatic.As<Napi::Boolean>().Value(), false, std::move(done), &id, &syscall);
  if (err != 0) ThrowErrno(env, syscall, err);

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
