import type { PortResolver } from '../../src/table/address';
import { parseConfig } from '../../src/table/config';
import {
  DEFAULT_PREFIX,
  DEFAULT_PROCESS_MAXCONN,
  DEFAULT_TIMEOUT_SEC,
  describeTarget,
  listenAddresses,
  listenKey,
  lookupService,
  maxconnOf,
  parseTarget,
  splitCommand,
  type Service,
  type Target,
} from '../../src/table/service';
import { SERVICE_DEFAULTS } from '../helpers/service';

const resolve: PortResolver = (name) => (name === 'smtp' ? 25 : null);

let nextLine = 1;

/** A service on `port`/`iface` forwarding to `upstream`; the origin line makes each one distinct. */
function svc(port: number, iface: string | null, upstream = '127.0.0.1'): Service {
  return {
    port,
    iface,
    target: { kind: 'server', servers: [{ host: upstream, port: null }] },
    ...SERVICE_DEFAULTS,
    origin: { file: 'test.conf', line: nextLine++ },
  };
}

describe('defaults', () => {
  it('match the man page', () => {
    expect(DEFAULT_TIMEOUT_SEC).toBe(60);
    expect(DEFAULT_PREFIX).toBe('PROXY_');
  });
});

describe('lookupService', () => {
  const anySmtp = svc(25, null, 'any');
  const inside = svc(25, '192.168.1.1', 'inside');
  const outside = svc(25, '192.44.100.7', 'outside');
  const loop2 = svc(25, '127.0.0.2', 'loop2');
  const v6 = svc(25, '2001:db8::1', 'v6');
  const nntpA = svc(119, '192.168.1.1', 'nntp-a');
  const nntpB = svc(119, '192.168.2.1', 'nntp-b');
  // The any-interface entry comes first: order must not decide over an exact match.
  const table = [anySmtp, inside, outside, loop2, v6, nntpA, nntpB];

  it('prefers the entry of the exact local address', () => {
    expect(lookupService(table, '192.168.1.1', 25)).toBe(inside);
    expect(lookupService(table, '192.44.100.7', 25)).toBe(outside);
    expect(lookupService(table, '192.168.2.1', 119)).toBe(nntpB);
  });

  it('falls back to the port\'s any-interface entry', () => {
    expect(lookupService(table, '10.0.0.1', 25)).toBe(anySmtp);
    expect(lookupService(table, '::1', 25)).toBe(anySmtp);
  });

  it('finds the any-interface entry wherever it is in the table', () => {
    const later = svc(25, null, 'later');
    expect(lookupService([inside, later, outside], '10.0.0.1', 25)).toBe(later);
  });

  it('matches an IPv4-mapped local address to the IPv4 interface', () => {
    expect(lookupService(table, '::ffff:127.0.0.2', 25)).toBe(loop2);
    expect(lookupService(table, '::ffff:192.168.1.1', 119)).toBe(nntpA);
  });

  it('normalises an IPv6 local address before comparing', () => {
    expect(lookupService(table, '2001:DB8:0:0:0:0:0:1', 25)).toBe(v6);
    expect(lookupService(table, '2001:db8::1', 25)).toBe(v6);
    const loopback6 = svc(8080, '::1');
    expect(lookupService([loopback6], '0:0:0:0:0:0:0:1', 8080)).toBe(loopback6);
  });

  it('returns null when neither the interface nor the port has an entry', () => {
    expect(lookupService(table, '10.0.0.1', 119)).toBeNull();
    expect(lookupService(table, '192.168.1.1', 110)).toBeNull();
    expect(lookupService(table, '::ffff:10.0.0.1', 119)).toBeNull();
    expect(lookupService([], '127.0.0.1', 25)).toBeNull();
  });

  it('does not match an interface of another port', () => {
    expect(lookupService([inside], '192.168.1.1', 26)).toBeNull();
  });
});

describe('listenAddresses', () => {
  it("gives a port's any-interface entry and each of its interface entries a socket of their own", () => {
    const table = [svc(25, '192.168.1.1'), svc(25, null), svc(25, '192.44.100.7')];
    expect(listenAddresses(table)).toEqual([
      { iface: '192.168.1.1', port: 25 },
      { iface: null, port: 25 },
      { iface: '192.44.100.7', port: 25 },
    ]);
  });

  it('listens on each interface of a port without one, in table order, once each', () => {
    const table = [svc(119, '192.168.1.1'), svc(119, '192.168.2.1'), svc(119, '192.168.1.1')];
    expect(listenAddresses(table)).toEqual([
      { iface: '192.168.1.1', port: 119 },
      { iface: '192.168.2.1', port: 119 },
    ]);
  });

  it('treats each port on its own', () => {
    const table = [
      svc(25, '192.168.1.1'),
      svc(110, '192.44.100.7'),
      svc(25, null),
      svc(119, '192.168.1.1'),
      svc(119, '::1'),
      svc(8080, null),
    ];
    expect(listenAddresses(table)).toEqual([
      { iface: '192.168.1.1', port: 25 },
      { iface: '192.44.100.7', port: 110 },
      { iface: null, port: 25 },
      { iface: '192.168.1.1', port: 119 },
      { iface: '::1', port: 119 },
      { iface: null, port: 8080 },
    ]);
  });

  it('binds the same address on different ports separately', () => {
    expect(listenAddresses([svc(25, '127.0.0.2'), svc(26, '127.0.0.2')])).toEqual([
      { iface: '127.0.0.2', port: 25 },
      { iface: '127.0.0.2', port: 26 },
    ]);
  });

  it('is empty for an empty table', () => {
    expect(listenAddresses([])).toEqual([]);
  });

  it('names each socket by its listen key', () => {
    expect(listenAddresses([svc(25, null), svc(25, '127.0.0.2'), svc(25, '::1')]).map(listenKey)).toEqual([
      '*:25',
      '127.0.0.2:25',
      '[::1]:25',
    ]);
  });
});

describe('splitCommand', () => {
  it.each<[string, string[]]>([
    ['/bin/date', ['/bin/date']],
    ['/usr/local/sbin/pop3.proxy mail.domain.com', ['/usr/local/sbin/pop3.proxy', 'mail.domain.com']],
    ['  ./handler \t -a\t\tb  ', ['./handler', '-a', 'b']],
    // no shell and no quoting: quotes and metacharacters are ordinary characters
    ['/bin/echo "a b"', ['/bin/echo', '"a', 'b"']],
    ['/bin/sh -c $HOME;id', ['/bin/sh', '-c', '$HOME;id']],
    ['', []],
    [' \t ', []],
  ])('splits %j', (text, argv) => {
    expect(splitCommand(text)).toEqual(argv);
  });
});

describe('parseTarget', () => {
  it.each([
    ['/bin/date', ['/bin/date']],
    ['./handler', ['./handler']],
    ['../bin/handler x', ['../bin/handler', 'x']],
    ['/usr/local/sbin/pop3.proxy mail.domain.com', ['/usr/local/sbin/pop3.proxy', 'mail.domain.com']],
    ['  /bin/cat\t-u  ', ['/bin/cat', '-u']],
  ])('takes %j as a request handler', (text, argv) => {
    expect(parseTarget(text, resolve)).toEqual({ ok: true, value: { kind: 'exec', argv } });
  });

  it.each([
    ['mail.provider.com', { host: 'mail.provider.com', port: null }],
    ['Mail.Provider.COM:smtp', { host: 'mail.provider.com', port: 25 }],
    [' 127.0.0.1:8080 ', { host: '127.0.0.1', port: 8080 }],
    ['[::1]:8080', { host: '::1', port: 8080 }],
    ['::1', { host: '::1', port: null }],
  ])('takes %j as host[:port]', (text, server) => {
    expect(parseTarget(text, resolve)).toEqual({ ok: true, value: { kind: 'server', servers: [server] } });
  });

  it.each([
    ['mail.provider.com 25', [{ host: 'mail.provider.com', port: null }, { host: '25', port: null }]],
    [' a\tb:smtp  [::1]:80 ', [{ host: 'a', port: null }, { host: 'b', port: 25 }, { host: '::1', port: 80 }]],
  ])('takes the words of %j as a group of servers', (text, servers) => {
    expect(parseTarget(text, resolve)).toEqual({ ok: true, value: { kind: 'server', servers } });
  });

  it.each([
    ['host\t:25', 'invalid server ":25": expected host[:port]'],
    ['a b A', 'server "A" is listed twice'],
    ['a x! y!', 'invalid server host "x!"'],
    ['', 'invalid server "": expected host[:port]'],
    ['   ', 'invalid server "": expected host[:port]'],
    ['host:0', 'server "host:0": port 0 is out of range (1-65535)'],
    ['host:nosuch', 'server "host:nosuch": unknown service name "nosuch"'],
    ['host!name', 'invalid server host "host!name"'],
  ])('rejects %j', (text, error) => {
    expect(parseTarget(text, resolve)).toEqual({ ok: false, error });
  });
});

describe('describeTarget', () => {
  const server = (host: string, port: number | null): Target => ({ kind: 'server', servers: [{ host, port }] });

  it.each([
    [server('127.0.0.1', 25), 'server 127.0.0.1:25'],
    [server('mail.domain.com', null), 'server mail.domain.com'],
    [server('::1', 8080), 'server [::1]:8080'],
    [server('2001:db8::1', null), 'server [2001:db8::1]'],
    [{ kind: 'server', servers: [{ host: 'a', port: 1 }, { host: '::1', port: null }, { host: 'b', port: null }] } as const, 'server a:1 [::1] b'],
    [{ kind: 'exec', argv: ['/bin/date'] } as const, 'exec /bin/date'],
    [
      { kind: 'exec', argv: ['/usr/local/sbin/pop3.proxy', 'mail.domain.com'] } as const,
      'exec /usr/local/sbin/pop3.proxy mail.domain.com',
    ],
  ])('describes %j as %j', (target, text) => {
    expect(describeTarget(target)).toBe(text);
  });
});

describe('maxconnOf: services that start a process per connection are bounded by default', () => {
  const config = [
    'acp /bin/true', // global: every port below has this ACP unless it sets its own
    'port 2001',
    '  server 127.0.0.1:1',
    'port 2002',
    '  maxconn 10',
    '  server 127.0.0.1:1',
    'port 2003',
    '  acp /bin/false',
    '  maxconn 1000',
    '  server 127.0.0.1:1',
  ].join('\n');
  const plain = ['port 2004', '  server 127.0.0.1:1', 'port 2005', '  exec /bin/cat', 'port 2006', '  maxconn 3', '  exec /bin/cat'].join('\n');

  const maxconns = (text: string): Record<number, number | null> => {
    const r = parseConfig(`${text}\n`, 'x.conf', () => null);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return Object.fromEntries(r.config.services.map((s) => [s.port, maxconnOf(s)]));
  };

  it('is 256', () => {
    expect(DEFAULT_PROCESS_MAXCONN).toBe(256);
  });

  it('an ACP service without maxconn gets 256; a configured maxconn wins, above 256 too', () => {
    expect(maxconns(config)).toEqual({ 2001: 256, 2002: 10, 2003: 1000 });
  });

  it('an exec service without maxconn gets 256; a plain forward has none', () => {
    expect(maxconns(plain)).toEqual({ 2004: null, 2005: 256, 2006: 3 });
  });
});
