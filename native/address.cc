// IP socket addresses to and from text, shared by listen.cc, serve.cc and
// fd.cc. See inet_pton(3), inet_ntop(3).
#include <arpa/inet.h>
#include <netinet/in.h>

#include "addon.h"

namespace tcpproxy {

bool ParseIp(const std::string& text, int port, sockaddr_storage* ss, socklen_t* len) {
  *ss = sockaddr_storage{};
  auto* a4 = reinterpret_cast<sockaddr_in*>(ss);
  auto* a6 = reinterpret_cast<sockaddr_in6*>(ss);
  if (inet_pton(AF_INET, text.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(static_cast<uint16_t>(port));
    *len = sizeof *a4;
    return true;
  }
  if (inet_pton(AF_INET6, text.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<uint16_t>(port));
    *len = sizeof *a6;
    return true;
  }
  return false;
}

bool IpText(const sockaddr_storage& ss, bool unmap, std::string* host, int* port, bool* v6) {
  char text[INET6_ADDRSTRLEN] = "";
  *v6 = false;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
    *port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    *port = ntohs(a->sin6_port);
    if (unmap && IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], text, sizeof text);
    } else {
      inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
      *v6 = true;
    }
  } else {
    return false;
  }
  *host = text;
  return true;
}

}  // namespace tcpproxy
