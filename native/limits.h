// The shared limits (limits.cc) and the access lists (access.cc), as the
// fast path (serve.cc) calls them. A service is a slot number the master
// gives its listen key; 0 as a limit means none.
#pragma once
#include <napi.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tcpproxy {

constexpr uint32_t kLimitSlots = 4096;    // listen keys over the daemon's life (reused once idle)
constexpr uint32_t kLimitWorkers = 1024;  // worker indexes the master may give out at once
constexpr uint32_t kSourceTable = 65536;  // client addresses with live sessions of per-source services
constexpr uint32_t kRefusalLinesPerSecond = 10;
// What the status socket and the metrics count per service (limits.cc).
constexpr uint32_t kServerStats = 64;  // servers of a group with their own connect-failure count
constexpr uint32_t kDurationBuckets =
    9;  // session durations: <= 1 ms, 10 ms, 100 ms, 1 s, 10 s, 1 min, 10 min, 1 h, more

// kRefusedProxy: an untrusted PROXY source, or a header missing, malformed or late.
enum RefusalReason {
  kRefusedDeny = 0,
  kRefusedNoAllow = 1,
  kRefusedPerSource = 2,
  kRefusedProxy = 3,
  kRefusalReasons = 4
};

bool LimitsAttached();
// maxconn: takes a live-session place (false: the service is full).
bool SessionEnter(uint32_t slot, uint32_t maxconn);
void SessionLeave(uint32_t slot);
uint32_t SessionsLive(uint32_t slot);
// rate: takes a token; 0, or the ms until the next one.
uint64_t RateTake(uint32_t slot, uint32_t rate);
// rate: whether a token is there, without taking it; 0, or the ms until the next one.
uint64_t RatePeek(uint32_t slot, uint32_t rate);
// Gives back a token RateTake took for a connection that did not become a session.
void RateRefund(uint32_t slot, uint32_t rate);
// per-source: a place for this client (false: it has `max` already).
bool SourceEnter(uint32_t slot, const uint8_t addr[16], uint32_t max);
void SourceLeave(uint32_t slot, const uint8_t addr[16]);
void CountRefusal(uint32_t slot, RefusalReason why);
uint64_t Refusals(uint32_t slot, RefusalReason why);
// The shared budget of refusal lines: false once this second's are spent
// (the refusal is then counted for the summary line).
bool RefusalLogAllowed(uint32_t slot);
// A session of the service begins (its connection number is given).
void StatsSession(uint32_t slot);
// A session of the service ended: its bytes each way and its duration.
void StatsEnd(uint32_t slot, uint64_t up, uint64_t down, uint64_t ms);
// A connect to the service's server `server` (its place in the group) failed.
void StatsConnectFailed(uint32_t slot, uint32_t server);
// The refusals counted for the summary, taken by one process a second (of
// all the daemon's): the count to log (0: nothing to log); `pending` is set
// when some are left for a later call (another process took this second's
// turn). `force` takes them whatever the second (a listener that closes).
uint64_t RefusalSummary(uint32_t slot, bool force, bool* pending);

// access.cc: a client address as 16 bytes, IPv4 (and IPv4-mapped IPv6) as
// ::ffff:a.b.c.d, so one client has one key whatever socket it came in on.
void ClientKeyOf(const sockaddr_storage& ss, uint8_t out[16]);
bool ClientKey(const std::string& text, uint8_t out[16]);

struct AccessRule {
  bool v4 = false;
  uint8_t addr[16] = {};  // v4: ::ffff:a.b.c.d form
  int bits = 0;           // of the family's own length (0-32 or 0-128)
  bool allow = false;
  std::string text;  // "deny 10.0.0.0/8", for the log
};

struct AccessTable {
  std::vector<AccessRule> rules;
  bool any_allow = false;
  bool Empty() const { return rules.empty(); }
  // nullptr: admitted; else the rule that refused ("no allow matched" too).
  const std::string* Check(const uint8_t key[16]) const;
  std::string no_allow = "no allow matched";
};

// From the `rules` array src/forward/fast.ts compiles: [{ allow, family, address, bits, text }].
AccessTable ParseAccess(Napi::Env env, Napi::Value v);

void InitLimits(Napi::Env env, Napi::Object exports);
void InitAccess(Napi::Env env, Napi::Object exports);

}  // namespace tcpproxy
