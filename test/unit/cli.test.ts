import {
  DEFAULT_CONFIG,
  DEFAULT_PIDFILE,
  HELP,
  MAX_TIMEOUT_SEC,
  OPTION_LETTERS,
  USAGE,
  parseArgs,
  type CliOptions,
} from '../../src/table/cli';
import type { PortResolver } from '../../src/table/address';

const services: Record<string, number> = { smtp: 25, finger: 79, http: 80 };
const resolve: PortResolver = (name) => services[name] ?? null;

const DEFAULTS: CliOptions = {
  acp: null,
  bind: null,
  configFile: null,
  logname: null,
  pidfile: null,
  standalone: false,
  timeoutSec: null,
  prefix: null,
  writefile: null,
  clearEnv: false,
  list: 0,
  foreground: false,
  control: null,
  status: 0,
  json: false,
  server: null,
  help: false,
  version: false,
};

function ok(...argv: string[]): CliOptions {
  const r = parseArgs(argv, resolve);
  if (!r.ok) throw new Error(`expected ${JSON.stringify(argv)} to parse, got: ${r.error}`);
  return r.options;
}

function err(...argv: string[]): string {
  const r = parseArgs(argv, resolve);
  if (r.ok) throw new Error(`expected ${JSON.stringify(argv)} to fail, got: ${JSON.stringify(r.options)}`);
  return r.error;
}

const host = (h: string, port: number | null = null) => ({ kind: 'server', servers: [{ host: h, port }] });

describe('parseArgs: defaults', () => {
  it('no arguments: every option unset', () => {
    expect(ok()).toEqual(DEFAULTS);
  });

  it('a server argument alone', () => {
    expect(ok('mail.example.org')).toEqual({ ...DEFAULTS, server: host('mail.example.org') });
  });

  it('exports the default paths', () => {
    expect(DEFAULT_PIDFILE).toBe('/var/run/tcpproxy.pid');
    expect(DEFAULT_CONFIG).toBe('/etc/tcpproxy.conf');
  });
});

describe('parseArgs: options with an argument', () => {
  // [letter, value, the field it sets, the value expected there]
  const cases: [string, string, keyof CliOptions, unknown][] = [
    ['a', '/usr/local/sbin/acp', 'acp', '/usr/local/sbin/acp'],
    ['f', '/tmp/t.conf', 'configFile', '/tmp/t.conf'],
    ['c', '/tmp/t.conf', 'configFile', '/tmp/t.conf'],
    ['l', 'smtp-proxy', 'logname', 'smtp-proxy'],
    ['t', '30', 'timeoutSec', 30],
    ['v', 'TCP_', 'prefix', 'TCP_'],
    ['w', '/var/log/tp', 'writefile', '/var/log/tp'],
  ];

  describe.each(cases)('-%s', (letter, value, field, expected) => {
    it('as a separate word', () => {
      expect(ok(`-${letter}`, value)).toEqual({ ...DEFAULTS, [field]: expected });
    });
    it('attached to the letter', () => {
      expect(ok(`-${letter}${value}`)).toEqual({ ...DEFAULTS, [field]: expected });
    });
    it('at the end of a cluster, separate', () => {
      expect(ok(`-sy${letter}`, value)).toEqual({ ...DEFAULTS, standalone: true, clearEnv: true, [field]: expected });
    });
    it('at the end of a cluster, attached', () => {
      expect(ok(`-D${letter}${value}`)).toEqual({ ...DEFAULTS, foreground: true, [field]: expected });
    });
    it('followed by the server argument', () => {
      expect(ok(`-${letter}`, value, 'h')).toEqual({ ...DEFAULTS, [field]: expected, server: host('h') });
    });
    it('takes the next word even if it looks like an option', () => {
      if (letter === 't' || letter === 'v') return; // those check their value
      expect(ok(`-${letter}`, '-s')).toEqual({ ...DEFAULTS, [field]: '-s' });
    });
    it('given twice: the last wins', () => {
      const first = letter === 't' ? '5' : letter === 'v' ? 'Y_' : 'x';
      expect(ok(`-${letter}`, first, `-${letter}`, value)).toEqual({ ...DEFAULTS, [field]: expected });
    });
    it('missing: an error', () => {
      expect(err(`-${letter}`)).toBe(`option -${letter} needs an argument`);
      expect(err('-s', `-y${letter}`)).toBe(`option -${letter} needs an argument`);
    });
  });

  it('-c and -f set the same field: the last wins', () => {
    expect(ok('-f', 'a', '-c', 'b').configFile).toBe('b');
    expect(ok('-c', 'a', '-f', 'b').configFile).toBe('b');
  });

  it('an argument with blanks is kept whole', () => {
    expect(ok('-a', '/bin/acp --strict me').acp).toBe('/bin/acp --strict me');
  });

  it.each(['a', 'c', 'f', 'l', 'w'])('-%s with an empty argument is an error', (letter) => {
    expect(err(`-${letter}`, '')).toBe(`option -${letter}: empty argument`);
  });
});

describe('parseArgs: flags', () => {
  it('-s, -y, -D, -z one at a time', () => {
    expect(ok('-s')).toEqual({ ...DEFAULTS, standalone: true });
    expect(ok('-y')).toEqual({ ...DEFAULTS, clearEnv: true });
    expect(ok('-D')).toEqual({ ...DEFAULTS, foreground: true });
    expect(ok('-z')).toEqual({ ...DEFAULTS, list: 1 });
  });

  it('clustered, in any order', () => {
    const all = { ...DEFAULTS, standalone: true, clearEnv: true, foreground: true, list: 1 as const };
    expect(ok('-Dsyz')).toEqual(all);
    expect(ok('-zysD')).toEqual(all);
    expect(ok('-Dz')).toEqual({ ...DEFAULTS, foreground: true, list: 1 });
    expect(ok('-sy')).toEqual({ ...DEFAULTS, standalone: true, clearEnv: true });
  });

  it('separate words', () => {
    expect(ok('-D', '-s', '-y', '-z')).toEqual({
      ...DEFAULTS,
      standalone: true,
      clearEnv: true,
      foreground: true,
      list: 1,
    });
  });

  it('-s given twice is still -s', () => {
    expect(ok('-ss')).toEqual({ ...DEFAULTS, standalone: true });
  });
});

describe('parseArgs: -z', () => {
  it.each([
    [['-z'], 1],
    [['-zz'], 2],
    [['-z', '-z'], 2],
    [['-z', '-s', '-z'], 2],
    [['-zzz'], 2],
    [['-zz', '-zz'], 2],
  ] as const)('%j → list %d', (argv, list) => {
    expect(ok(...argv).list).toBe(list);
  });
});

describe('parseArgs: -p', () => {
  it('-p once: the default pidfile', () => {
    expect(ok('-p')).toEqual({ ...DEFAULTS, pidfile: DEFAULT_PIDFILE });
    expect(ok('-sp')).toEqual({ ...DEFAULTS, standalone: true, pidfile: DEFAULT_PIDFILE });
  });

  it('-p once does not take an argument: the next word is the server', () => {
    expect(ok('-p', 'h')).toEqual({ ...DEFAULTS, pidfile: DEFAULT_PIDFILE, server: host('h') });
  });

  it.each([
    [['-p', '-p', '/run/tp.pid']],
    [['-pp', '/run/tp.pid']],
    [['-pp/run/tp.pid']],
    [['-p', '-p/run/tp.pid']],
    [['-p', '-s', '-p', '/run/tp.pid']],
    [['-psp', '/run/tp.pid']],
  ])('%j → the named pidfile', (argv) => {
    expect(ok(...argv)).toEqual({
      ...DEFAULTS,
      pidfile: '/run/tp.pid',
      standalone: argv.join(' ').includes('s'),
    });
  });

  it('the name may be followed by the server argument', () => {
    expect(ok('-pp', 'NAME', 'h')).toEqual({ ...DEFAULTS, pidfile: 'NAME', server: host('h') });
  });

  it('a second -p without a name is an error', () => {
    expect(err('-pp')).toBe('option -p needs an argument');
    expect(err('-p', '-p')).toBe('option -p needs an argument');
  });

  it('the second -p takes the rest of its word, even a p', () => {
    expect(ok('-ppp')).toEqual({ ...DEFAULTS, pidfile: 'p' });
    expect(ok('-p', '-pp', 'h')).toEqual({ ...DEFAULTS, pidfile: 'p', server: host('h') });
  });

  it('an empty name is an error', () => {
    expect(err('-pp', '')).toBe('option -p: empty argument');
  });

  it.each([
    [['-p', '-p', 'NAME', '-p']],
    [['-ppNAME', '-p']],
    [['-pp', 'NAME', '-p']],
    [['-p', '-p', 'NAME', '-zp']],
  ])('%j: a third -p is an error', (argv) => {
    expect(err(...argv)).toBe('-p given more than twice');
  });
});

describe('parseArgs: -b', () => {
  it.each([
    ['8080', { iface: null, port: 8080 }],
    ['127.0.0.1:8080', { iface: '127.0.0.1', port: 8080 }],
    ['[::1]:8080', { iface: '::1', port: 8080 }],
    ['[0:0:0:0:0:0:0:1]:8080', { iface: '::1', port: 8080 }],
    ['smtp', { iface: null, port: 25 }],
    ['192.44.100.7:finger', { iface: '192.44.100.7', port: 79 }],
    ['0', { iface: null, port: 0 }],
    ['127.0.0.1:0', { iface: '127.0.0.1', port: 0 }],
    ['[::1]:0', { iface: '::1', port: 0 }],
  ])('-b %s', (value, bind) => {
    const want = { ...DEFAULTS, bind, standalone: true, server: host('h') };
    expect(ok('-b', value, 'h')).toEqual(want);
    expect(ok(`-b${value}`, 'h')).toEqual(want);
  });

  it('in a cluster', () => {
    expect(ok('-Db', '8080', 'h')).toEqual({
      ...DEFAULTS,
      foreground: true,
      bind: { iface: null, port: 8080 },
      standalone: true,
      server: host('h'),
    });
  });

  it('the example of the man page', () => {
    expect(ok('-b', '192.44.100.7:79', '/bin/date')).toEqual({
      ...DEFAULTS,
      bind: { iface: '192.44.100.7', port: 79 },
      standalone: true,
      server: { kind: 'exec', argv: ['/bin/date'] },
    });
  });

  it.each([
    ['65536', 'option -b: port 65536 is out of range (1-65535)'],
    ['00', 'option -b: port 00 is out of range (1-65535)'],
    ['nosuch', 'option -b: unknown service name "nosuch"'],
    ['', 'option -b: empty port'],
    ['8080x', 'option -b: invalid port "8080x"'],
    ['localhost:8080', 'option -b: invalid interface "localhost": expected an IP address'],
    ['localhost:0', 'option -b: invalid interface "localhost": expected an IP address'],
    ['[::1', 'option -b: invalid address "[::1": expected [interface:]port'],
    ['::1:0', 'option -b: invalid port "::1:0"'],
    ['127.0.0.1:', 'option -b: empty port'],
  ])('-b %j: %s', (value, message) => {
    expect(err('-b', value, 'h')).toBe(message);
  });

  it('needs the server argument', () => {
    expect(err('-b', '8080')).toBe('option -b needs a server argument');
    expect(err('-s', '-b0')).toBe('option -b needs a server argument');
  });

  it('may be given once', () => {
    expect(err('-b', '80', '-b', '81', 'h')).toBe('-b given more than once');
  });

  it('a missing value is an error', () => {
    expect(err('-b')).toBe('option -b needs an argument');
  });
});

describe('parseArgs: -t and -v values', () => {
  it.each([
    ['0', 0],
    ['60', 60],
    ['007', 7],
    [String(MAX_TIMEOUT_SEC), 2147483],
  ])('-t %s', (value, secs) => {
    expect(ok('-t', value).timeoutSec).toBe(secs);
  });

  it.each(['abc', '', '-1', '1.5', '1e3', ' 30', '30s', '0x10', '+5'])('-t %j is not a number of seconds', (value) => {
    expect(err('-t', value)).toBe(`option -t needs a number of seconds, not "${value}"`);
  });

  it('-t past the largest timeout', () => {
    expect(err('-t', '2147484')).toBe('option -t: timeout 2147484 is out of range (0-2147483)');
    expect(err('-t99999999999999999999999')).toBe(
      'option -t: timeout 99999999999999999999999 is out of range (0-2147483)',
    );
  });

  it.each(['PROXY_', 'X', '_', 'my_proxy_2_', 'a1'])('-v %s', (value) => {
    expect(ok('-v', value).prefix).toBe(value);
  });

  it.each(['1x', '', 'A-B', 'A B', 'Ä_', 'X='])('-v %j is not a variable prefix', (value) => {
    expect(err('-v', value)).toBe(`option -v: invalid variable prefix "${value}"`);
  });
});

describe('parseArgs: the server argument', () => {
  it.each([
    ['mail.example.org', host('mail.example.org')],
    ['Mail.Example.ORG:25', host('mail.example.org', 25)],
    ['host:smtp', host('host', 25)],
    ['192.168.1.2:110', host('192.168.1.2', 110)],
    ['[::1]:80', host('::1', 80)],
    ['[::1]', host('::1')],
    ['/bin/date', { kind: 'exec', argv: ['/bin/date'] }],
    ['./handler', { kind: 'exec', argv: ['./handler'] }],
    ['./handler arg1 arg2', { kind: 'exec', argv: ['./handler', 'arg1', 'arg2'] }],
  ])('%j', (text, server) => {
    expect(ok(text)).toEqual({ ...DEFAULTS, server });
  });

  it('one argv word with blanks is split into the handler argv', () => {
    expect(ok('-b', '79', '/bin/echo hi')).toEqual({
      ...DEFAULTS,
      bind: { iface: null, port: 79 },
      standalone: true,
      server: { kind: 'exec', argv: ['/bin/echo', 'hi'] },
    });
  });

  it('the handler arguments are separate argv words only inside one word', () => {
    expect(ok('-b', '79', '/bin/echo', 'hi').server).toEqual({ kind: 'exec', argv: ['/bin/echo', 'hi'] });
  });

  it.each([
    ['host:99999', 'server argument: server "host:99999": port 99999 is out of range (1-65535)'],
    ['host:nosuch', 'server argument: server "host:nosuch": unknown service name "nosuch"'],
    ['', 'server argument: invalid server "": expected host[:port]'],
    [':80', 'server argument: invalid server ":80": expected host[:port]'],
    ['two words', 'server argument: invalid server "two words": expected host[:port]'],
    ['bad/host', 'server argument: invalid server host "bad/host"'],
  ])('%j: %s', (text, message) => {
    expect(err(text)).toBe(message);
  });

  it('options stop at the server argument', () => {
    expect(err('h', '-s')).toBe('unexpected argument "-s"');
    expect(ok('/bin/date', '-s').server).toEqual({ kind: 'exec', argv: ['/bin/date', '-s'] });
  });

  it('several host[:port] arguments form one group of servers, in the order given', () => {
    expect(ok('a', 'b')).toEqual({ ...DEFAULTS, server: { kind: 'server', servers: [{ host: 'a', port: null }, { host: 'b', port: null }] } });
    expect(ok('-s', 'a', 'b:smtp', '[::1]:80')).toEqual({
      ...DEFAULTS,
      standalone: true,
      server: { kind: 'server', servers: [{ host: 'a', port: null }, { host: 'b', port: 25 }, { host: '::1', port: 80 }] },
    });
    expect(err('a', 'b', 'a')).toBe('server argument: server "a" is listed twice');
    expect(err('a', 'b:99999')).toBe('server argument: server "b:99999": port 99999 is out of range (1-65535)');
  });

  it('-- ends the options', () => {
    expect(ok('-s', '--', 'h')).toEqual({ ...DEFAULTS, standalone: true, server: host('h') });
    expect(ok('--')).toEqual(DEFAULTS);
    expect(ok('--', '-s')).toEqual({ ...DEFAULTS, server: host('-s') });
    expect(ok('--', '/bin/date')).toEqual({ ...DEFAULTS, server: { kind: 'exec', argv: ['/bin/date'] } });
    expect(err('--', 'h', '--')).toBe('unexpected argument "--"');
  });

  it('a lone - is an argument, not an option', () => {
    expect(ok('-').server).toEqual(host('-'));
    expect(err('h', '-')).toBe('unexpected argument "-"');
  });

  it('-- after -b still needs a server', () => {
    expect(err('-b', '80', '--')).toBe('option -b needs a server argument');
    expect(ok('-b', '80', '--', '/bin/date').server).toEqual({ kind: 'exec', argv: ['/bin/date'] });
  });
});

describe('parseArgs: unknown options', () => {
  it.each([
    [['-x'], 'unknown option -x'],
    [['-Q'], 'unknown option -Q'],
    [['-d'], 'unknown option -d'],
    [['-sx'], 'unknown option -x'],
    [['-s', '-y', '-Q', 'h'], 'unknown option -Q'],
    [['-é'], 'unknown option -é'],
    [['-😀'], 'unknown option -😀'],
    [['--x'], 'unknown option "--x"'],
    [['--verbose'], 'unknown option "--verbose"'],
    [['--help=1'], 'unknown option "--help=1"'],
    [['---'], 'unknown option "---"'],
    [['-s', '--HELP'], 'unknown option "--HELP"'],
  ])('%j: %s', (argv, message) => {
    expect(err(...argv)).toBe(message);
  });

  it('the first error wins', () => {
    expect(err('-x', '-t', 'abc')).toBe('unknown option -x');
    expect(err('-t', 'abc', '-x')).toBe('option -t needs a number of seconds, not "abc"');
  });
});

describe('parseArgs: --help and --version', () => {
  it('set their flag', () => {
    expect(ok('--help')).toEqual({ ...DEFAULTS, help: true });
    expect(ok('--version')).toEqual({ ...DEFAULTS, version: true });
  });

  it('end parsing: later words are ignored, errors included', () => {
    expect(ok('--help', '-x', 'a', 'b')).toEqual({ ...DEFAULTS, help: true });
    expect(ok('--version', '-t', 'abc')).toEqual({ ...DEFAULTS, version: true });
    expect(ok('--help', '--version')).toEqual({ ...DEFAULTS, help: true });
  });

  it('skip the check that -b has a server', () => {
    expect(ok('-b', '80', '--help')).toEqual({
      ...DEFAULTS,
      bind: { iface: null, port: 80 },
      standalone: true,
      help: true,
    });
  });

  it('errors before them are reported', () => {
    expect(err('-x', '--help')).toBe('unknown option -x');
  });

  it('are an argument after --, or as an option value', () => {
    expect(ok('--', '--help')).toEqual({ ...DEFAULTS, server: host('--help') });
    expect(ok('-l', '--help')).toEqual({ ...DEFAULTS, logname: '--help' });
  });

  it('are not recognised after the server argument', () => {
    expect(err('h', '--help')).toBe('unexpected argument "--help"');
  });
});

describe('parseArgs: -S, -Z and --json', () => {
  it('-Z counts, -S takes an absolute path or none, --json goes with -Z', () => {
    expect(ok('-Z')).toMatchObject({ status: 1, control: null, json: false });
    expect(ok('-ZZ', '--json', '-S', '/run/x.sock')).toMatchObject({ status: 2, control: '/run/x.sock', json: true });
    expect(ok('-Z', '-Snone')).toMatchObject({ status: 1, control: 'none' });
    expect(err('-S', 'rel.sock', '-Z')).toBe('option -S: the socket must be an absolute path or "none", not "rel.sock"');
    expect(err('--json')).toBe('--json goes with -Z or -ZZ');
    expect(err('-S')).toBe('option -S needs an argument');
  });
});

describe('parseArgs: combined', () => {
  it('a full command line', () => {
    expect(
      ok('-Dy', '-a/bin/acp', '-b', '[::1]:0', '-f', '/tmp/x.conf', '-l', 'tp', '-pp', '/tmp/tp.pid',
        '-t0', '-v', 'P_', '-w', '/tmp/tr', '-zz', './h a b'),
    ).toEqual({
      acp: '/bin/acp',
      bind: { iface: '::1', port: 0 },
      configFile: '/tmp/x.conf',
      logname: 'tp',
      pidfile: '/tmp/tp.pid',
      standalone: true,
      timeoutSec: 0,
      prefix: 'P_',
      writefile: '/tmp/tr',
      clearEnv: true,
      list: 2,
      foreground: true,
      control: null,
      status: 0,
      json: false,
      server: { kind: 'exec', argv: ['./h', 'a', 'b'] },
      help: false,
      version: false,
    });
  });

  it('does not change the argv it is given', () => {
    const argv = Object.freeze(['-pp', 'NAME', '-b', '80', 'h']);
    expect(parseArgs(argv, resolve).ok).toBe(true);
    expect(argv).toEqual(['-pp', 'NAME', '-b', '80', 'h']);
  });

  it('never throws on odd input', () => {
    const words = ['-', '--', '-p', '-b', '0', '', ' ', '-t', 'x', '--help', '/', '.', '[', ']:', '-\u0000', '\uD800'];
    for (const a of words) {
      for (const b of words) {
        for (const c of words) {
          const r = parseArgs([a, b, c], resolve);
          expect(typeof r.ok).toBe('boolean');
        }
      }
    }
  });
});

describe('USAGE, HELP, OPTION_LETTERS', () => {
  it('OPTION_LETTERS lists every option', () => {
    expect(OPTION_LETTERS).toEqual(['a', 'b', 'c', 'D', 'f', 'l', 'p', 's', 'S', 't', 'v', 'w', 'y', 'z', 'Z']);
  });

  it('every listed letter is accepted and every other letter is not', () => {
    for (let code = 0x21; code < 0x7f; code++) {
      const letter = String.fromCharCode(code);
      if (letter === '-') continue;
      const r = parseArgs([`-${letter}`, 'X_', 'h'], resolve);
      if (OPTION_LETTERS.includes(letter)) {
        expect(r.ok || !r.error.startsWith('unknown option')).toBe(true);
      } else {
        expect(r).toEqual({ ok: false, error: `unknown option -${letter}` });
      }
    }
  });

  it('the usage line', () => {
    expect(USAGE).toBe(
      'usage: tcpproxy [-DsyzZ] [-a program] [-b [interface:]port] [-f config] [-l logname] ' +
        '[-p [-p pidfile]] [-S socket] [-t timeout] [-v prefix] [-w writefile] [--json] [server ...]',
    );
    expect(USAGE).not.toContain('\n');
  });

  it('the usage line names every option but the alias -c', () => {
    for (const letter of OPTION_LETTERS) {
      if (letter === 'c') continue;
      if ('DsyzZ'.includes(letter)) expect(USAGE).toContain('[-DsyzZ]');
      else expect(USAGE).toContain(`[-${letter} `);
    }
  });

  it('the help starts with the usage line and has one line per option', () => {
    const lines = HELP.split('\n');
    expect(lines[0]).toBe(USAGE);
    for (const letter of OPTION_LETTERS) {
      expect(lines.filter((l) => l.startsWith(`  -${letter} `) || l === `  -${letter}`)).toHaveLength(1);
    }
    expect(lines.filter((l) => l.startsWith('  --help '))).toHaveLength(1);
    expect(lines.filter((l) => l.startsWith('  --version '))).toHaveLength(1);
  });

  it('help lines fit 80 columns after the usage line', () => {
    for (const line of HELP.split('\n').slice(1)) expect(line.length).toBeLessThanOrEqual(80);
  });
});
