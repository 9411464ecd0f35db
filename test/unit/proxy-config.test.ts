/**
 * The PROXY protocol and upstream directives (issue 14): `server A B C`
 * groups, `balance`, `send-proxy`, `accept-proxy` and `source`, their
 * errors at their lines (all of them in one pass), their scoping (global
 * default, port, interface; the innermost wins, `none` switches an outer
 * one off) and the Proxying values they give; the command line's server
 * groups and its defaults. Pure: parseConfig and parseArgs only.
 */
import type { PortResolver } from '../../src/table/address';
import { parseArgs } from '../../src/table/cli';
import { parseConfig, type ConfigResult } from '../../src/table/config';
import { formatConfigError } from '../../src/sys/errors';
import { loadServices } from '../../src/table/load';
import { DEFAULT_PROXYING, describeTarget, MAX_SERVERS, parseTargetWords, type Proxying, type Service } from '../../src/table/service';

const FILE = 'p.conf';
const NAMES = new Map([
  ['smtp', 25],
  ['http', 80],
]);
const resolve: PortResolver = (name) => NAMES.get(name) ?? null;
const conf = (...lines: string[]): string => lines.join('\n') + '\n';
const parse = (text: string): ConfigResult => parseConfig(text, FILE, resolve);

function errorsOf(text: string): string[] {
  const r = parse(text);
  if (r.ok) throw new Error(`expected errors, got ${JSON.stringify(r.config.services)}`);
  return r.errors.map(formatConfigError);
}

function servicesOf(text: string): readonly Service[] {
  const r = parse(text);
  if (!r.ok) throw new Error(`unexpected errors:\n${r.errors.map(formatConfigError).join('\n')}`);
  return r.config.services;
}

const proxyOf = (text: string): Proxying[] => servicesOf(text).map((s) => s.proxy);
const v4 = (address: string, bits = 32) => ({ family: 4, address, bits }) as const;
const v6 = (address: string, bits = 128) => ({ family: 6, address, bits }) as const;

describe('the values', () => {
  it('nothing written: the defaults (no header either way, first, the kernel\'s source)', () => {
    expect(proxyOf(conf('port 25', '  server a b'))).toEqual([DEFAULT_PROXYING]);
    expect(DEFAULT_PROXYING).toEqual({ sendProxy: null, acceptProxy: null, balance: 'first', source: null });
  });

  it.each([
    ['balance first', { balance: 'first' }],
    ['balance roundrobin', { balance: 'roundrobin' }],
    ['BALANCE RoundRobin', { balance: 'roundrobin' }],
    ['balance Source', { balance: 'source' }],
    ['send-proxy v1', { sendProxy: 1 }],
    ['send-proxy V2', { sendProxy: 2 }],
    ['send-proxy NONE', { sendProxy: null }],
    ['accept-proxy', { acceptProxy: [] }],
    ['accept-proxy   # any source', { acceptProxy: [] }],
    ['accept-proxy none', { acceptProxy: null }],
    ['accept-proxy None', { acceptProxy: null }],
    ['accept-proxy 10.0.0.0/8 2001:db8::/32 127.0.0.1 ::1', { acceptProxy: [v4('10.0.0.0', 8), v6('2001:db8::', 32), v4('127.0.0.1'), v6('::1')] }],
    ['source 127.0.0.9', { source: '127.0.0.9' }],
    ['source 2001:DB8:0:0::1', { source: '2001:db8::1' }],
    ['source [::1]', { source: '::1' }],
  ])('%s', (line, want) => {
    expect(proxyOf(conf('port 25', '  server a', `  ${line}`))).toEqual([{ ...DEFAULT_PROXYING, ...want }]);
  });

  it('a group: every server in the order written, -zz and the log lines show them as written', () => {
    const [s] = servicesOf(conf('port 25', '  server 127.0.0.1:9001 Mail.Example:smtp [2001:db8::1]:26 ::1'));
    expect(s?.target).toEqual({
      kind: 'server',
      servers: [
        { host: '127.0.0.1', port: 9001 },
        { host: 'mail.example', port: 25 },
        { host: '2001:db8::1', port: 26 },
        { host: '::1', port: null },
      ],
    });
    expect(describeTarget(s?.target ?? { kind: 'exec', argv: [] })).toBe('server 127.0.0.1:9001 mail.example:25 [2001:db8::1]:26 [::1]');
  });

  it('a program value stays one handler: the words after it are its arguments', () => {
    expect(servicesOf(conf('port 25', '  server /bin/echo a a b'))[0]?.target).toEqual({ kind: 'exec', argv: ['/bin/echo', 'a', 'a', 'b'] });
    expect(servicesOf(conf('port 25', '  server ./h x'))[0]?.target).toEqual({ kind: 'exec', argv: ['./h', 'x'] });
  });

  it('the settings apply to exec services too (balance, send-proxy and source are ignored there at run time)', () => {
    expect(proxyOf(conf('port 79', '  exec /bin/cat', '  accept-proxy 10.0.0.0/8', '  send-proxy v1', '  balance source', '  source 127.0.0.1'))).toEqual([
      { sendProxy: 1, acceptProxy: [v4('10.0.0.0', 8)], balance: 'source', source: '127.0.0.1' },
    ]);
  });
});

describe('scoping: global default, port, interface; the innermost wins', () => {
  const text = conf(
    'balance roundrobin', // 1
    'send-proxy v1', // 2
    'accept-proxy 10.0.0.0/8', // 3
    'source 127.0.0.1', // 4
    'port 25', // 5
    '  send-proxy v2', // 6
    '  source 127.0.0.2', // 7
    '  server a b', // 8
    '  interface 127.0.0.3', // 9
    '    server c d', // 10
    '    send-proxy none', // 11
    '    accept-proxy none', // 12
    '    balance source', // 13
    '  interface 127.0.0.4', // 14
    '    server e', // 15
    '    accept-proxy', // 16
    '    source ::1', // 17
    'port 26', // 18
    '  server f', // 19
  );

  it('gives each service the innermost value of each setting', () => {
    expect(proxyOf(text)).toEqual([
      // The port's any-interface entry: the port's send-proxy and source, the global rest.
      { sendProxy: 2, acceptProxy: [v4('10.0.0.0', 8)], balance: 'roundrobin', source: '127.0.0.2' },
      // none switches the outer send-proxy and accept-proxy off.
      { sendProxy: null, acceptProxy: null, balance: 'source', source: '127.0.0.2' },
      // An empty accept-proxy replaces the outer list: any source.
      { sendProxy: 2, acceptProxy: [], balance: 'roundrobin', source: '::1' },
      // Nothing of its own: the global defaults.
      { sendProxy: 1, acceptProxy: [v4('10.0.0.0', 8)], balance: 'roundrobin', source: '127.0.0.1' },
    ]);
  });

  it('records where the source in force was written', () => {
    expect(servicesOf(text).map((s) => s.sourceOrigin)).toEqual([
      { file: FILE, line: 7 },
      { file: FILE, line: 7 },
      { file: FILE, line: 17 },
      { file: FILE, line: 4 },
    ]);
    expect(servicesOf(conf('port 25', '  server a'))[0]).not.toHaveProperty('sourceOrigin');
  });

  it('command-line defaults (-t and the others) do not touch these settings', () => {
    const r = parseConfig(conf('port 25', '  server a'), FILE, resolve, { timeoutSec: 5, acp: '/bin/true', prefix: 'X_', writefile: '/tmp/w' });
    expect(r.ok && r.config.services[0]?.proxy).toEqual(DEFAULT_PROXYING);
  });

  it('each may appear once per scope', () => {
    expect(
      errorsOf(
        conf(
          'balance first',
          'balance first',
          'port 25',
          '  send-proxy v1',
          '  SEND-PROXY v1',
          '  server a',
          '  interface 127.0.0.2',
          '    server b',
          '    accept-proxy',
          '    accept-proxy none',
          '    source 127.0.0.1',
          '    source 127.0.0.1',
        ),
      ),
    ).toEqual([
      'tcpproxy:p.conf:2: duplicate "balance" (first on line 1)',
      'tcpproxy:p.conf:5: duplicate "send-proxy" (first on line 4)',
      'tcpproxy:p.conf:10: duplicate "accept-proxy" (first on line 9)',
      'tcpproxy:p.conf:12: duplicate "source" (first on line 11)',
    ]);
  });
});

describe('errors, at their lines', () => {
  it.each([
    ['balance', '"balance" needs an argument'],
    ['balance rr', 'invalid balance "rr": expected first, roundrobin or source'],
    ['balance first source', '"balance" takes one argument'],
    ['send-proxy', '"send-proxy" needs an argument'],
    ['send-proxy v3', 'invalid send-proxy "v3": expected v1, v2 or none'],
    ['send-proxy 1', 'invalid send-proxy "1": expected v1, v2 or none'],
    ['send-proxy v1 v2', '"send-proxy" takes one argument'],
    ['accept-proxy none 10.0.0.0/8', '"accept-proxy none" takes no other words'],
    ['accept-proxy ::1 NONE', '"accept-proxy none" takes no other words'],
    ['accept-proxy none none', '"accept-proxy none" takes no other words'],
    ['accept-proxy 10.1.2.3/8', 'invalid prefix "10.1.2.3/8": host bits are set (the network is 10.0.0.0/8)'],
    ['accept-proxy any', 'invalid prefix "any": expected an IPv4 or IPv6 address with an optional /length'],
    ['accept-proxy ::ffff:10.0.0.1', 'invalid prefix "::ffff:10.0.0.1": write an IPv4-mapped address as IPv4 (10.0.0.1)'],
    ['accept-proxy ::/129', 'invalid prefix "::/129": the length must be 0-128'],
    ['source', '"source" needs an argument'],
    ['source localhost', 'invalid source "localhost": expected an IP address'],
    ['source 010.0.0.1', 'invalid source "010.0.0.1": expected an IP address'],
    ['source 127.0.0.1:80', 'invalid source "127.0.0.1:80": expected an IP address'],
    ['source 10.0.0.0/8', 'invalid source "10.0.0.0/8": expected an IP address'],
    ['source 1.2.3.4 5.6.7.8', '"source" takes one argument'],
  ])('%s', (line, message) => {
    expect(errorsOf(conf('port 25', '  server a', `  ${line}`))).toEqual([`tcpproxy:p.conf:3: ${message}`]);
  });

  it('several errors of one accept-proxy line: each, in order', () => {
    expect(errorsOf(conf('accept-proxy none 10.0.0.1/8 bad ::1', 'port 25', '  server a'))).toEqual([
      'tcpproxy:p.conf:1: "accept-proxy none" takes no other words',
      'tcpproxy:p.conf:1: invalid prefix "10.0.0.1/8": host bits are set (the network is 10.0.0.0/8)',
      'tcpproxy:p.conf:1: invalid prefix "bad": expected an IPv4 or IPv6 address with an optional /length',
    ]);
  });

  it('every error of the file in one pass, sorted by line, with the others of the file', () => {
    expect(
      errorsOf(
        conf(
          'balance rr', // 1
          'send-proxy v3 x', // 2
          'accept-proxy none 10.0.0.1/8', // 3
          'port 25', // 4
          '  server a a:1 A b:x c!d', // 5
          '  source localhost', // 6
          '  timeout x', // 7
          '  interface 127.0.0.2', // 8
          '    server ::1 [::1]', // 9
          '    send-proxy v0', // 10
          '    balance', // 11
          '    accept-proxy 10.0.0.0/33', // 12
        ),
      ),
    ).toEqual([
      'tcpproxy:p.conf:1: invalid balance "rr": expected first, roundrobin or source',
      'tcpproxy:p.conf:2: "send-proxy" takes one argument',
      'tcpproxy:p.conf:3: "accept-proxy none" takes no other words',
      'tcpproxy:p.conf:3: invalid prefix "10.0.0.1/8": host bits are set (the network is 10.0.0.0/8)',
      'tcpproxy:p.conf:5: server "A" is listed twice',
      'tcpproxy:p.conf:5: server "b:x": unknown service name "x"',
      'tcpproxy:p.conf:5: invalid server host "c!d"',
      'tcpproxy:p.conf:6: invalid source "localhost": expected an IP address',
      'tcpproxy:p.conf:7: invalid timeout "x": expected a number of seconds',
      'tcpproxy:p.conf:9: server "[::1]" is listed twice',
      'tcpproxy:p.conf:10: invalid send-proxy "v0": expected v1, v2 or none',
      'tcpproxy:p.conf:11: "balance" needs an argument',
      'tcpproxy:p.conf:12: invalid prefix "10.0.0.0/33": the length must be 0-32',
    ]);
  });

  it(`more than ${MAX_SERVERS} servers: one error`, () => {
    const many = Array.from({ length: MAX_SERVERS + 1 }, (_, i) => `h${i}`).join(' ');
    expect(errorsOf(conf('port 25', `  server ${many}`))).toEqual([`tcpproxy:p.conf:2: "server" takes at most ${MAX_SERVERS} servers`]);
  });
});

describe('parseTargetWords', () => {
  it('a group, a program, every problem in word order', () => {
    expect(parseTargetWords(['a', 'b:80'], resolve)).toEqual({ ok: true, value: { kind: 'server', servers: [{ host: 'a', port: null }, { host: 'b', port: 80 }] } });
    expect(parseTargetWords(['/bin/x', 'a b'], resolve)).toEqual({ ok: true, value: { kind: 'exec', argv: ['/bin/x', 'a', 'b'] } });
    expect(parseTargetWords([], resolve)).toEqual({ ok: false, errors: ['invalid server "": expected host[:port]'] });
    expect(parseTargetWords(['a b', 'a', 'a:http', 'A'], resolve)).toEqual({
      ok: false,
      errors: ['invalid server "a b": expected host[:port]', 'server "A" is listed twice'],
    });
    // The same host with and without a port are different servers.
    expect(parseTargetWords(['a', 'a:80'], resolve).ok).toBe(true);
  });
});

describe('the command line', () => {
  const ok = (...argv: string[]) => {
    const r = parseArgs(argv, resolve);
    if (!r.ok) throw new Error(r.error);
    return r.options;
  };
  const err = (...argv: string[]): string => {
    const r = parseArgs(argv, resolve);
    return r.ok ? 'ok' : r.error;
  };

  it('several host[:port] arguments form one group, with -b and without', () => {
    const group = { kind: 'server', servers: [{ host: '127.0.0.1', port: 9001 }, { host: '127.0.0.1', port: 9002 }] };
    expect(ok('-b', '8080', '127.0.0.1:9001', '127.0.0.1:9002')).toMatchObject({ bind: { iface: null, port: 8080 }, standalone: true, server: group });
    expect(ok('127.0.0.1:9001', '127.0.0.1:9002').server).toEqual(group);
    expect(ok('--', 'a', 'b', 'c').server).toEqual({ kind: 'server', servers: ['a', 'b', 'c'].map((host) => ({ host, port: null })) });
  });

  it('a program still takes the rest of the words as its arguments', () => {
    expect(ok('-b', '79', '/bin/echo', 'a', '-s', 'a').server).toEqual({ kind: 'exec', argv: ['/bin/echo', 'a', '-s', 'a'] });
  });

  it.each([
    [['a', 'b', 'A'], 'server argument: server "A" is listed twice'],
    [['-b', '80', 'a', 'b:0'], 'server argument: server "b:0": port 0 is out of range (1-65535)'],
    [['a', 'x!', 'y!'], 'server argument: invalid server host "x!"'],
    [['a', '/bin/cat'], 'server argument: invalid server host "/bin/cat"'],
    [['a', '-s'], 'unexpected argument "-s"'],
    [['-b', '80', 'a', 'b', '--'], 'unexpected argument "--"'],
    [Array.from({ length: MAX_SERVERS + 1 }, (_, i) => `h${i}`), `server argument: "server" takes at most ${MAX_SERVERS} servers`],
  ])('%j: %s', (argv, message) => {
    expect(err(...argv)).toBe(message);
  });

  it(`${MAX_SERVERS} servers are fine`, () => {
    const words = Array.from({ length: MAX_SERVERS }, (_, i) => `h${i}`);
    expect(ok(...words).server).toEqual({ kind: 'server', servers: words.map((host) => ({ host, port: null })) });
  });

  it('the command-line service has the default PROXY and upstream settings (there are no options for them)', () => {
    const loaded = loadServices(ok('-b', '127.0.0.1:8080', 'a', 'b'), false, '/');
    expect(loaded.ok && loaded.services.map((s) => [s.proxy, s.sourceOrigin])).toEqual([[DEFAULT_PROXYING, undefined]]);
  });
});
