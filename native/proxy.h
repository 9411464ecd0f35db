// The PROXY protocol, versions 1 and 2 (haproxy's doc/proxy-protocol.txt):
// parsing the header a balancer puts before a client's bytes (accept-proxy)
// and building the one tcpproxy puts before them (send-proxy). proxy.cc;
// used by the fast path (serve.cc) and, through proxyRead, by the session
// code and inetd mode.
#pragma once
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tcpproxy {

// A header longer than this in all (v2: 16 bytes and its length field) is
// refused like a malformed one; v1 is at most 107 bytes by the spec.
constexpr size_t kProxyMaxHeader = 4096;
constexpr size_t kProxyV1Max = 107;
// A connection that has not sent its whole header by then is closed.
constexpr uint64_t kProxyHeaderTimeoutMs = 5000;

struct ProxyHeader {
  int version = 0;                 // 1 or 2
  size_t length = 0;               // bytes of the header, TLVs included
  bool local = false;              // v1 UNKNOWN, v2 LOCAL, or a family without addresses: keep the real peer
  sockaddr_storage source{};       // when !local: AF_INET or AF_INET6, with its port
  sockaddr_storage destination{};  // the same family
};

enum class ProxyParse { kNeedMore, kInvalid, kOk };

// Parses the start of a stream. kNeedMore: the `len` bytes are a valid
// beginning of a header that is not complete yet (so every one of them
// belongs to the header). kInvalid: `why` says what is wrong, in words for a
// log line ("no PROXY header", "malformed PROXY v1 header", "PROXY v2
// header: unknown version 3", "PROXY header over 4096 bytes", ...).
ProxyParse ParseProxyHeader(const uint8_t* data, size_t len, ProxyHeader* out, std::string* why);

// The header for a connection from `source` to `destination`: v1 text
// (`PROXY TCP4 ...\r\n`) or v2 binary with the PROXY command. An
// IPv4-mapped IPv6 address counts as IPv4; when the two families still
// differ, the IPv4 one is written IPv4-mapped and the header is TCP6.
std::string BuildProxyHeader(int version, const sockaddr_storage& source, const sockaddr_storage& destination);

// Reads a header from a non-blocking socket without taking a byte past it:
// it peeks, takes only bytes known to be the header's (all of a valid
// beginning, then exactly what is left of the header), and keeps them.
// Call Step each time the socket is readable, until it is not kNeedMore.
class ProxyReader {
 public:
  // kNeedMore: nothing more to read now (wait for readable). kInvalid: `why`
  // as ParseProxyHeader's, "closed before the end of the PROXY header" on
  // EOF, or "recv ECONNRESET" and the like for an error. kOk: `out` filled.
  ProxyParse Step(int fd, ProxyHeader* out, std::string* why);

 private:
  std::string have_;
};

}  // namespace tcpproxy
