import * as fs from 'node:fs';
import * as path from 'node:path';
import type { PortResolver } from '../../src/table/address';
import {
  DIRECTIVES,
  parseConfig,
  readConfig,
  type CommandLineDefaults,
  type Config,
  type ConfigResult,
} from '../../src/table/config';
import { formatConfigError } from '../../src/sys/errors';
import { checkProgramLines } from '../../src/table/programs';
import { etcServices } from '../../src/table/services-db';
import { checkAccess, formatPrefix } from '../../src/table/access';
import { DEFAULT_TIMEOUT_SEC, NO_ACCESS_RULES, type Access, type Prefix, type Service, type Target } from '../../src/table/service';
import { SERVICE_DEFAULTS } from '../helpers/service';
import { useTempDir } from '../helpers/setup';

const FILE = 'test.conf';
const FIXTURES = path.join(__dirname, '..', 'fixtures', 'configs');

const NAMES = new Map([
  ['smtp', 25],
  ['pop3', 110],
  ['nntp', 119],
  ['http-alt', 8080],
]);
/** A fixed resolver, so the tests do not depend on the machine's /etc/services. */
const fakeServices: PortResolver = (name) => NAMES.get(name) ?? null;

const conf = (...lines: string[]): string => lines.join('\n') + '\n';

function parse(text: string, cli?: CommandLineDefaults): ConfigResult {
  return parseConfig(text, FILE, fakeServices, cli);
}

/** The formatted errors of a config that must fail. */
function errorsOf(text: string, cli?: CommandLineDefaults): string[] {
  const r = parse(text, cli);
  if (r.ok) throw new Error(`expected errors, got ${JSON.stringify(r.config)}`);
  return r.errors.map(formatConfigError);
}

function configOf(text: string, cli?: CommandLineDefaults): Config {
  const r = parse(text, cli);
  if (!r.ok) throw new Error(`unexpected errors:\n${r.errors.map(formatConfigError).join('\n')}`);
  return r.config;
}

function onlyService(text: string, cli?: CommandLineDefaults): Service {
  const { services } = configOf(text, cli);
  expect(services).toHaveLength(1);
  return services[0] as Service;
}

const server = (host: string, port: number | null = null): Target => ({ kind: 'server', servers: [{ host, port }] });
const exec = (...argv: string[]): Target => ({ kind: 'exec', argv });

/**
 * Services carry where their `server`/`exec`, `acp` and `source` lines are
 * (for the messages of src/table/programs.ts and the source-address check);
 * the table comparisons below leave those fields out, and the tests under
 * "directive origins" (and test/unit/proxy-config.test.ts) pin them.
 */
function withoutDirectiveOrigins(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutDirectiveOrigins);
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (k !== 'targetOrigin' && k !== 'acpOrigin' && k !== 'sourceOrigin') out[k] = withoutDirectiveOrigins(x);
  return out;
}
type Tester = (this: { equals(a: unknown, b: unknown): boolean }, a: unknown, b: unknown) => boolean | undefined;
(expect as unknown as { addEqualityTesters(testers: Tester[]): void }).addEqualityTesters([
  function (a, b) {
    // Whole services only (both sides carry an origin): subset matches keep their own rules.
    const service = (x: unknown): boolean => x !== null && typeof x === 'object' && 'origin' in x && 'port' in x;
    if (!service(a) || !service(b)) return undefined;
    return this.equals(withoutDirectiveOrigins(a), withoutDirectiveOrigins(b));
  },
]);

describe('directive origins', () => {
  it('records the line of the server/exec and of the acp in force', () => {
    const r = parseConfig('acp /bin/true\nport 25\n  interface 127.0.0.2\n\n    exec /bin/cat\nport 26\n  acp /bin/false\n  server 127.0.0.1\n', 'x.conf', () => null);
    expect(r.ok).toBe(true);
    const [a, b] = r.ok ? r.config.services : [];
    expect(a?.targetOrigin).toStrictEqual({ file: 'x.conf', line: 5 });
    expect(a?.acpOrigin).toStrictEqual({ file: 'x.conf', line: 1 });
    expect(b?.targetOrigin).toStrictEqual({ file: 'x.conf', line: 8 });
    expect(b?.acpOrigin).toStrictEqual({ file: 'x.conf', line: 7 });
  });
  it('names the command line for an acp given with -a', () => {
    const r = parseConfig('port 25\n  server 127.0.0.1\n', 'x.conf', () => null, { acp: '/bin/true' });
    expect(r.ok && r.config.services[0]?.acpOrigin).toStrictEqual({ file: 'command line', line: 0 });
  });
});

/** A service with the built-in defaults, overridden by `s`. */
function svc(s: Pick<Service, 'port' | 'target'> & Partial<Omit<Service, 'origin'>> & { line: number }): Service {
  const { line, ...rest } = s;
  return {
    iface: null,
    ...SERVICE_DEFAULTS,
    ...rest,
    origin: { file: FILE, line },
  };
}

describe('the man page sample', () => {
  const expected = (file: string): Service[] =>
    [
      svc({ port: 25, iface: '127.0.0.2', target: server('mailrelay.provider.com'), line: 17 }),
      svc({ port: 25, iface: '127.0.0.3', target: server('mail.domain.com'), line: 23 }),
      svc({ port: 119, iface: '127.0.0.2', target: server('nntp.provider.com'), line: 33 }),
      svc({ port: 119, iface: '127.0.0.4', target: server('nntp.other-provider.com'), line: 36 }),
      svc({ port: 110, iface: '127.0.0.3', target: exec('/usr/local/sbin/pop3.proxy', 'mail.domain.com'), line: 47 }),
    ].map((s) => ({ ...s, origin: { file, line: s.origin.line } }));

  it('reads into the expected service table', () => {
    const file = path.join(FIXTURES, 'sample.conf');
    const r = readConfig(file, fakeServices);
    expect(r).toEqual({
      ok: true,
      config: { file, standalone: null, logname: null, workers: null, control: null, metrics: null, services: expected(file) },
    });
  });

  it('parses the same with CRLF line ends', () => {
    const text = fs.readFileSync(path.join(FIXTURES, 'sample.conf'), 'utf8').replace(/\n/g, '\r\n');
    expect(configOf(text).services).toEqual(expected(FILE));
  });
});

describe('bad config fixtures', () => {
  const cases = fs
    .readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.expected'))
    .map((f) => f.replace(/\.expected$/, ''));

  it('exist', () => {
    expect(cases.length).toBeGreaterThanOrEqual(2);
  });

  it.each(cases)('%s.conf gives exactly the errors of %s.expected', (name) => {
    const r = readConfig(path.join(FIXTURES, `${name}.conf`), fakeServices);
    expect(r.ok).toBe(false);
    const got = r.ok ? [] : r.errors.map((e) => formatConfigError({ ...e, file: path.basename(e.file) }));
    const want = fs.readFileSync(path.join(FIXTURES, `${name}.expected`), 'utf8').trimEnd().split('\n');
    expect(got).toEqual(want);
  });
});

describe('lines, comments and case', () => {
  it('ignores blank lines, comment lines and trailing comments', () => {
    const s = onlyService(conf('', '# a comment', '   # indented', '\t', 'port 25 # smtp', '  server 127.0.0.1 #relay', ''));
    expect(s).toEqual(svc({ port: 25, target: server('127.0.0.1'), line: 5 }));
  });

  it('keeps a "#" inside a word', () => {
    const s = onlyService(conf('port 25', 'exec /bin/handler a#b c #d'));
    expect(s.target).toEqual(exec('/bin/handler', 'a#b', 'c'));
    expect(errorsOf(conf('port 25', 'server host#1'))).toEqual(['tcpproxy:test.conf:2: invalid server host "host#1"']);
  });

  it('treats a comment right after the directive as a missing argument', () => {
    expect(errorsOf(conf('port # 25', 'server 127.0.0.1'))).toEqual(['tcpproxy:test.conf:1: "port" needs an argument']);
  });

  it('accepts keywords in any case', () => {
    const c = configOf(conf('STANDALONE Yes', 'LogName Proxy', 'Port 25', ' INTERFACE 127.0.0.2', '  SeRvEr 127.0.0.1', '  TIMEOUT 5'));
    expect(c.standalone).toBe(true);
    expect(c.logname).toBe('Proxy');
    expect(c.services).toEqual([svc({ port: 25, iface: '127.0.0.2', target: server('127.0.0.1'), timeoutSec: 5, line: 4 })]);
  });

  it('splits on tabs and runs of blanks, and indentation is cosmetic', () => {
    const s = onlyService('port\t\t25\n\t\t\t\texec \t /bin/cat  \t -u   \n');
    expect(s.target).toEqual(exec('/bin/cat', '-u'));
  });

  it('reads CRLF line ends and counts lines the same', () => {
    expect(onlyService('port 25\r\nserver 127.0.0.1:2525\r\n').target).toEqual(server('127.0.0.1', 2525));
    expect(errorsOf('port 25\r\n\r\nsever 127.0.0.1\r\n')).toEqual([
      'tcpproxy:test.conf:1: port 25 has neither "server" nor "exec"',
      'tcpproxy:test.conf:3: unknown directive "sever" (did you mean "server"?)',
    ]);
  });

  it('accepts a file without a final newline and one with a UTF-8 byte order mark', () => {
    expect(onlyService('port 25\nserver 127.0.0.1').port).toBe(25);
    expect(onlyService('\uFEFFport 25\nserver 127.0.0.1\n').port).toBe(25);
  });
});

describe('line checks', () => {
  it('rejects a line with a NUL byte and goes on with the next ones', () => {
    expect(errorsOf(conf('port 25', 'server 127.0.0.1\0', 'sever x'))).toEqual([
      'tcpproxy:test.conf:1: port 25 has neither "server" nor "exec"',
      'tcpproxy:test.conf:2: line contains a NUL byte',
      'tcpproxy:test.conf:3: unknown directive "sever" (did you mean "server"?)',
    ]);
  });

  it('rejects a line with U+FFFD (invalid UTF-8 after decoding)', () => {
    expect(errorsOf(conf('port 25', '# caf\uFFFD', 'server 127.0.0.1'))).toEqual([
      'tcpproxy:test.conf:2: line is not valid UTF-8',
    ]);
  });

  it('accepts a line of 4096 characters and rejects one of 4097', () => {
    const padded = (n: number): string => {
      const head = 'server 127.0.0.1 #';
      return head + 'x'.repeat(n - head.length);
    };
    expect(onlyService(conf('port 25', padded(4096))).target).toEqual(server('127.0.0.1'));
    expect(errorsOf(conf('port 25', padded(4097), 'server 127.0.0.1'))).toEqual([
      'tcpproxy:test.conf:2: line is longer than 4096 characters',
    ]);
  });

  it('counts characters, not UTF-16 units', () => {
    const emoji = '\u{1F600}';
    expect(onlyService(conf('port 25', 'server 127.0.0.1', `#${emoji.repeat(4095)}`)).port).toBe(25);
    expect(errorsOf(conf('port 25', 'server 127.0.0.1', `#${emoji.repeat(4096)}`))).toEqual([
      'tcpproxy:test.conf:3: line is longer than 4096 characters',
    ]);
  });

  it('rejects a 1 MB line quickly, with one error', () => {
    const errors = errorsOf(conf('port 25', `server ${'a'.repeat(1 << 20)}`, 'server 127.0.0.1'));
    expect(errors).toEqual(['tcpproxy:test.conf:2: line is longer than 4096 characters']);
  });

  it('stays fast on pathological lines under the limit', () => {
    const lines: string[] = ['port 25', 'server 127.0.0.1'];
    for (let i = 0; i < 200; i++) {
      lines.push(`${' '.repeat(4000)}x`, `x${' '.repeat(4000)}#`, `x${'#'.repeat(4000)}`, `timeout ${'\t'.repeat(4000)}x y`);
    }
    const r = parse(conf(...lines));
    expect(r.ok).toBe(false);
  });
});

describe('global directives', () => {
  it('leaves standalone and logname null when absent', () => {
    const c = configOf(conf('port 25', 'server 127.0.0.1'));
    expect(c).toEqual({ file: FILE, standalone: null, logname: null, workers: null, control: null, metrics: null, services: [expect.anything()] });
  });

  it.each([
    ['yes', true],
    ['no', false],
    ['YES', true],
    ['No', false],
  ])('standalone %s', (value, expected) => {
    expect(configOf(conf(`standalone ${value}`, 'port 25', 'server 127.0.0.1')).standalone).toBe(expected);
  });

  it('takes standalone and logname anywhere, even inside a port block', () => {
    const c = configOf(conf('port 25', '  interface 127.0.0.2', '  standalone no', '  logname smtp-proxy', '  server 127.0.0.1'));
    expect(c.standalone).toBe(false);
    expect(c.logname).toBe('smtp-proxy');
    expect(c.services).toHaveLength(1);
  });

  it('rejects bad, missing and extra standalone values', () => {
    expect(errorsOf(conf('standalone maybe', 'standalone', 'standalone yes no', 'port 25', 'server 127.0.0.1'))).toEqual([
      'tcpproxy:test.conf:1: standalone must be "yes" or "no", not "maybe"',
      'tcpproxy:test.conf:2: duplicate "standalone" (first on line 1)',
      'tcpproxy:test.conf:2: "standalone" needs an argument',
      'tcpproxy:test.conf:3: duplicate "standalone" (first on line 1)',
      'tcpproxy:test.conf:3: "standalone" takes one argument',
    ]);
  });

  it('rejects a second standalone or logname', () => {
    expect(errorsOf(conf('standalone yes', 'logname a', 'port 25', 'server 127.0.0.1', 'standalone yes', 'logname b'))).toEqual([
      'tcpproxy:test.conf:5: duplicate "standalone" (first on line 1)',
      'tcpproxy:test.conf:6: duplicate "logname" (first on line 2)',
    ]);
  });

  it.each([
    ['1', 1],
    ['8', 8],
    ['64', 64],
    ['auto', 'auto'],
    ['AUTO', 'auto'],
  ])('workers %s', (value, expected) => {
    expect(configOf(conf('port 25', '  server 127.0.0.1', `  workers ${value}`)).workers).toBe(expected);
  });

  it('rejects workers that are not a whole number from 1 to 64 or auto, and a second workers line', () => {
    expect(errorsOf(conf('workers 0', 'workers 65', 'workers 2.5', 'workers', 'workers some', 'port 25', 'server 127.0.0.1'))).toEqual([
      'tcpproxy:test.conf:1: workers must be a whole number from 1 to 64 or "auto", not "0"',
      'tcpproxy:test.conf:2: duplicate "workers" (first on line 1)',
      'tcpproxy:test.conf:2: workers must be a whole number from 1 to 64 or "auto", not "65"',
      'tcpproxy:test.conf:3: duplicate "workers" (first on line 1)',
      'tcpproxy:test.conf:3: workers must be a whole number from 1 to 64 or "auto", not "2.5"',
      'tcpproxy:test.conf:4: duplicate "workers" (first on line 1)',
      'tcpproxy:test.conf:4: "workers" needs an argument',
      'tcpproxy:test.conf:5: duplicate "workers" (first on line 1)',
      'tcpproxy:test.conf:5: workers must be a whole number from 1 to 64 or "auto", not "some"',
    ]);
  });

  it('rejects a missing or multi-word logname', () => {
    expect(errorsOf(conf('logname', 'port 25', 'server 127.0.0.1'))).toEqual(['tcpproxy:test.conf:1: "logname" needs an argument']);
    expect(errorsOf(conf('logname my proxy', 'port 25', 'server 127.0.0.1'))).toEqual([
      'tcpproxy:test.conf:1: "logname" takes one argument',
    ]);
  });
});

describe('port', () => {
  it('takes a number', () => {
    expect(onlyService(conf('port 65535', 'server 127.0.0.1')).port).toBe(65535);
    expect(onlyService(conf('port 1', 'server 127.0.0.1')).port).toBe(1);
  });

  it('takes a service name through the resolver', () => {
    expect(onlyService(conf('port pop3', 'exec /bin/true')).port).toBe(110);
    expect(onlyService(conf('port http-alt', 'server 127.0.0.1')).port).toBe(8080);
  });

  it('resolves "smtp" through the real /etc/services', () => {
    const r = parseConfig(conf('port smtp', 'server 127.0.0.1:smtp'), FILE, etcServices);
    expect(r.ok && r.config.services[0]).toEqual(svc({ port: 25, target: server('127.0.0.1', 25), line: 1 }));
  });

  it.each([
    ['0', 'port 0 is out of range (1-65535)'],
    ['65536', 'port 65536 is out of range (1-65535)'],
    ['99999999999999999999', 'port 99999999999999999999 is out of range (1-65535)'],
    ['foo', 'unknown service name "foo"'],
    ['constructor', 'unknown service name "constructor"'],
    ['25x', 'invalid port "25x"'],
    ['-1', 'invalid port "-1"'],
    ['25 26', '"port" takes one argument'],
    ['', '"port" needs an argument'],
  ])('rejects "port %s"', (value, message) => {
    expect(errorsOf(conf(`port ${value}`, 'server 127.0.0.1'))).toEqual([`tcpproxy:test.conf:1: ${message}`]);
  });

  it('rejects the same port twice, also when one is written as a name', () => {
    expect(errorsOf(conf('port 25', 'server 127.0.0.1', 'port 110', 'exec /bin/true', 'port smtp', 'server 127.0.0.2'))).toEqual([
      'tcpproxy:test.conf:5: port 25 is already defined on line 1',
    ]);
  });

  it('rejects a port block with no entry, and one with settings only', () => {
    expect(errorsOf(conf('port 25', 'port 26', '  timeout 5', '  acp /bin/true', 'port 27', 'server 127.0.0.1'))).toEqual([
      'tcpproxy:test.conf:1: port 25 has neither "server" nor "exec"',
      'tcpproxy:test.conf:2: port 26 has neither "server" nor "exec"',
    ]);
  });

  it('needs at least one port in the file', () => {
    expect(errorsOf('')).toEqual(['tcpproxy:test.conf: no service defined (add a "port" block)']);
    expect(errorsOf(conf('# only comments', 'standalone yes', 'timeout 5'))).toEqual([
      'tcpproxy:test.conf: no service defined (add a "port" block)',
    ]);
  });

  it('does not pile "neither" errors onto an invalid port line', () => {
    expect(errorsOf(conf('port 0', 'port 70000', '  interface 127.0.0.2', 'port 25', 'server 127.0.0.1'))).toEqual([
      'tcpproxy:test.conf:1: port 0 is out of range (1-65535)',
      'tcpproxy:test.conf:2: port 70000 is out of range (1-65535)',
    ]);
  });
});

describe('interface', () => {
  it('opens an entry of the current port, with its address normalised', () => {
    const c = configOf(
      conf('port 25', 'interface 127.0.0.2', 'server 127.0.0.1', 'interface ::1', 'server [::1]:2525', 'interface [0:0::2]', 'exec /bin/true'),
    );
    expect(c.services).toEqual([
      svc({ port: 25, iface: '127.0.0.2', target: server('127.0.0.1'), line: 2 }),
      svc({ port: 25, iface: '::1', target: server('::1', 2525), line: 4 }),
      svc({ port: 25, iface: '::2', target: exec('/bin/true'), line: 6 }),
    ]);
  });

  it('allows the same interface in different ports', () => {
    const c = configOf(conf('port 25', 'interface 127.0.0.2', 'server a', 'port 26', 'interface 127.0.0.2', 'server b'));
    expect(c.services.map((s) => [s.port, s.iface])).toEqual([
      [25, '127.0.0.2'],
      [26, '127.0.0.2'],
    ]);
  });

  it('rejects the same interface twice in a port, also when spelled differently', () => {
    expect(
      errorsOf(conf('port 25', 'interface ::1', 'server a', 'interface 0:0:0:0:0:0:0:1', 'server b', 'interface 127.0.0.2', 'server c', 'interface 127.0.0.2', 'server d')),
    ).toEqual([
      'tcpproxy:test.conf:4: port 25 interface ::1 is already defined on line 2',
      'tcpproxy:test.conf:8: port 25 interface 127.0.0.2 is already defined on line 6',
    ]);
  });

  it.each([
    ['localhost', 'interface "localhost" is not an IP address'],
    ['127.0.0.256', 'interface "127.0.0.256" is not an IP address'],
    ['127.0.0.1:25', 'interface "127.0.0.1:25" is not an IP address'],
    ['', '"interface" needs an argument'],
    ['127.0.0.1 127.0.0.2', '"interface" takes one argument'],
  ])('rejects "interface %s" (and adds no "neither" error for it)', (value, message) => {
    expect(errorsOf(conf('port 25', `interface ${value}`))).toEqual([`tcpproxy:test.conf:2: ${message}`]);
  });

  it('must follow a port line', () => {
    expect(errorsOf(conf('interface 127.0.0.2', 'interface nowhere', 'port 25', 'server 127.0.0.1'))).toEqual([
      'tcpproxy:test.conf:1: "interface" outside a port block (add a "port" line before it)',
      'tcpproxy:test.conf:2: "interface" outside a port block (add a "port" line before it)',
      'tcpproxy:test.conf:2: interface "nowhere" is not an IP address',
    ]);
  });

  it('needs a server or exec in each entry, reported at its interface line', () => {
    expect(errorsOf(conf('port 25', '  interface 127.0.0.2', '  interface 127.0.0.3', '    server a', '  interface ::1', '    timeout 5'))).toEqual([
      'tcpproxy:test.conf:2: port 25 interface 127.0.0.2 has neither "server" nor "exec"',
      'tcpproxy:test.conf:5: port 25 interface ::1 has neither "server" nor "exec"',
    ]);
  });

  it('can follow an any-interface entry of the same port', () => {
    const c = configOf(conf('port 25', 'server 127.0.0.1', 'interface 127.0.0.2', 'server 127.0.0.9'));
    expect(c.services).toEqual([
      svc({ port: 25, target: server('127.0.0.1'), line: 1 }),
      svc({ port: 25, iface: '127.0.0.2', target: server('127.0.0.9'), line: 3 }),
    ]);
  });
});

describe('server', () => {
  it.each([
    ['mail.example.org', server('mail.example.org')],
    ['Mail.Example.ORG:2525', server('mail.example.org', 2525)],
    ['127.0.0.1:smtp', server('127.0.0.1', 25)],
    ['[::1]:8080', server('::1', 8080)],
    ['[::1]', server('::1')],
    ['::1', server('::1')],
    ['/bin/date', exec('/bin/date')],
    ['/bin/date -u +%s', exec('/bin/date', '-u', '+%s')],
    ['./handler.sh arg', exec('./handler.sh', 'arg')],
    // Several host[:port] words: one group, in the order written.
    ['mail example', { kind: 'server', servers: [{ host: 'mail', port: null }, { host: 'example', port: null }] }],
    ['b:25 A\t[::1]:26  ::2', { kind: 'server', servers: [{ host: 'b', port: 25 }, { host: 'a', port: null }, { host: '::1', port: 26 }, { host: '::2', port: null }] }],
  ])('server %s', (value, target) => {
    expect(onlyService(conf('port 25', `server ${value}`)).target).toEqual(target);
  });

  it.each([
    ['', '"server" needs an argument'],
    ['a b A', 'server "A" is listed twice'],
    ['h:smtp h:25', 'server "h:25" is listed twice'],
    ['[::1]:80 0:0:0:0:0:0:0:1:80', 'invalid server host "0:0:0:0:0:0:0:1:80"'],
    ['a /bin/cat', 'invalid server host "/bin/cat"'],
    [':25', 'invalid server ":25": expected host[:port]'],
    ['[::1', 'invalid server "[::1": expected host[:port]'],
    ['bad!host', 'invalid server host "bad!host"'],
    ['127.0.0.1:0', 'server "127.0.0.1:0": port 0 is out of range (1-65535)'],
    ['127.0.0.1:nosuch', 'server "127.0.0.1:nosuch": unknown service name "nosuch"'],
  ])('rejects "server %s"', (value, message) => {
    expect(errorsOf(conf('port 25', `server ${value}`))).toEqual([`tcpproxy:test.conf:2: ${message}`]);
  });

  it('reports every bad word of a group at its line, in word order', () => {
    expect(errorsOf(conf('port 25', 'server ok :1 ok bad!host h:0 [::1 h:nosuch OK'))).toEqual([
      'tcpproxy:test.conf:2: invalid server ":1": expected host[:port]',
      'tcpproxy:test.conf:2: server "ok" is listed twice',
      'tcpproxy:test.conf:2: invalid server host "bad!host"',
      'tcpproxy:test.conf:2: server "h:0": port 0 is out of range (1-65535)',
      'tcpproxy:test.conf:2: invalid server "[::1": expected host[:port]',
      'tcpproxy:test.conf:2: server "h:nosuch": unknown service name "nosuch"',
      'tcpproxy:test.conf:2: server "OK" is listed twice',
    ]);
  });

  it('takes up to 64 servers', () => {
    const words = (n: number): string[] => Array.from({ length: n }, (_, i) => `10.0.0.${i + 1}:80`);
    expect(onlyService(conf('port 25', `server ${words(64).join(' ')}`)).target).toEqual({ kind: 'server', servers: words(64).map((w) => ({ host: w.slice(0, -3), port: 80 })) });
    expect(errorsOf(conf('port 25', `server ${words(65).join(' ')}`))).toEqual(['tcpproxy:test.conf:2: "server" takes at most 64 servers']);
    expect(errorsOf(conf('port 25', `server ${[...words(65), 'x!'].join(' ')}`))).toEqual([
      'tcpproxy:test.conf:2: invalid server host "x!"',
      'tcpproxy:test.conf:2: "server" takes at most 64 servers',
    ]);
  });

  it('must follow a port line', () => {
    expect(errorsOf(conf('server 127.0.0.1', 'server', 'port 25', 'server 127.0.0.1'))).toEqual([
      'tcpproxy:test.conf:1: "server" outside a port block (add a "port" line before it)',
      'tcpproxy:test.conf:2: "server" outside a port block (add a "port" line before it)',
      'tcpproxy:test.conf:2: "server" needs an argument',
    ]);
  });

  it('rejects a second server in the same entry', () => {
    expect(errorsOf(conf('port 25', 'server a', 'server b', 'interface 127.0.0.2', 'server c', 'server d'))).toEqual([
      'tcpproxy:test.conf:3: duplicate "server" (first on line 2)',
      'tcpproxy:test.conf:6: duplicate "server" (first on line 5)',
    ]);
  });
});

describe('exec', () => {
  it('splits the rest of the line into argv, without a shell', () => {
    expect(onlyService(conf('port 110', 'exec /usr/local/sbin/pop3.proxy  -t 30 "a b" $HOME')).target).toEqual(
      exec('/usr/local/sbin/pop3.proxy', '-t', '30', '"a', 'b"', '$HOME'),
    );
  });

  it('takes a program not starting with / or . as a path', () => {
    expect(onlyService(conf('port 110', 'exec pop3.proxy mail')).target).toEqual(exec('pop3.proxy', 'mail'));
  });

  it('rejects a missing command, a second exec and exec outside a port', () => {
    expect(errorsOf(conf('exec /bin/true', 'port 110', 'exec', 'exec /bin/false'))).toEqual([
      'tcpproxy:test.conf:1: "exec" outside a port block (add a "port" line before it)',
      'tcpproxy:test.conf:3: "exec" needs an argument',
      'tcpproxy:test.conf:4: duplicate "exec" (first on line 3)',
    ]);
  });

  it('cannot share an entry with server, whichever comes first', () => {
    expect(
      errorsOf(conf('port 110', 'server a', 'exec /bin/true', 'port 111', 'exec /bin/true', 'server a', 'port 112', 'interface 127.0.0.2', 'exec /bin/true', 'server /bin/false')),
    ).toEqual([
      'tcpproxy:test.conf:3: port 110 has both "server" (line 2) and "exec"',
      'tcpproxy:test.conf:6: port 111 has both "exec" (line 5) and "server"',
      'tcpproxy:test.conf:10: port 112 interface 127.0.0.2 has both "exec" (line 9) and "server"',
    ]);
  });
});

describe('settings', () => {
  it('sets every per-service value', () => {
    const s = onlyService(
      conf('port 25', 'acp /usr/local/bin/check  --strict  x', 'timeout 0', 'setenv TCP_', 'writefile /var/log/tp/smtp', 'uid 65534', 'gid 4294967294', 'exec /bin/cat'),
    );
    expect(s).toEqual(
      svc({
        port: 25,
        target: exec('/bin/cat'),
        acp: '/usr/local/bin/check  --strict  x',
        timeoutSec: 0,
        prefix: 'TCP_',
        writefile: '/var/log/tp/smtp',
        uid: 65534,
        gid: 4294967294,
        line: 1,
      }),
    );
  });

  it('uses the built-in defaults when nothing is set', () => {
    expect(onlyService(conf('port 25', 'server a'))).toEqual(svc({ port: 25, target: server('a'), line: 1 }));
  });

  it.each([
    ['timeout 2147483', { timeoutSec: 2147483 }],
    ['timeout 007', { timeoutSec: 7 }],
    ['setenv _', { prefix: '_' }],
    ['setenv my_Proxy_1_', { prefix: 'my_Proxy_1_' }],
    ['uid 1', { uid: 1 }],
    ['gid 100', { gid: 100 }],
    ['uid daemon', { uid: 1, gid: 1 }],
    ['loglevel quiet', { loglevel: 'quiet' }],
    ['LogLevel VERBOSE', { loglevel: 'verbose' }],
    ['uid nobody', { uid: 65534, gid: 65534 }],
    ['gid users', { gid: 100 }],
    ['writefile trace', { writefile: 'trace' }],
    ['acp ./acp', { acp: './acp' }],
  ])('%s', (line, fields) => {
    expect(onlyService(conf('port 25', 'server a', line))).toMatchObject(fields);
  });

  it.each([
    ['timeout abc', 'invalid timeout "abc": expected a number of seconds'],
    ['timeout -1', 'invalid timeout "-1": expected a number of seconds'],
    ['timeout 1.5', 'invalid timeout "1.5": expected a number of seconds'],
    ['timeout 2147484', 'invalid timeout "2147484": expected a number of seconds'],
    ['timeout 5 s', '"timeout" takes one argument'],
    ['timeout', '"timeout" needs an argument'],
    ['uid 0', 'uid 0 is not allowed: tcpproxy never serves requests as root'],
    ['uid 000', 'uid 000 is not allowed: tcpproxy never serves requests as root'],
    ['gid 0', 'gid 0 is not allowed: tcpproxy never serves requests as root'],
    ['uid 5x', 'invalid uid "5x": expected a number or a user name'],
    ['loglevel debug', 'invalid loglevel "debug": expected quiet, normal or verbose'],
    ['loglevel', '"loglevel" needs an argument'],
    ['gid -2', 'invalid gid "-2": expected a number or a group name'],
    ['uid a/b', 'invalid uid "a/b": expected a number or a user name'],
    ['uid root', 'uid root is uid 0, which is not allowed: tcpproxy never serves requests as root'],
    ['gid root', 'gid root is gid 0, which is not allowed: tcpproxy never serves requests as root'],
    ['uid no-such-user-x', 'unknown user "no-such-user-x" (uid takes a number or a name from /etc/passwd or nsswitch)'],
    ['gid no-such-group-x', 'unknown group "no-such-group-x" (gid takes a number or a name from /etc/group or nsswitch)'],
    ['uid 4294967295', 'uid 4294967295 is out of range (1-4294967294)'],
    ['gid 99999999999', 'gid 99999999999 is out of range (1-4294967294)'],
    ['uid 1 2', '"uid" takes one argument'],
    ['gid', '"gid" needs an argument'],
    ['setenv 1x', 'invalid variable prefix "1x"'],
    ['setenv A-B', 'invalid variable prefix "A-B"'],
    ['setenv A B', '"setenv" takes one argument'],
    ['setenv', '"setenv" needs an argument'],
    ['writefile a b', '"writefile" takes one argument'],
    ['writefile', '"writefile" needs an argument'],
    ['acp', '"acp" needs an argument'],
    ['ACP   # no program', '"acp" needs an argument'],
  ])('rejects "%s"', (line, message) => {
    expect(errorsOf(conf('port 25', 'server a', line))).toEqual([`tcpproxy:test.conf:3: ${message}`]);
  });

  it('rejects a setting twice in the same scope, in each scope', () => {
    expect(
      errorsOf(
        conf('timeout 1', 'timeout 2', 'port 25', 'acp /a', 'server a', 'acp /b', 'interface 127.0.0.2', 'uid 5', 'server b', 'UID 6'),
      ),
    ).toEqual([
      'tcpproxy:test.conf:2: duplicate "timeout" (first on line 1)',
      'tcpproxy:test.conf:6: duplicate "acp" (first on line 4)',
      'tcpproxy:test.conf:10: duplicate "uid" (first on line 8)',
    ]);
  });

  it('allows the same setting once per scope', () => {
    const c = configOf(conf('timeout 1', 'port 25', 'timeout 2', 'interface 127.0.0.2', 'timeout 3', 'server a', 'port 26', 'timeout 4', 'server b'));
    expect(c.services.map((s) => s.timeoutSec)).toEqual([3, 4]);
  });
});

describe('scoping and precedence', () => {
  const layered = conf(
    'timeout 10',
    'acp /global/acp',
    'setenv G_',
    'writefile /global/w',
    'uid 1000',
    'gid 1000',
    'port 25',
    '  timeout 20',
    '  setenv P_',
    '  uid 2000',
    '  interface 127.0.0.2',
    '    server a',
    '    timeout 30',
    '    gid 3000',
    '  interface 127.0.0.3',
    '    server b',
    'port 26',
    '  server c',
  );

  it('takes entry, then port, then global, then built-in values', () => {
    const [a, b, c] = configOf(layered).services;
    expect(a).toMatchObject({ iface: '127.0.0.2', timeoutSec: 30, acp: '/global/acp', prefix: 'P_', writefile: '/global/w', uid: 2000, gid: 3000 });
    expect(b).toMatchObject({ iface: '127.0.0.3', timeoutSec: 20, acp: '/global/acp', prefix: 'P_', writefile: '/global/w', uid: 2000, gid: 1000 });
    expect(c).toMatchObject({ iface: null, timeoutSec: 10, acp: '/global/acp', prefix: 'G_', writefile: '/global/w', uid: 1000, gid: 1000 });
  });

  it('takes the primary group of a named uid only where no scope sets a gid', () => {
    const ids = (text: string): Array<[number | null, number | null]> => configOf(text).services.map((s) => [s.uid, s.gid]);
    expect(ids(conf('gid users', 'port 25', '  uid daemon', '  server a', 'port 26', '  server b', 'port 27', '  uid nobody', '  gid daemon', '  server c'))).toEqual([
      [1, 100],
      [null, 100],
      [65534, 1],
    ]);
    expect(ids(conf('uid daemon', 'port 25', '  uid 4242', '  server a', 'port 26', '  server b'))).toEqual([
      [4242, null],
      [1, 1],
    ]);
  });

  it('lets command-line values replace the global defaults only', () => {
    const cli = { timeoutSec: 99, acp: '/cli/acp', prefix: 'C_', writefile: '/cli/w' };
    const [a, b, c] = configOf(layered, cli).services;
    expect(a).toMatchObject({ timeoutSec: 30, acp: '/cli/acp', prefix: 'P_', writefile: '/cli/w', uid: 2000, gid: 3000 });
    expect(b).toMatchObject({ timeoutSec: 20, acp: '/cli/acp', prefix: 'P_', writefile: '/cli/w' });
    expect(c).toMatchObject({ timeoutSec: 99, acp: '/cli/acp', prefix: 'C_', writefile: '/cli/w', uid: 1000, gid: 1000 });
  });

  it('applies command-line values over the built-in defaults', () => {
    const s = onlyService(conf('port 25', 'server a'), { timeoutSec: 0, prefix: 'X_' });
    expect(s).toEqual(svc({ port: 25, target: server('a'), timeoutSec: 0, prefix: 'X_', line: 1 }));
  });

  it('still checks the global defaults that the command line replaces', () => {
    expect(errorsOf(conf('timeout soon', 'port 25', 'server a'), { timeoutSec: 5 })).toEqual([
      'tcpproxy:test.conf:1: invalid timeout "soon": expected a number of seconds',
    ]);
  });

  it('does not care about the order inside a scope', () => {
    const before = configOf(conf('port 25', 'timeout 5', 'server a', 'interface 127.0.0.2', 'uid 7', 'server b'));
    const after = configOf(conf('port 25', 'server a', 'timeout 5', 'interface 127.0.0.2', 'server b', 'uid 7'));
    expect(after.services).toEqual(
      before.services.map((s) => ({ ...s, origin: { ...s.origin } })),
    );
    expect(after.services.map((s) => [s.timeoutSec, s.uid])).toEqual([
      [5, null],
      [5, 7],
    ]);
  });

  it('gives settings after an interface line to that entry only', () => {
    const c = configOf(conf('port 25', 'interface 127.0.0.2', 'server a', 'interface 127.0.0.3', 'timeout 1', 'server b'));
    expect(c.services.map((s) => s.timeoutSec)).toEqual([DEFAULT_TIMEOUT_SEC, 1]);
  });

  it('starts a fresh port scope at each port line', () => {
    const c = configOf(conf('port 25', 'acp /p25', 'server a', 'port 26', 'server b'));
    expect(c.services.map((s) => s.acp)).toEqual(['/p25', null]);
  });
});

describe('access lists and limits', () => {
  const v4 = (address: string, bits = 32): Prefix => ({ family: 4, address, bits });
  const v6 = (address: string, bits = 128): Prefix => ({ family: 6, address, bits });
  const accessOf = (text: string): Access[] => configOf(text).services.map((s) => s.access);

  it('reads allow and deny into canonical prefixes, several to a line, and appends repeated lines in order', () => {
    const s = onlyService(
      conf('port 25', '  server a', '  allow 10.0.0.0/8 \t 2001:DB8::/32', '  deny 10.1.99.0/24', '  ALLOW 127.0.0.7 ::1  # two more', '  deny 0:0:0:0:0:0:0:2/127'),
    );
    expect(s.access).toEqual({
      allow: [v4('10.0.0.0', 8), v6('2001:db8::', 32), v4('127.0.0.7'), v6('::1')],
      deny: [v4('10.1.99.0', 24), v6('::2', 127)],
      maxconn: null,
      perSource: null,
      rate: null,
    });
    expect(s).toEqual(svc({ port: 25, target: server('a'), access: s.access, line: 1 }));
  });

  it('leaves the lists empty and the limits unset without these directives', () => {
    expect(onlyService(conf('port 25', 'server a')).access).toEqual(NO_ACCESS_RULES);
  });

  it('reads maxconn, per-source and rate as whole numbers from 1 to 1000000000', () => {
    expect(onlyService(conf('port 25', 'server a', 'maxconn 200', 'per-source 4', 'rate 1000000000')).access).toEqual({
      ...NO_ACCESS_RULES,
      maxconn: 200,
      perSource: 4,
      rate: 1000000000,
    });
    expect(onlyService(conf('port 25', 'server a', 'MAXCONN 007', 'Per-Source 1', 'rate 1')).access).toMatchObject({ maxconn: 7, perSource: 1, rate: 1 });
  });

  const layered = conf(
    'deny 192.0.2.0/24', // 1
    'maxconn 100', // 2
    'rate 50', // 3
    'port 25', // 4
    '  server a', // 5: the any-interface entry, in the port block's scope
    '  allow 10.0.0.0/8', // 6: still the port block: for every entry of port 25
    '  per-source 4', // 7
    '  interface 127.0.0.2', // 8
    '    server b', // 9
    '  interface 127.0.0.3', // 10
    '    server c', // 11
    '    deny 10.1.0.0/16', // 12: this entry's own lists: no allow
    '    maxconn 5', // 13
    'port 26', // 14
    '  server d', // 15
    '  interface 127.0.0.2', // 16
    '    server e', // 17
    '    rate 7', // 18
  );

  it('takes the lists from the innermost scope that has an allow or deny line: both lists, the other one empty', () => {
    expect(accessOf(layered).map((a) => [a.allow.map(formatPrefix), a.deny.map(formatPrefix)])).toEqual([
      [['10.0.0.0/8'], []], // port 25, any: the port's allow; the global deny is replaced
      [['10.0.0.0/8'], []], // port 25, 127.0.0.2: the port block's lists
      [[], ['10.1.0.0/16']], // port 25, 127.0.0.3: its own deny, and no allow at all
      [[], ['192.0.2.0/24']], // port 26, any: the global lists
      [[], ['192.0.2.0/24']], // port 26, 127.0.0.2
    ]);
  });

  it('takes each limit from the innermost scope that sets it', () => {
    expect(accessOf(layered).map((a) => [a.maxconn, a.perSource, a.rate])).toEqual([
      [100, 4, 50],
      [100, 4, 50],
      [5, 4, 50],
      [100, null, 50],
      [100, null, 7],
    ]);
  });

  it('keeps the lists and the limits apart: a limit in a scope does not replace the lists, nor a list the limits', () => {
    const [a, b] = accessOf(conf('allow 10.0.0.0/8', 'per-source 2', 'port 25', '  maxconn 3', '  server a', 'port 26', '  deny 10.0.0.1', '  server b'));
    expect(a).toEqual({ allow: [v4('10.0.0.0', 8)], deny: [], maxconn: 3, perSource: 2, rate: null });
    expect(b).toEqual({ allow: [], deny: [v4('10.0.0.1')], maxconn: null, perSource: 2, rate: null });
  });

  it('gives list lines after an interface line to that entry only, and starts a fresh port scope at each port line', () => {
    const [a, b, c] = accessOf(conf('port 25', '  interface 127.0.0.2', '    allow 127.0.0.0/8', '    server a', '  interface 127.0.0.3', '    server b', 'port 26', '  server c'));
    expect([a?.allow, b?.allow, c?.allow]).toEqual([[v4('127.0.0.0', 8)], [], []]);
  });

  it('appends repeated list lines within one scope only, not across scopes', () => {
    const [a] = accessOf(conf('allow 10.0.0.0/8', 'allow 10.0.0.0/8', 'port 25', '  allow 127.0.0.1', '  server a', '  allow ::1', '  deny 127.0.0.2'));
    expect(a).toMatchObject({ allow: [v4('127.0.0.1'), v6('::1')], deny: [v4('127.0.0.2')] });
  });

  it.each([
    ['allow', '"allow" needs at least one prefix'],
    ['deny', '"deny" needs at least one prefix'],
    ['DENY   # none', '"deny" needs at least one prefix'],
    ['allow foo', 'invalid prefix "foo": expected an IPv4 or IPv6 address with an optional /length'],
    ['allow [::1]', 'invalid prefix "[::1]": expected an IPv4 or IPv6 address with an optional /length'],
    ['deny 10.0.0.0/', 'invalid prefix "10.0.0.0/": expected an IPv4 or IPv6 address with an optional /length'],
    ['deny 10.0.0.0/x', 'invalid prefix "10.0.0.0/x": expected an IPv4 or IPv6 address with an optional /length'],
    ['deny 10.0.0.0/08', 'invalid prefix "10.0.0.0/08": expected an IPv4 or IPv6 address with an optional /length'],
    ['allow 10.0.0.0/33', 'invalid prefix "10.0.0.0/33": the length must be 0-32'],
    ['allow 2001:db8::/129', 'invalid prefix "2001:db8::/129": the length must be 0-128'],
    ['allow 10.1.2.3/8', 'invalid prefix "10.1.2.3/8": host bits are set (the network is 10.0.0.0/8)'],
    ['deny 2001:db8::1/32', 'invalid prefix "2001:db8::1/32": host bits are set (the network is 2001:db8::/32)'],
    ['allow ::ffff:10.0.0.1', 'invalid prefix "::ffff:10.0.0.1": write an IPv4-mapped address as IPv4 (10.0.0.1)'],
    ['maxconn 0', 'invalid maxconn "0": expected a whole number from 1 to 1000000000'],
    ['maxconn 1000000001', 'invalid maxconn "1000000001": expected a whole number from 1 to 1000000000'],
    ['maxconn -1', 'invalid maxconn "-1": expected a whole number from 1 to 1000000000'],
    ['per-source 1.5', 'invalid per-source "1.5": expected a whole number from 1 to 1000000000'],
    ['per-source 000', 'invalid per-source "000": expected a whole number from 1 to 1000000000'],
    ['rate lots', 'invalid rate "lots": expected a whole number from 1 to 1000000000'],
    ['rate 99999999999999999999', 'invalid rate "99999999999999999999": expected a whole number from 1 to 1000000000'],
    ['maxconn', '"maxconn" needs an argument'],
    ['per-source', '"per-source" needs an argument'],
    ['rate 5 10', '"rate" takes one argument'],
  ])('rejects "%s" at its line', (line, message) => {
    expect(errorsOf(conf('port 25', 'server a', line))).toEqual([`tcpproxy:test.conf:3: ${message}`]);
  });

  it('reports each bad prefix of a line, in order', () => {
    expect(errorsOf(conf('allow 10.0.0.0/8 foo 10.1.2.3/8 ::1 1.2.3.4/40', 'port 25', 'server a'))).toEqual([
      'tcpproxy:test.conf:1: invalid prefix "foo": expected an IPv4 or IPv6 address with an optional /length',
      'tcpproxy:test.conf:1: invalid prefix "10.1.2.3/8": host bits are set (the network is 10.0.0.0/8)',
      'tcpproxy:test.conf:1: invalid prefix "1.2.3.4/40": the length must be 0-32',
    ]);
  });

  it('rejects a limit twice in one scope, in each scope, and allows it once per scope', () => {
    expect(
      errorsOf(conf('maxconn 1', 'maxconn 2', 'port 25', '  rate 5', '  server a', '  RATE 5', '  interface 127.0.0.2', '    per-source 1', '    server b', '    per-source 2')),
    ).toEqual([
      'tcpproxy:test.conf:2: duplicate "maxconn" (first on line 1)',
      'tcpproxy:test.conf:6: duplicate "rate" (first on line 4)',
      'tcpproxy:test.conf:10: duplicate "per-source" (first on line 8)',
    ]);
    expect(accessOf(conf('maxconn 1', 'port 25', '  maxconn 2', '  server a', '  interface 127.0.0.2', '    maxconn 3', '    server b')).map((a) => a.maxconn)).toEqual([2, 3]);
  });

  it('reports every access error of a file in one pass, with the other errors, sorted by line', () => {
    const text = conf(
      'allow', // 1
      'maxconn 0', // 2
      'port 25', // 3
      '  server a', // 4
      '  deny 10.0.0.1/8 bogus', // 5
      '  per-source x', // 6
      '  timeout soon', // 7
      '  interface 127.0.0.2', // 8
      '    server b', // 9
      '    allow ::ffff:127.0.0.1 127.0.0.0/24', // 10
      '    rate 0', // 11
      '    rate 2', // 12
    );
    expect(errorsOf(text)).toEqual([
      'tcpproxy:test.conf:1: "allow" needs at least one prefix',
      'tcpproxy:test.conf:2: invalid maxconn "0": expected a whole number from 1 to 1000000000',
      'tcpproxy:test.conf:5: invalid prefix "10.0.0.1/8": host bits are set (the network is 10.0.0.0/8)',
      'tcpproxy:test.conf:5: invalid prefix "bogus": expected an IPv4 or IPv6 address with an optional /length',
      'tcpproxy:test.conf:6: invalid per-source "x": expected a whole number from 1 to 1000000000',
      'tcpproxy:test.conf:7: invalid timeout "soon": expected a number of seconds',
      'tcpproxy:test.conf:10: invalid prefix "::ffff:127.0.0.1": write an IPv4-mapped address as IPv4 (127.0.0.1)',
      'tcpproxy:test.conf:11: invalid rate "0": expected a whole number from 1 to 1000000000',
      'tcpproxy:test.conf:12: duplicate "rate" (first on line 11)',
    ]);
  });

  it('gives the services the lists that checkAccess then applies', () => {
    const [any, office] = configOf(conf('port 8000', '  server a', '  interface 127.0.0.2', '    allow 10.1.0.0/16', '    deny 10.1.99.0/24', '    server b')).services;
    const verdicts = ['10.1.2.3', '10.1.99.3', '192.0.2.1', '::ffff:10.1.2.3'].map((c) => [checkAccess(any?.access ?? NO_ACCESS_RULES, c), checkAccess(office?.access ?? NO_ACCESS_RULES, c)]);
    expect(verdicts).toEqual([
      [null, null],
      [null, 'deny 10.1.99.0/24'],
      [null, 'no allow matched'],
      [null, null],
    ]);
  });
});

describe('bounds and sandbox', () => {
  const sandboxOf = (text: string): Service['sandbox'][] => configOf(text).services.map((s) => s.sandbox);
  const boundsOf = (text: string): Service['bounds'][] => configOf(text).services.map((s) => s.bounds);

  it('gives a service the defaults when nothing is written: no handler timeout, keepalive, 100 MiB transcripts, no-new-privs, no rlimits', () => {
    const s = onlyService(conf('port 25', 'server a'));
    expect(s.bounds).toEqual({ handlerTimeoutSec: 0, keepalive: true, writefileMax: 100 * 1024 * 1024 });
    expect(s.sandbox).toEqual({ noNewPrivs: true, rlimitNproc: null, rlimitAs: null, rlimitCpu: null, rlimitNofile: null });
  });

  it('reads every directive, in any case, yes and no in any case', () => {
    const s = onlyService(
      conf(
        'port 25',
        '  exec /bin/cat',
        '  handler-timeout 2147483',
        '  KEEPALIVE No',
        '  writefile-max 1',
        '  No-New-Privs NO',
        '  rlimit-nproc 1000000000',
        '  rlimit-as 12',
        '  rlimit-cpu 1',
        '  rlimit-nofile 007',
      ),
    );
    expect(s.bounds).toEqual({ handlerTimeoutSec: 2147483, keepalive: false, writefileMax: 1 });
    expect(s.sandbox).toEqual({ noNewPrivs: false, rlimitNproc: 1000000000, rlimitAs: 12, rlimitCpu: 1, rlimitNofile: 7 });
  });

  it.each([
    ['12', 12],
    ['1K', 1024],
    ['1k', 1024],
    ['3M', 3 * 1024 ** 2],
    ['2g', 2 * 1024 ** 3],
    ['8388607G', 8388607 * 1024 ** 3],
    ['9007199254740991', 9007199254740991],
  ])('reads the size "%s" as %d bytes (K, M, G: powers of 1024)', (text, bytes) => {
    const s = onlyService(conf('port 25', 'server a', `writefile-max ${text}`, `rlimit-as ${text}`));
    expect([s.bounds.writefileMax, s.sandbox.rlimitAs]).toEqual([bytes, bytes]);
  });

  it('scopes them like timeout: the interface entry, then the port block, then the global section, then the default', () => {
    const text = conf(
      'rlimit-as 1G', // global
      'keepalive no',
      'port 25',
      '  rlimit-as 2G', // port
      '  no-new-privs no',
      '  server a', // any-interface entry: the port's
      '  interface 127.0.0.2',
      '    rlimit-as 3G', // entry
      '    handler-timeout 30',
      '    server b',
      'port 26',
      '  server c', // only the globals
    );
    expect(sandboxOf(text).map((x) => [x.rlimitAs, x.noNewPrivs])).toEqual([
      [2 * 1024 ** 3, false],
      [3 * 1024 ** 3, false],
      [1024 ** 3, true],
    ]);
    expect(boundsOf(text).map((b) => [b.handlerTimeoutSec, b.keepalive])).toEqual([
      [0, false],
      [30, false],
      [0, false],
    ]);
  });

  it.each([
    ['handler-timeout soon', 'invalid handler-timeout "soon": expected a number of seconds'],
    ['handler-timeout -1', 'invalid handler-timeout "-1": expected a number of seconds'],
    ['handler-timeout 2147484', 'invalid handler-timeout "2147484": expected a number of seconds'],
    ['keepalive maybe', 'keepalive must be "yes" or "no", not "maybe"'],
    ['keepalive 1', 'keepalive must be "yes" or "no", not "1"'],
    ['no-new-privs off', 'no-new-privs must be "yes" or "no", not "off"'],
    ['writefile-max 0', 'writefile-max 0 is out of range (1-9007199254740991 bytes)'],
    ['writefile-max 0K', 'writefile-max 0K is out of range (1-9007199254740991 bytes)'],
    ['writefile-max 8388608G', 'writefile-max 8388608G is out of range (1-9007199254740991 bytes)'],
    ['writefile-max 1.5M', 'invalid writefile-max "1.5M": expected bytes, optionally with K, M or G'],
    ['writefile-max 10MB', 'invalid writefile-max "10MB": expected bytes, optionally with K, M or G'],
    ['rlimit-as 12Q', 'invalid rlimit-as "12Q": expected bytes, optionally with K, M or G'],
    ['rlimit-as K', 'invalid rlimit-as "K": expected bytes, optionally with K, M or G'],
    ['rlimit-as -1', 'invalid rlimit-as "-1": expected bytes, optionally with K, M or G'],
    ['rlimit-as 0', 'rlimit-as 0 is out of range (1-9007199254740991 bytes)'],
    ['rlimit-nproc 0', 'invalid rlimit-nproc "0": expected a whole number from 1 to 1000000000'],
    ['rlimit-nproc many', 'invalid rlimit-nproc "many": expected a whole number from 1 to 1000000000'],
    ['rlimit-nofile 1000000001', 'invalid rlimit-nofile "1000000001": expected a whole number from 1 to 1000000000'],
    ['rlimit-nofile 64K', 'invalid rlimit-nofile "64K": expected a whole number from 1 to 1000000000'],
    ['rlimit-cpu 0', 'invalid rlimit-cpu "0": expected a whole number of seconds from 1 to 1000000000'],
    ['rlimit-cpu 1.5', 'invalid rlimit-cpu "1.5": expected a whole number of seconds from 1 to 1000000000'],
    ['rlimit-cpu', '"rlimit-cpu" needs an argument'],
    ['keepalive', '"keepalive" needs an argument'],
    ['rlimit-as 1 G', '"rlimit-as" takes one argument'],
  ])('rejects "%s" at its line', (line, message) => {
    expect(errorsOf(conf('port 25', 'server a', line))).toEqual([`tcpproxy:test.conf:3: ${message}`]);
  });

  it('rejects each of them twice in one scope, and allows it once per scope', () => {
    expect(
      errorsOf(
        conf('rlimit-cpu 1', 'rlimit-cpu 2', 'port 25', '  keepalive no', '  server a', '  KeepAlive yes', '  interface 127.0.0.2', '    writefile-max 1M', '    server b', '    writefile-max 2M'),
      ),
    ).toEqual([
      'tcpproxy:test.conf:2: duplicate "rlimit-cpu" (first on line 1)',
      'tcpproxy:test.conf:6: duplicate "keepalive" (first on line 4)',
      'tcpproxy:test.conf:10: duplicate "writefile-max" (first on line 8)',
    ]);
    expect(sandboxOf(conf('rlimit-nofile 10', 'port 25', '  rlimit-nofile 20', '  server a', '  interface 127.0.0.2', '    rlimit-nofile 30', '    server b')).map((x) => x.rlimitNofile)).toEqual([20, 30]);
  });

  it('reports them with the other errors of the file, sorted by line', () => {
    expect(errorsOf(conf('no-new-privs sure', 'port 25', '  rlimit-as 1T', '  server a', '  timeout soon', '  handler-timeout later'))).toEqual([
      'tcpproxy:test.conf:1: no-new-privs must be "yes" or "no", not "sure"',
      'tcpproxy:test.conf:3: invalid rlimit-as "1T": expected bytes, optionally with K, M or G',
      'tcpproxy:test.conf:5: invalid timeout "soon": expected a number of seconds',
      'tcpproxy:test.conf:6: invalid handler-timeout "later": expected a number of seconds',
    ]);
  });
});

describe('unknown directives', () => {
  it.each([
    ['sever', 'unknown directive "sever" (did you mean "server"?)'],
    ['SEVER', 'unknown directive "SEVER" (did you mean "server"?)'],
    ['intreface', 'unknown directive "intreface" (did you mean "interface"?)'],
    ['ports', 'unknown directive "ports" (did you mean "port"?)'],
    ['timout', 'unknown directive "timout" (did you mean "timeout"?)'],
    ['execute', 'unknown directive "execute"'],
    ['foo', 'unknown directive "foo"'],
    ['port=25', 'unknown directive "port=25"'],
  ])('%s', (word, message) => {
    expect(errorsOf(conf('port 25', 'server a', `${word} x`))).toEqual([`tcpproxy:test.conf:3: ${message}`]);
  });
});

describe('error collection', () => {
  it('reports every error of the file in one run, sorted by line', () => {
    const text = conf(
      'timeout x', // 1
      'port 25', // 2: neither, found at the end
      'bogus', // 3
      'port 110', // 4
      '  interface 127.0.0.3', // 5
      '  exec /bin/a', // 6
      '  server b', // 7
      'uid 0', // 8
      'port 25', // 9
      '  server c', // 10
    );
    expect(errorsOf(text)).toEqual([
      'tcpproxy:test.conf:1: invalid timeout "x": expected a number of seconds',
      'tcpproxy:test.conf:2: port 25 has neither "server" nor "exec"',
      'tcpproxy:test.conf:3: unknown directive "bogus"',
      'tcpproxy:test.conf:7: port 110 interface 127.0.0.3 has both "exec" (line 6) and "server"',
      'tcpproxy:test.conf:8: uid 0 is not allowed: tcpproxy never serves requests as root',
      'tcpproxy:test.conf:9: port 25 is already defined on line 2',
    ]);
  });

  it('puts file-level errors (line 0) first', () => {
    const r = parse(conf('sever a', 'timeout 5'));
    expect(r.ok).toBe(false);
    expect(r.ok ? [] : r.errors).toEqual([
      { file: FILE, line: 0, message: 'no service defined (add a "port" block)' },
      { file: FILE, line: 1, message: 'unknown directive "sever" (did you mean "server"?)' },
    ]);
  });

  it('gives the programs of the exec and acp lines with the errors, for their checks in the same run', () => {
    const r = parse(conf('acp /bin/judge -v', 'port 25', '  exec /bin/a b  c', '  timeout x', 'port 26', '  exec', '  acp  ./local', '  acp /dup'));
    expect(r.ok).toBe(false);
    expect(r.ok ? [] : r.programs).toEqual([
      { line: 1, argv: ['/bin/judge', '-v'], acp: true },
      { line: 3, argv: ['/bin/a', 'b', 'c'], acp: false },
      { line: 7, argv: ['./local'], acp: true },
      { line: 8, argv: ['/dup'], acp: true },
    ]);
  });

  const tmp = useTempDir('tcpproxy-programs-');
  it('checks those programs as resolvePrograms does: a missing one, one not executable, one not in the path; each line once', () => {
    const dir = tmp.path;
    fs.writeFileSync(path.join(dir, 'plain'), '', { mode: 0o644 });
    fs.writeFileSync(path.join(dir, 'run'), '#!/bin/sh\n', { mode: 0o755 });
    const lines = [
      { line: 2, argv: ['./run'], acp: false },
      { line: 3, argv: ['/nonexistent/x'], acp: false },
      { line: 4, argv: ['./plain'], acp: true },
      { line: 5, argv: ['nosuchprog'], acp: false },
      { line: 5, argv: ['nosuchprog'], acp: false },
    ];
    expect(checkProgramLines(lines, FILE, dir, dir).map(formatConfigError)).toEqual([
      'tcpproxy:test.conf:3: program "/nonexistent/x" does not exist',
      // No execute bit at all: not executable for root either.
      'tcpproxy:test.conf:4: acp: program "./plain" is not executable',
      `tcpproxy:test.conf:5: program "nosuchprog" not found in ${dir}`,
    ]);
  });

  it('never throws on random input', () => {
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const bad: string[] = [];
    const words = [...DIRECTIVES, 'PORT', '25', '0', 'smtp', '::1', '[::1]:80', '127.0.0.2', '/bin/x', '.', '#', 'a#b', 'yes', '\t', '\r', '\0', '\uFFFD', '', 'constructor', '__proto__', ' '];
    for (let i = 0; i < 2000; i++) {
      const lines: string[] = [];
      for (let l = rand(30); l > 0; l--) {
        const parts: string[] = [];
        for (let w = rand(5); w > 0; w--) parts.push(words[rand(words.length)] ?? '');
        lines.push(parts.join(rand(2) ? ' ' : '\t'));
      }
      const r = parse(lines.join(rand(2) ? '\n' : '\r\n'));
      if (r.ok) continue;
      const sorted = r.errors.length > 0 && r.errors.every((e, k) => k === 0 || e.line >= (r.errors[k - 1]?.line ?? 0));
      if (!sorted) bad.push(lines.join('\n'));
    }
    expect(bad).toEqual([]);
  });

  it('reads a 40,000-line file (bounded by the test timeout, not timed)', () => {
    const lines: string[] = [];
    for (let p = 1; p <= 10000; p++) lines.push(`port ${p}`, `  interface 127.0.0.${(p % 250) + 1}`, `    server 10.0.0.1:${p}`, '    timeout 5');
    const c = configOf(conf(...lines));
    expect(c.services).toHaveLength(10000);
    const last = c.services[9999];
    expect([last?.port, last?.iface, last?.origin]).toEqual([10000, '127.0.0.1', { file: FILE, line: 39998 }]);
  });
});

describe('DIRECTIVES', () => {
  it('lists every directive the parser knows', () => {
    expect([...DIRECTIVES].sort()).toEqual(
      [
        'accept-proxy',
        'acp',
        'allow',
        'balance',
        'control',
        'deny',
        'exec',
        'gid',
        'handler-timeout',
        'interface',
        'keepalive',
        'loglevel',
        'logname',
        'maxconn',
        'metrics',
        'no-new-privs',
        'per-source',
        'port',
        'rate',
        'rlimit-as',
        'rlimit-cpu',
        'rlimit-nofile',
        'rlimit-nproc',
        'send-proxy',
        'server',
        'setenv',
        'source',
        'standalone',
        'timeout',
        'uid',
        'workers',
        'writefile',
        'writefile-max',
      ],
    );
    for (const d of DIRECTIVES) {
      const r = parse(conf(d));
      const messages = r.ok ? [] : r.errors.map((e) => e.message);
      expect(messages).not.toContain(`unknown directive "${d}"`);
      // accept-proxy without words is complete: a header from any source.
      if (d === 'accept-proxy') expect(messages).toEqual(['no service defined (add a "port" block)']);
      else expect(messages).toContain(d === 'allow' || d === 'deny' ? `"${d}" needs at least one prefix` : `"${d}" needs an argument`);
    }
  });
});

describe('readConfig', () => {
  const tmp = useTempDir('tcpproxy-config-');

  const write = (name: string, data: string | Buffer): string => {
    const file = path.join(tmp.path, name);
    fs.writeFileSync(file, data);
    return file;
  };
  const readErrors = (file: string): string[] => {
    const r = readConfig(file, fakeServices);
    return r.ok ? [] : r.errors.map(formatConfigError);
  };

  it('reads and parses a file, with command-line defaults', () => {
    const file = write('ok.conf', conf('port smtp', 'server 127.0.0.1'));
    expect(readConfig(file, fakeServices, { timeoutSec: 7 })).toEqual({
      ok: true,
      config: {
        file,
        standalone: null,
        logname: null,
        workers: null,
        control: null,
        metrics: null,
        services: [{ ...svc({ port: 25, target: server('127.0.0.1'), timeoutSec: 7, line: 1 }), origin: { file, line: 1 } }],
      },
    });
  });

  it('reports a missing file at line 0', () => {
    const file = path.join(tmp.path, 'missing.conf');
    expect(readErrors(file)).toEqual([`tcpproxy:${file}: cannot read: ENOENT (no such file or directory)`]);
  });

  it('reports a path through a regular file', () => {
    const file = `${write('plain', 'x')}/sub.conf`;
    expect(readErrors(file)).toEqual([`tcpproxy:${file}: cannot read: ENOTDIR (not a directory)`]);
  });

  it('refuses a directory', () => {
    expect(readErrors(tmp.path)).toEqual([`tcpproxy:${tmp.path}: is not a regular file`]);
  });

  // A FIFO (made with mkfifo(1), a process): test/integration/config-fifo.test.ts.

  it('refuses a character device', () => {
    expect(readErrors('/dev/null')).toEqual(['tcpproxy:/dev/null: is not a regular file']);
  });

  it('follows a symlink to a regular file', () => {
    const target = write('target.conf', conf('port 25', 'server a'));
    const link = path.join(tmp.path, 'link.conf');
    fs.symlinkSync(target, link);
    expect(readConfig(link, fakeServices).ok).toBe(true);
  });

  // An unreadable file (EACCES): test/privileged/config-file.test.ts, for real, as another user.

  it('flags invalid UTF-8 and NUL bytes by line', () => {
    const file = write(
      'binary.conf',
      Buffer.concat([Buffer.from('port 25\n# caf'), Buffer.from([0xe9]), Buffer.from('\nserver a\n\0\nexec x\n')]),
    );
    expect(readErrors(file)).toEqual([
      `tcpproxy:${file}:2: line is not valid UTF-8`,
      `tcpproxy:${file}:4: line contains a NUL byte`,
      `tcpproxy:${file}:5: port 25 has both "server" (line 3) and "exec"`,
    ]);
  });

  it('reads valid UTF-8 beyond ASCII', () => {
    const file = write('utf8.conf', conf('# café – ü', 'port 25', 'server a'));
    expect(readConfig(file, fakeServices).ok).toBe(true);
  });

  it('rejects a 1 MB line in a file quickly', () => {
    const file = write('long.conf', conf('port 25', 'server a', `#${'x'.repeat(1 << 20)}`));
    expect(readErrors(file)).toEqual([`tcpproxy:${file}:3: line is longer than 4096 characters`]);
  });
});
