/**
 * Bad input, command line: property-based fuzzing of parseArgs (thousands of
 * argv vectors), ports 0, 65536 and -1 given to -b, and a listen address that
 * does not exist on the machine (exit 1, EADDRNOTAVAIL), through the built CLI.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as fc from 'fast-check';
import type { PortResolver } from '../../src/table/address';
import { MAX_TIMEOUT_SEC, OPTION_LETTERS, parseArgs, USAGE, type CliResult } from '../../src/table/cli';
import { killLaunched, runCli, startProxy } from '../helpers/daemon';
import { freePort } from '../helpers/ports';

const NAMES = new Map([
  ['smtp', 25],
  ['http', 80],
]);
const resolve: PortResolver = (name) => NAMES.get(name) ?? null;

let dir = '';
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcpproxy-fuzz-cli-'));
});
afterEach(() => killLaunched());
afterAll(() => {
  if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
});

// ------------------------------------------------------------------ generators

const letters = [...OPTION_LETTERS, 'x', 'Q', 'é', 'h', 'V'];
const cluster = fc.array(fc.constantFrom(...letters), { minLength: 1, maxLength: 4 }).map((ls) => `-${ls.join('')}`);
const value = fc.oneof(
  fc.integer({ min: -2, max: 70000 }).map(String),
  fc.constantFrom('0', '65535', '65536', '-1', 'smtp', 'nosuch', '127.0.0.1:0', '127.0.0.1:8080', '[::1]:80', '::1', '[::1', 'host:', ':80', ''),
  fc.constantFrom('/bin/cat', './handler a b', '/usr/bin/env X=1 prog', 'mail.example.org:smtp', 'a b', ' ', 'PROXY_', '9X'),
  fc.constantFrom(String(MAX_TIMEOUT_SEC), String(MAX_TIMEOUT_SEC + 1), '1.5', '0x10'),
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 12 }),
);
const argWord = fc.oneof(
  { weight: 4, arbitrary: cluster },
  { weight: 4, arbitrary: value },
  { weight: 1, arbitrary: fc.constantFrom('--', '-', '--help', '--version', '--verbose', '-pp', '-p', '-zz') },
);
const argv = fc.array(argWord, { maxLength: 8 });

function checkShape(r: CliResult): void {
  if (!r.ok) {
    expect(Object.keys(r).sort()).toEqual(['error', 'ok']);
    expect(typeof r.error).toBe('string');
    expect(r.error.trim()).not.toBe('');
    return;
  }
  expect(Object.keys(r).sort()).toEqual(['ok', 'options']);
  const o = r.options;
  expect([0, 1, 2]).toContain(o.list);
  if (o.bind !== null) {
    expect(Number.isInteger(o.bind.port) && o.bind.port >= 0 && o.bind.port <= 65535).toBe(true);
    expect(o.bind.iface === null || net.isIP(o.bind.iface) !== 0).toBe(true);
    expect(o.standalone).toBe(true);
    if (!o.help && !o.version) expect(o.server).not.toBeNull();
  }
  if (o.timeoutSec !== null) expect(Number.isInteger(o.timeoutSec) && o.timeoutSec >= 0 && o.timeoutSec <= MAX_TIMEOUT_SEC).toBe(true);
  if (o.prefix !== null) expect(o.prefix).toMatch(/^[A-Za-z_][A-Za-z0-9_]*$/);
  for (const text of [o.acp, o.configFile, o.logname, o.pidfile, o.writefile]) {
    if (text !== null) expect(text).not.toBe('');
  }
  if (o.server?.kind === 'server') {
    expect(o.server.servers.length).toBeGreaterThan(0);
    for (const { host, port: p } of o.server.servers) {
      expect(p === null || (Number.isInteger(p) && p >= 1 && p <= 65535)).toBe(true);
      expect(host).not.toBe('');
    }
  }
  if (o.server?.kind === 'exec') expect(o.server.argv.length).toBeGreaterThan(0);
}

// ------------------------------------------------------------------ properties

/** Control characters shown as \xNN, for failure messages. */
function visible(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

describe('parseArgs, property-based', () => {
  test('on 5,000 argv vectors: a well-formed result, never an exception, the argv untouched, bounded time', () => {
    let slowest = 0;
    fc.assert(
      fc.property(argv, (words) => {
        const frozen = Object.freeze([...words]);
        const t0 = performance.now();
        const r = parseArgs(frozen, resolve);
        slowest = Math.max(slowest, performance.now() - t0);
        checkShape(r);
        expect(frozen).toEqual(words);
      }),
      { numRuns: 5000, seed: 0x51 },
    );
    expect(slowest).toBeLessThan(200);
  });

  test('2,000 more with random seeds (new cases every run)', () => {
    fc.assert(
      fc.property(argv, (words) => checkShape(parseArgs(words, resolve))),
      { numRuns: 2000 },
    );
  });

  test('the same words give the same result (pure)', () => {
    fc.assert(
      fc.property(argv, (words) => {
        expect(parseArgs(words, resolve)).toEqual(parseArgs(words, resolve));
      }),
      { numRuns: 1000 },
    );
  });

  test('an error message is one line of printable text (no newline, CR or escape sequence from argv)', () => {
    // The message is printed as `tcpproxy: MESSAGE` above the usage line: a
    // newline or an escape sequence in a quoted value would forge or hide lines.
    const control = fc.constantFrom('\n', '\r', '\x1b[2K', '\x07', '\x7f');
    const bad: string[] = [];
    fc.assert(
      fc.property(fc.constantFrom('-t', '-v', '-b', '--', 'x'), control, fc.constantFrom('1', 'A', '80'), (opt, c, v) => {
        const words = opt === 'x' ? [`-${c}`] : opt === '--' ? ['--', `h${c}`] : [opt, `${v}${c}`, 'h'];
        const r = parseArgs(words, resolve);
        // eslint-disable-next-line no-control-regex
        if (!r.ok && /[\x00-\x1f\x7f]/.test(r.error)) bad.push(visible(`${JSON.stringify(words)} → ${r.error}`));
      }),
      { numRuns: 200, seed: 7 },
    );
    expect([...new Set(bad)].slice(0, 6)).toEqual([]);
  });
});

// ------------------------------------------------------------------ ports given to -b

describe('-b with ports 0, 65536 and -1 (built CLI)', () => {
  test.each([
    ['65536', 'option -b: port 65536 is out of range (1-65535)'],
    ['-1', 'option -b: invalid port "-1"'],
    ['127.0.0.1:65536', 'option -b: port 65536 is out of range (1-65535)'],
    ['127.0.0.1:-1', 'option -b: invalid port "-1"'],
    ['[::1]:65536', 'option -b: port 65536 is out of range (1-65535)'],
    ['00', 'option -b: port 00 is out of range (1-65535)'],
  ])('-b %s: exit 2, one line and the usage', async (bind, message) => {
    const r = await runCli(['-b', bind, '127.0.0.1:1']);
    expect(r).toMatchObject({ code: 2, stdout: '', stderr: `tcpproxy: ${message}\n${USAGE}\n` });
  });

  test('-b 0 and -b 127.0.0.1:0: a port the kernel chooses', async () => {
    for (const bind of ['127.0.0.1:0', '0']) {
      const p = await startProxy(['-b', bind, '127.0.0.1:1']);
      expect(p.addresses).toHaveLength(1);
      const a = p.addresses[0];
      expect(a?.host).toBe(bind === '0' ? '*' : '127.0.0.1');
      expect(a?.port).toBeGreaterThan(0);
      expect(a?.port).toBeLessThanOrEqual(65535);
      await p.stop();
    }
  });
});

// ------------------------------------------------------------------ an address the machine does not have

/** An address from the documentation ranges that no interface of this machine has. */
function foreignAddress(family: 4 | 6): string {
  const local = new Set(
    Object.values(os.networkInterfaces())
      .flat()
      .map((i) => i?.address),
  );
  const candidates = family === 4 ? ['192.0.2.1', '198.51.100.1', '203.0.113.1', '192.0.2.254'] : ['2001:db8::1', '2001:db8::2'];
  const found = candidates.find((a) => !local.has(a));
  if (found === undefined) throw new Error(`every candidate address is local: ${candidates.join(', ')}`);
  return found;
}

describe('a listen address that does not exist on the machine', () => {
  test('`interface` in the config with -s: exit 1, the address and EADDRNOTAVAIL named', async () => {
    const addr = foreignAddress(4);
    const port = await freePort();
    const f = path.join(dir, 'foreign.conf');
    fs.writeFileSync(f, `port ${port}\n  interface ${addr}\n  server 127.0.0.1:1\n`, { mode: 0o600 });
    const r = await runCli(['-s', '-f', f]);
    expect(r).toMatchObject({ code: 1, stdout: '', timedOut: false });
    expect(r.stderr).toBe(`tcpproxy: cannot listen on ${addr}:${port}: EADDRNOTAVAIL (no such local address)\n`);
  });

  test('-b ADDR:PORT and -b [V6]:PORT: the same', async () => {
    const port = await freePort();
    const v4 = foreignAddress(4);
    const v6 = foreignAddress(6);
    expect(await runCli(['-b', `${v4}:${port}`, '127.0.0.1:1'])).toMatchObject({
      code: 1,
      stdout: '',
      stderr: `tcpproxy: cannot listen on ${v4}:${port}: EADDRNOTAVAIL (no such local address)\n`,
    });
    expect(await runCli(['-b', `[${v6}]:${port}`, '127.0.0.1:1'])).toMatchObject({
      code: 1,
      stdout: '',
      stderr: `tcpproxy: cannot listen on [${v6}]:${port}: EADDRNOTAVAIL (no such local address)\n`,
    });
  });

  test('one good and one foreign address: nothing stays bound, exit 1', async () => {
    const addr = foreignAddress(4);
    const [good, bad] = [await freePort(), await freePort()];
    const f = path.join(dir, 'half.conf');
    fs.writeFileSync(f, `port ${good}\n  interface 127.0.0.1\n  server 127.0.0.1:1\nport ${bad}\n  interface ${addr}\n  server 127.0.0.1:1\n`, { mode: 0o600 });
    const r = await runCli(['-s', '-f', f]);
    expect(r).toMatchObject({ code: 1, stdout: '' });
    expect(r.stderr).toBe(`tcpproxy: cannot listen on ${addr}:${bad}: EADDRNOTAVAIL (no such local address)\n`);
    // The good port is free again: it can be bound now.
    await new Promise<void>((ok, fail) => {
      const s = net.createServer();
      s.once('error', fail);
      s.listen({ host: '127.0.0.1', port: good, exclusive: true }, () => s.close(() => ok()));
    });
  });
});
