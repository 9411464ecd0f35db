// Connection limits shared by every worker of the daemon: live sessions per
// service (maxconn), a token bucket per service (rate), live sessions per
// service and client address (per-source), and the refusal-log budget. The
// master creates one memfd region (limitsCreate) and passes it to each
// worker with a worker index; all of them map it. A service is a slot (the
// master numbers listen keys). Counts are kept per worker too, so that the
// master can take back what a dead worker held (limitsForget) and a crash
// leaks nothing.
//
// Lock-free where one word is enough: live counts are fetch_add/fetch_sub on
// std::atomic in the shared pages (lock-free, address-free on Linux's
// 64-bit targets), the bucket is one 64-bit word (the GCRA form of a token
// bucket: the theoretical arrival time), the refusals over the log budget
// one counter that the summary takes with an exchange (so no refusal is
// reported twice, whichever process reports it). The per-source table is open
// addressing with linear probing under a robust process-shared mutex (a
// worker killed while holding it does not wedge the others).
#include "limits.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <new>

#include "addon.h"

namespace tcpproxy {

namespace {

constexpr uint32_t kMagic = 0x7470'6c33;  // "tpl3": the Slot with the summary counter and the status counts

struct Header {
  uint32_t magic;
  uint32_t slots;
  uint32_t workers;
  uint32_t table;
  pthread_mutex_t lock;
};

struct alignas(64) Slot {
  std::atomic<uint32_t> live;
  std::atomic<uint64_t> tat_ns;      // the bucket: when it is next full, in CLOCK_MONOTONIC ns
  std::atomic<uint64_t> log_second;  // the second the log budget counts
  std::atomic<uint32_t> log_lines;   // refusal lines in that second
  std::atomic<uint64_t> refused[kRefusalReasons];
  std::atomic<uint64_t> suppressed;      // refusals over the log budget, not yet in a summary line
  std::atomic<uint64_t> summary_second;  // the second (plus 1) of the last summary, of any process
  // Counted for the status socket and the metrics (never reset but with the slot).
  std::atomic<uint64_t> sessions;              // admitted since the slot was given its key
  std::atomic<uint64_t> bytes_up, bytes_down;  // of the sessions that ended
  std::atomic<uint64_t> duration_ms;           // their durations' sum
  std::atomic<uint64_t> duration_bucket[kDurationBuckets];
  std::atomic<uint64_t> connect_failed[kServerStats];
};

// Upper bounds of the duration buckets, in ms (the last is unbounded).
constexpr uint64_t kBucketMs[kDurationBuckets - 1] = {1, 10, 100, 1000, 10000, 60000, 600000, 3600000};

struct Entry {
  uint32_t slot_plus1;  // 0: empty
  uint32_t worker;
  uint8_t addr[16];
  uint32_t count;
  uint32_t unused;
};

struct Layout {
  size_t slots_at, per_worker_at, table_at, size;
};

Layout LayoutFor() {
  Layout l{};
  l.slots_at = (sizeof(Header) + 63) & ~size_t{63};
  l.per_worker_at = l.slots_at + sizeof(Slot) * kLimitSlots;
  l.table_at = l.per_worker_at + sizeof(uint32_t) * kLimitSlots * kLimitWorkers;
  l.table_at = (l.table_at + 63) & ~size_t{63};
  l.size = l.table_at + sizeof(Entry) * kSourceTable;
  return l;
}

// This process's mapping (one per process: the master and each worker).
struct Region {
  uint8_t* base = nullptr;
  size_t size = 0;
  int worker = -1;  // this process's index, -1 in the master
  Header* header() const { return reinterpret_cast<Header*>(base); }
  Slot* slot(uint32_t i) const { return reinterpret_cast<Slot*>(base + LayoutFor().slots_at) + i; }
  std::atomic<uint32_t>* mine(uint32_t worker_index, uint32_t s) const {
    auto* p = reinterpret_cast<std::atomic<uint32_t>*>(base + LayoutFor().per_worker_at);
    return p + static_cast<size_t>(worker_index) * kLimitSlots + s;
  }
  Entry* table() const { return reinterpret_cast<Entry*>(base + LayoutFor().table_at); }
};

Region g_region;  // the mapping is per process, like the fds it came from

uint64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

bool Ready(uint32_t s) {
  return g_region.base != nullptr && s < kLimitSlots;
}

class Locked {
 public:
  Locked() {
    int r = pthread_mutex_lock(&g_region.header()->lock);
    // The holder died: the table may hold one half-done insert or removal,
    // which costs at most a count; carry on.
    if (r == EOWNERDEAD) pthread_mutex_consistent(&g_region.header()->lock);
  }
  ~Locked() { pthread_mutex_unlock(&g_region.header()->lock); }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;
};

uint32_t Hash(uint32_t s, const uint8_t addr[16]) {
  uint32_t h = 2166136261u ^ s;
  for (int i = 0; i < 16; i++) h = (h ^ addr[i]) * 16777619u;
  return h & (kSourceTable - 1);
}

// Removes the entry at i, shifting later entries of the probe run back (no tombstones).
void RemoveAt(Entry* t, uint32_t i) {
  uint32_t hole = i;
  uint32_t j = i;
  for (;;) {
    j = (j + 1) & (kSourceTable - 1);
    if (t[j].slot_plus1 == 0) break;
    uint32_t home = Hash(t[j].slot_plus1 - 1, t[j].addr);
    // Move j into the hole unless its home lies cyclically in (hole, j].
    bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays) continue;
    t[hole] = t[j];
    hole = j;
  }
  t[hole] = Entry{};
}

}  // namespace

bool LimitsAttached() {
  return g_region.base != nullptr;
}

bool SessionEnter(uint32_t s, uint32_t maxconn) {
  if (!Ready(s)) return true;
  Slot* sl = g_region.slot(s);
  uint32_t before = sl->live.fetch_add(1, std::memory_order_acq_rel);
  if (maxconn != 0 && before >= maxconn) {
    sl->live.fetch_sub(1, std::memory_order_acq_rel);
    return false;
  }
  if (g_region.worker >= 0) g_region.mine(g_region.worker, s)->fetch_add(1, std::memory_order_relaxed);
  return true;
}

void SessionLeave(uint32_t s) {
  if (!Ready(s)) return;
  if (g_region.worker >= 0) {
    auto* m = g_region.mine(g_region.worker, s);
    if (m->load(std::memory_order_relaxed) == 0) return;  // forgotten already
    m->fetch_sub(1, std::memory_order_relaxed);
  }
  g_region.slot(s)->live.fetch_sub(1, std::memory_order_acq_rel);
}

uint32_t SessionsLive(uint32_t s) {
  return Ready(s) ? g_region.slot(s)->live.load(std::memory_order_acquire) : 0;
}

uint64_t RateTake(uint32_t s, uint32_t rate) {
  if (!Ready(s) || rate == 0) return 0;
  const uint64_t interval = 1000000000ull / rate;
  const uint64_t burst = interval * rate;  // a full bucket: `rate` tokens
  std::atomic<uint64_t>& tat = g_region.slot(s)->tat_ns;
  uint64_t now = NowNs();
  uint64_t cur = tat.load(std::memory_order_acquire);
  for (;;) {
    uint64_t base = cur > now ? cur : now;
    uint64_t next = base + interval;
    if (next > now + burst) {
      // No token: the next one comes when the bucket has room for it again.
      uint64_t wait_ns = next - (now + burst);
      return wait_ns / 1000000ull + 1;
    }
    if (tat.compare_exchange_weak(cur, next, std::memory_order_acq_rel)) return 0;
  }
}

uint64_t RatePeek(uint32_t s, uint32_t rate) {
  if (!Ready(s) || rate == 0) return 0;
  const uint64_t interval = 1000000000ull / rate;
  const uint64_t burst = interval * rate;
  uint64_t now = NowNs();
  uint64_t cur = g_region.slot(s)->tat_ns.load(std::memory_order_acquire);
  uint64_t next = (cur > now ? cur : now) + interval;
  if (next <= now + burst) return 0;
  return (next - (now + burst)) / 1000000ull + 1;
}

// Takes the token's interval off the arrival time: the bucket is as it was
// before the take, or fuller when time has passed (a time in the past
// counts as now), never fuller than a burst.
void RateRefund(uint32_t s, uint32_t rate) {
  if (!Ready(s) || rate == 0) return;
  const uint64_t interval = 1000000000ull / rate;
  std::atomic<uint64_t>& tat = g_region.slot(s)->tat_ns;
  uint64_t cur = tat.load(std::memory_order_acquire);
  while (!tat.compare_exchange_weak(cur, cur > interval ? cur - interval : 0, std::memory_order_acq_rel)) {
  }
}

bool SourceEnter(uint32_t s, const uint8_t addr[16], uint32_t max) {
  if (!Ready(s) || max == 0) return true;
  Locked lock;
  Entry* t = g_region.table();
  uint32_t me = g_region.worker < 0 ? kLimitWorkers : static_cast<uint32_t>(g_region.worker);
  uint32_t total = 0;
  int own = -1;
  uint32_t i = Hash(s, addr);
  uint32_t probes = 0;
  for (; t[i].slot_plus1 != 0 && probes < kSourceTable; i = (i + 1) & (kSourceTable - 1), probes++) {
    if (t[i].slot_plus1 != s + 1 || memcmp(t[i].addr, addr, 16) != 0) continue;
    total += t[i].count;
    if (t[i].worker == me) own = static_cast<int>(i);
  }
  if (total >= max) return false;
  if (own >= 0) {
    t[own].count++;
    return true;
  }
  // Full table (65,536 client addresses with live sessions of limited
  // services): admit rather than refuse someone under the limit.
  if (probes >= kSourceTable) return true;
  t[i].slot_plus1 = s + 1;
  t[i].worker = me;
  memcpy(t[i].addr, addr, 16);
  t[i].count = 1;
  return true;
}

void SourceLeave(uint32_t s, const uint8_t addr[16]) {
  if (!Ready(s)) return;
  Locked lock;
  Entry* t = g_region.table();
  uint32_t me = g_region.worker < 0 ? kLimitWorkers : static_cast<uint32_t>(g_region.worker);
  uint32_t i = Hash(s, addr);
  for (uint32_t probes = 0; t[i].slot_plus1 != 0 && probes < kSourceTable; i = (i + 1) & (kSourceTable - 1), probes++) {
    if (t[i].slot_plus1 != s + 1 || t[i].worker != me || memcmp(t[i].addr, addr, 16) != 0) continue;
    if (--t[i].count == 0) RemoveAt(t, i);
    return;
  }
}

void CountRefusal(uint32_t s, RefusalReason why) {
  if (Ready(s)) g_region.slot(s)->refused[why].fetch_add(1, std::memory_order_relaxed);
}

uint64_t Refusals(uint32_t s, RefusalReason why) {
  return Ready(s) ? g_region.slot(s)->refused[why].load(std::memory_order_relaxed) : 0;
}

bool RefusalLogAllowed(uint32_t s) {
  if (!Ready(s)) return true;
  Slot* sl = g_region.slot(s);
  uint64_t second = NowNs() / 1000000000ull;
  uint64_t seen = sl->log_second.load(std::memory_order_acquire);
  if (seen != second && sl->log_second.compare_exchange_strong(seen, second, std::memory_order_acq_rel)) {
    sl->log_lines.store(0, std::memory_order_release);
  }
  if (sl->log_lines.fetch_add(1, std::memory_order_acq_rel) < kRefusalLinesPerSecond) return true;
  sl->suppressed.fetch_add(1, std::memory_order_acq_rel);
  return false;
}

// Each process with refusals in the count asks once a second (its summary
// timer); the first to ask in a second of CLOCK_MONOTONIC wins that second
// (a compare-exchange on its number) and takes the count (an exchange to
// 0): one line a second for the service, however many workers refuse.
uint64_t RefusalSummary(uint32_t s, bool force, bool* pending) {
  *pending = false;
  if (!Ready(s)) return 0;
  Slot* sl = g_region.slot(s);
  if (sl->suppressed.load(std::memory_order_acquire) == 0) return 0;
  uint64_t second = NowNs() / 1000000000ull + 1;
  uint64_t last = sl->summary_second.load(std::memory_order_acquire);
  if (force) {
    sl->summary_second.store(second, std::memory_order_release);
  } else if (last >= second || !sl->summary_second.compare_exchange_strong(last, second, std::memory_order_acq_rel)) {
    *pending = true;
    return 0;
  }
  return sl->suppressed.exchange(0, std::memory_order_acq_rel);
}

void StatsSession(uint32_t s) {
  if (Ready(s)) g_region.slot(s)->sessions.fetch_add(1, std::memory_order_relaxed);
}

void StatsEnd(uint32_t s, uint64_t up, uint64_t down, uint64_t ms) {
  if (!Ready(s)) return;
  Slot* sl = g_region.slot(s);
  sl->bytes_up.fetch_add(up, std::memory_order_relaxed);
  sl->bytes_down.fetch_add(down, std::memory_order_relaxed);
  sl->duration_ms.fetch_add(ms, std::memory_order_relaxed);
  uint32_t b = 0;
  while (b < kDurationBuckets - 1 && ms > kBucketMs[b]) b++;
  sl->duration_bucket[b].fetch_add(1, std::memory_order_relaxed);
}

void StatsConnectFailed(uint32_t s, uint32_t server) {
  if (!Ready(s) || server >= kServerStats) return;
  g_region.slot(s)->connect_failed[server].fetch_add(1, std::memory_order_relaxed);
}

namespace {

// limitsCreate() -> fd: the master's region, mapped here too.
Napi::Value LimitsCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_region.base != nullptr) ThrowType(env, "limitsCreate: already done");
  Layout l = LayoutFor();
  int fd = memfd_create("tcpproxy-limits", MFD_CLOEXEC);
  if (fd < 0) ThrowErrno(env, "memfd_create", errno);
  if (ftruncate(fd, static_cast<off_t>(l.size)) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "ftruncate", err);
  }
  void* p = mmap(nullptr, l.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "mmap", err);
  }
  auto* h = static_cast<Header*>(p);
  h->magic = kMagic;
  h->slots = kLimitSlots;
  h->workers = kLimitWorkers;
  h->table = kSourceTable;
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&h->lock, &attr);
  pthread_mutexattr_destroy(&attr);
  g_region.base = static_cast<uint8_t*>(p);
  g_region.size = l.size;
  g_region.worker = -1;
  return Napi::Number::New(env, fd);
}

// limitsAttach(fd, worker): a worker maps the master's region; the fd is closed.
Napi::Value LimitsAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IntArg(info, 0, "limitsAttach(fd, worker): fd must be a number");
  int worker = IntArg(info, 1, "limitsAttach(fd, worker): worker must be a number");
  if (worker < 0 || worker >= static_cast<int>(kLimitWorkers)) ThrowType(env, "limitsAttach: bad worker index");
  if (g_region.base != nullptr) ThrowType(env, "limitsAttach: already attached");
  Layout l = LayoutFor();
  void* p = mmap(nullptr, l.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  close(fd);
  if (p == MAP_FAILED) ThrowErrno(env, "mmap", err);
  auto* h = static_cast<Header*>(p);
  if (h->magic != kMagic || h->slots != kLimitSlots || h->workers != kLimitWorkers || h->table != kSourceTable) {
    munmap(p, l.size);
    ThrowType(env, "limitsAttach: not a limits region of this version");
  }
  g_region.base = static_cast<uint8_t*>(p);
  g_region.size = l.size;
  g_region.worker = worker;
  return env.Undefined();
}

// The master's way into the table: it never waits for the lock. A worker
// stopped (SIGSTOP, by a handler of its uid) while holding it would stop the
// root master too, for good: nothing would then kill the stopped worker.
// False while someone holds it; a holder that died leaves it to us.
bool TryLock() {
  int r = pthread_mutex_trylock(&g_region.header()->lock);
  if (r == EOWNERDEAD) {
    pthread_mutex_consistent(&g_region.header()->lock);
    return true;
  }
  return r == 0;
}

// limitsForget(worker) -> bool: the master takes back what a dead worker
// held. Its live-session places at once; its per-source entries only when
// the table's lock is free: false when it was not, and the master calls
// again later (the worker index must stay unused until then, or a new
// worker's entries would be taken for the dead one's).
Napi::Value LimitsForget(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int worker = IntArg(info, 0, "limitsForget(worker)");
  if (g_region.base == nullptr || worker < 0 || worker >= static_cast<int>(kLimitWorkers)) {
    return Napi::Boolean::New(env, true);
  }
  for (uint32_t s = 0; s < kLimitSlots; s++) {
    uint32_t n = g_region.mine(worker, s)->exchange(0, std::memory_order_relaxed);
    if (n != 0) g_region.slot(s)->live.fetch_sub(n, std::memory_order_acq_rel);
  }
  if (!TryLock()) return Napi::Boolean::New(env, false);
  Entry* t = g_region.table();
  for (bool again = true; again;) {
    again = false;
    for (uint32_t i = 0; i < kSourceTable; i++) {
      if (t[i].slot_plus1 != 0 && t[i].worker == static_cast<uint32_t>(worker)) {
        RemoveAt(t, i);
        again = true;
      }
    }
  }
  pthread_mutex_unlock(&g_region.header()->lock);
  return Napi::Boolean::New(env, true);
}

// limitsHoldLock(): takes the table's lock and keeps it until this process
// ends (the robust mutex then passes to the next taker). For tests only: a
// worker stopped while it holds the lock.
Napi::Value LimitsHoldLock(const Napi::CallbackInfo& info) {
  if (g_region.base == nullptr) ThrowType(info.Env(), "limitsHoldLock: not attached");
  int r = pthread_mutex_lock(&g_region.header()->lock);
  if (r == EOWNERDEAD) pthread_mutex_consistent(&g_region.header()->lock);
  return info.Env().Undefined();
}

uint32_t SlotArg(const Napi::CallbackInfo& info) {
  int s = IntArg(info, 0, "slot must be a number");
  if (s < 0 || s >= static_cast<int>(kLimitSlots)) ThrowType(info.Env(), "slot out of range");
  return static_cast<uint32_t>(s);
}

uint32_t LimitArg(const Napi::CallbackInfo& info, size_t i) {
  int n = IntArg(info, i, "limit must be a number (0: none)");
  if (n < 0) ThrowType(info.Env(), "limit must be >= 0");
  return static_cast<uint32_t>(n);
}

void AddrArg(const Napi::CallbackInfo& info, size_t i, uint8_t out[16]) {
  if (info.Length() <= i || !info[i].IsString()) ThrowType(info.Env(), "address must be a string");
  if (!ClientKey(info[i].As<Napi::String>().Utf8Value(), out)) ThrowType(info.Env(), "address must be an IP literal");
}

// limitEnter(slot, maxconn) -> bool; limitLeave(slot).
Napi::Value LimitEnter(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), SessionEnter(SlotArg(info), LimitArg(info, 1)));
}
Napi::Value LimitLeave(const Napi::CallbackInfo& info) {
  SessionLeave(SlotArg(info));
  return info.Env().Undefined();
}
// rateTake(slot, rate) -> 0, or the ms until the next token; ratePeek the same without taking it.
Napi::Value RateTakeJs(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(RateTake(SlotArg(info), LimitArg(info, 1))));
}
Napi::Value RatePeekJs(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(RatePeek(SlotArg(info), LimitArg(info, 1))));
}
// sourceEnter(slot, address, max) -> bool; sourceLeave(slot, address).
Napi::Value SourceEnterJs(const Napi::CallbackInfo& info) {
  uint8_t addr[16];
  AddrArg(info, 1, addr);
  return Napi::Boolean::New(info.Env(), SourceEnter(SlotArg(info), addr, LimitArg(info, 2)));
}
Napi::Value SourceLeaveJs(const Napi::CallbackInfo& info) {
  uint8_t addr[16];
  AddrArg(info, 1, addr);
  SourceLeave(SlotArg(info), addr);
  return info.Env().Undefined();
}
// refusalCount(slot, reason 0..2); refusalLogAllowed(slot) -> bool.
Napi::Value RefusalCountJs(const Napi::CallbackInfo& info) {
  int why = IntArg(info, 1, "refusalCount(slot, reason)");
  if (why < 0 || why >= kRefusalReasons) ThrowType(info.Env(), "refusalCount: bad reason");
  CountRefusal(SlotArg(info), static_cast<RefusalReason>(why));
  return info.Env().Undefined();
}
Napi::Value RefusalLogAllowedJs(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), RefusalLogAllowed(SlotArg(info)));
}
// refusalSummary(slot, force) -> the count to log, 0: none left, -1: some left for a later call.
Napi::Value RefusalSummaryJs(const Napi::CallbackInfo& info) {
  uint32_t s = SlotArg(info);
  bool force = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
  bool pending = false;
  uint64_t n = RefusalSummary(s, force, &pending);
  return Napi::Number::New(info.Env(), pending ? -1 : static_cast<double>(n));
}

Napi::Array Counts(Napi::Env env, const std::atomic<uint64_t>* c, uint32_t n) {
  Napi::Array a = Napi::Array::New(env, n);
  for (uint32_t i = 0; i < n; i++) a.Set(i, static_cast<double>(c[i].load(std::memory_order_relaxed)));
  return a;
}

// limitStats(slot) -> { live, refused: [deny, noAllow, perSource, proxy], sessions,
// bytesUp, bytesDown, durationMs, durations: [9 buckets, not cumulative], connectFailed: [64] }.
Napi::Value LimitStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t s = SlotArg(info);
  Napi::Object o = Napi::Object::New(env);
  o.Set("live", static_cast<double>(SessionsLive(s)));
  Napi::Array r = Napi::Array::New(env, kRefusalReasons);
  for (int i = 0; i < kRefusalReasons; i++) r.Set(i, static_cast<double>(Refusals(s, static_cast<RefusalReason>(i))));
  o.Set("refused", r);
  if (!Ready(s)) return o;
  Slot* sl = g_region.slot(s);
  o.Set("sessions", static_cast<double>(sl->sessions.load(std::memory_order_relaxed)));
  o.Set("bytesUp", static_cast<double>(sl->bytes_up.load(std::memory_order_relaxed)));
  o.Set("bytesDown", static_cast<double>(sl->bytes_down.load(std::memory_order_relaxed)));
  o.Set("durationMs", static_cast<double>(sl->duration_ms.load(std::memory_order_relaxed)));
  o.Set("durations", Counts(env, sl->duration_bucket, kDurationBuckets));
  o.Set("connectFailed", Counts(env, sl->connect_failed, kServerStats));
  return o;
}

// limitsSlotReset(slot): the master gives a slot to a new listen key (no live sessions): its counts start again.
Napi::Value LimitsSlotReset(const Napi::CallbackInfo& info) {
  uint32_t s = SlotArg(info);
  if (!Ready(s)) return info.Env().Undefined();
  Slot* sl = g_region.slot(s);
  for (auto& r : sl->refused) r.store(0, std::memory_order_relaxed);
  for (auto* c : {&sl->sessions, &sl->bytes_up, &sl->bytes_down, &sl->duration_ms})
    c->store(0, std::memory_order_relaxed);
  for (auto& c : sl->duration_bucket) c.store(0, std::memory_order_relaxed);
  for (auto& c : sl->connect_failed) c.store(0, std::memory_order_relaxed);
  return info.Env().Undefined();
}

// limitsWorkerLive(worker) -> the live sessions that worker holds, over every service.
Napi::Value LimitsWorkerLive(const Napi::CallbackInfo& info) {
  int worker = IntArg(info, 0, "limitsWorkerLive(worker)");
  uint64_t n = 0;
  if (g_region.base != nullptr && worker >= 0 && worker < static_cast<int>(kLimitWorkers)) {
    for (uint32_t s = 0; s < kLimitSlots; s++) n += g_region.mine(worker, s)->load(std::memory_order_relaxed);
  }
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

// statsSession(slot): a session of the session code begins.
Napi::Value StatsSessionJs(const Napi::CallbackInfo& info) {
  StatsSession(SlotArg(info));
  return info.Env().Undefined();
}

// statsEnd(slot, up, down, ms); statsConnectFailed(slot, server): the session code's counts.
Napi::Value StatsEndJs(const Napi::CallbackInfo& info) {
  uint32_t s = SlotArg(info);
  auto n = [&](size_t i) {
    double v = info.Length() > i && info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
    if (!(v >= 0 && v < 9.0e15)) ThrowType(info.Env(), "statsEnd(slot, up, down, ms): counts must be numbers >= 0");
    return static_cast<uint64_t>(v);
  };
  StatsEnd(s, n(1), n(2), n(3));
  return info.Env().Undefined();
}
Napi::Value StatsConnectFailedJs(const Napi::CallbackInfo& info) {
  uint32_t s = SlotArg(info);
  int server = IntArg(info, 1, "statsConnectFailed(slot, server)");
  if (server >= 0) StatsConnectFailed(s, static_cast<uint32_t>(server));
  return info.Env().Undefined();
}

}  // namespace

void InitLimits(Napi::Env env, Napi::Object exports) {
  exports.Set("limitsCreate", Napi::Function::New(env, LimitsCreate, "limitsCreate"));
  exports.Set("limitsAttach", Napi::Function::New(env, LimitsAttach, "limitsAttach"));
  exports.Set("limitsForget", Napi::Function::New(env, LimitsForget, "limitsForget"));
  exports.Set("limitsHoldLock", Napi::Function::New(env, LimitsHoldLock, "limitsHoldLock"));
  exports.Set("limitEnter", Napi::Function::New(env, LimitEnter, "limitEnter"));
  exports.Set("limitLeave", Napi::Function::New(env, LimitLeave, "limitLeave"));
  exports.Set("rateTake", Napi::Function::New(env, RateTakeJs, "rateTake"));
  exports.Set("ratePeek", Napi::Function::New(env, RatePeekJs, "ratePeek"));
  exports.Set("sourceEnter", Napi::Function::New(env, SourceEnterJs, "sourceEnter"));
  exports.Set("sourceLeave", Napi::Function::New(env, SourceLeaveJs, "sourceLeave"));
  exports.Set("refusalCount", Napi::Function::New(env, RefusalCountJs, "refusalCount"));
  exports.Set("refusalLogAllowed", Napi::Function::New(env, RefusalLogAllowedJs, "refusalLogAllowed"));
  exports.Set("refusalSummary", Napi::Function::New(env, RefusalSummaryJs, "refusalSummary"));
  exports.Set("limitStats", Napi::Function::New(env, LimitStats, "limitStats"));
  exports.Set("limitsSlotReset", Napi::Function::New(env, LimitsSlotReset, "limitsSlotReset"));
  exports.Set("limitsWorkerLive", Napi::Function::New(env, LimitsWorkerLive, "limitsWorkerLive"));
  exports.Set("statsSession", Napi::Function::New(env, StatsSessionJs, "statsSession"));
  exports.Set("statsEnd", Napi::Function::New(env, StatsEndJs, "statsEnd"));
  exports.Set("statsConnectFailed", Napi::Function::New(env, StatsConnectFailedJs, "statsConnectFailed"));
}

}  // namespace tcpproxy
