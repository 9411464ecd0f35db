/**
 * The message of a listening socket that cannot be bound: the address, the
 * errno and its text, and for EACCES on a port below the sysctl
 * net.ipv4.ip_unprivileged_port_start what would let the bind succeed.
 * The real EACCES, as uid 65534: test/privileged/low-port.test.ts.
 */
import { cannotListenMessage } from '../../src/modes/listener';

describe('cannotListenMessage', () => {
  test('EACCES below the first unprivileged port names root and CAP_NET_BIND_SERVICE', () => {
    expect(cannotListenMessage({ iface: '127.0.0.1', port: 80 }, 'EACCES', 1024)).toBe(
      'cannot listen on 127.0.0.1:80: EACCES (permission denied): ports below 1024 need root or CAP_NET_BIND_SERVICE',
    );
    expect(cannotListenMessage({ iface: null, port: 1023 }, 'EACCES', 1024)).toBe(
      'cannot listen on *:1023: EACCES (permission denied): ports below 1024 need root or CAP_NET_BIND_SERVICE',
    );
    expect(cannotListenMessage({ iface: '::1', port: 443 }, 'EACCES', 500)).toBe(
      'cannot listen on [::1]:443: EACCES (permission denied): ports below 500 need root or CAP_NET_BIND_SERVICE',
    );
  });

  test('EACCES on a port anyone may bind (an LSM said no) and the other codes: no hint', () => {
    expect(cannotListenMessage({ iface: '127.0.0.1', port: 1024 }, 'EACCES', 1024)).toBe('cannot listen on 127.0.0.1:1024: EACCES (permission denied)');
    expect(cannotListenMessage({ iface: '127.0.0.1', port: 80 }, 'EADDRINUSE', 1024)).toBe('cannot listen on 127.0.0.1:80: EADDRINUSE (address already in use)');
    expect(cannotListenMessage({ iface: '192.0.2.1', port: 80 }, 'EADDRNOTAVAIL', 1024)).toBe('cannot listen on 192.0.2.1:80: EADDRNOTAVAIL (no such local address)');
  });
});
