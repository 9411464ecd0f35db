/**
 * Bad input, config file: property-based fuzzing of parseConfig (thousands
 * of generated files mixing valid directives, junk, NULs, CRs, long lines and
 * unicode), then files no parser test can reach on its own (NUL bytes, a 1 MB
 * line, invalid UTF-8, CRLF, a directory, a FIFO) and every directive with a
 * missing, extra or malformed argument, run through the built CLI
 * (`-z -f FILE`) with the exact messages pinned.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as fc from 'fast-check';
import type { PortResolver } from '../../src/table/address';
import { isIP } from 'node:net';
import { accessRules } from '../../src/forward/fast';
import { native } from '../../src/sys/native';
import { checkAccess, formatPrefix, parsePrefix } from '../../src/table/access';
import { DIRECTIVES, parseConfig, type ConfigResult } from '../../src/table/config';
import { normalizeIp } from '../../src/table/address';
import type { Access, Prefix } from '../../src/table/service';
import { formatConfigError } from '../../src/sys/errors';
import { runCli } from '../helpers/daemon';

const FILE = 'fuzz.conf';
const NAMES = new Map([
  ['smtp', 25],
  ['http', 80],
  ['pop3', 110],
]);
const resolve: PortResolver = (name) => NAMES.get(name) ?? null;

let dir = '';
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcpproxy-fuzz-config-'));
});
afterAll(() => {
  if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
});

/** Writes a config file as root wants it (owner-only write), from text or raw bytes. */
function file(name: string, content: string | Buffer): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, content, { mode: 0o600 });
  return f;
}

// ------------------------------------------------------------------ generators

const word = fc.stringMatching(/^[A-Za-z0-9._:/[\]-]{1,12}$/);
const valueFor: Record<string, fc.Arbitrary<string>> = {
  standalone: fc.constantFrom('yes', 'no', 'YES', 'maybe', ''),
  uid: fc.oneof(fc.integer({ min: -1, max: 70000 }).map(String), fc.constantFrom('0', '4294967294', '4294967295', 'root', '')),
  gid: fc.oneof(fc.integer({ min: -1, max: 70000 }).map(String), fc.constantFrom('0', 'wheel', '')),
  port: fc.oneof(fc.integer({ min: -2, max: 70000 }).map(String), fc.constantFrom('smtp', 'http', 'nosuch', '0', '65535', '65536', '')),
  interface: fc.constantFrom('127.0.0.1', '127.0.0.2', '::1', '[::1]', '0.0.0.0', '1.2.3', 'localhost', '::ffff:127.0.0.1', ''),
  server: fc.oneof(
    fc.constantFrom('127.0.0.1', '127.0.0.1:25', '[::1]:80', 'mail.example.org:smtp', 'host:0', 'host:65536', ':25', '[::1', 'a b', 'a b A', '/bin/cat a a', ''),
    word,
    fc.array(word, { minLength: 2, maxLength: 5 }).map((w) => w.join(' ')),
  ),
  exec: fc.constantFrom('/bin/cat', './handler arg', '/usr/bin/env A=1 prog', 'relative', ''),
  acp: fc.constantFrom('/bin/true', '/usr/local/bin/check --strict', ''),
  logname: fc.constantFrom('proxy', 'a b', ''),
  setenv: fc.constantFrom('PROXY_', 'X', '9X', 'A-B', ''),
  timeout: fc.oneof(fc.integer({ min: -1, max: 2147490 }).map(String), fc.constantFrom('soon', '1.5', '')),
  writefile: fc.constantFrom('/var/log/t', 'a b', ''),
  allow: fc.oneof(
    fc.constantFrom('10.0.0.0/8', '127.0.0.7', '::1 2001:db8::/32', '10.1.2.3/8', '::ffff:10.0.0.1', '0.0.0.0/0', '10.0.0.0/33', '/', '1.2.3.4/08', ''),
    fc.array(word, { minLength: 1, maxLength: 4 }).map((w) => w.join(' ')),
  ),
  deny: fc.oneof(fc.constantFrom('10.1.99.0/24', '::/0', '2001:db8::1/32', '[::1]', 'x/8', ''), word),
  maxconn: fc.oneof(fc.integer({ min: -1, max: 1000000002 }).map(String), fc.constantFrom('0', '1000000000', '1000000001', 'many', '1 2', '')),
  'per-source': fc.oneof(fc.integer({ min: -1, max: 10 }).map(String), fc.constantFrom('00', '4', 'x', '')),
  rate: fc.oneof(fc.integer({ min: -1, max: 100 }).map(String), fc.constantFrom('1.5', '1e3', '')),
  'handler-timeout': fc.oneof(fc.integer({ min: -1, max: 2147490 }).map(String), fc.constantFrom('soon', '0', '')),
  keepalive: fc.constantFrom('yes', 'no', 'No', 'on', ''),
  'no-new-privs': fc.constantFrom('yes', 'no', 'YES', 'off', ''),
  'writefile-max': fc.oneof(
    fc.tuple(fc.integer({ min: -1, max: 9999999 }), fc.constantFrom('', 'K', 'm', 'G', 'Q', 'MB')).map(([n, u]) => `${n}${u}`),
    fc.constantFrom('0', '8388607G', '8388608G', '1.5M', ''),
  ),
  'rlimit-as': fc.oneof(fc.tuple(fc.integer({ min: -1, max: 99999 }), fc.constantFrom('', 'k', 'M', 'g', 'T')).map(([n, u]) => `${n}${u}`), fc.constantFrom('K', '')),
  'rlimit-nproc': fc.oneof(fc.integer({ min: -1, max: 1000000002 }).map(String), fc.constantFrom('0', 'many', '')),
  'rlimit-cpu': fc.oneof(fc.integer({ min: -1, max: 100 }).map(String), fc.constantFrom('1.5', '1s', '')),
  'rlimit-nofile': fc.oneof(fc.integer({ min: -1, max: 70000 }).map(String), fc.constantFrom('64K', '')),
  balance: fc.constantFrom('first', 'roundrobin', 'SOURCE', 'random', 'first source', ''),
  'send-proxy': fc.constantFrom('v1', 'v2', 'NONE', 'v3', '2', 'v1 v2', ''),
  'accept-proxy': fc.oneof(fc.constantFrom('', 'none', 'None 10.0.0.0/8', '10.0.0.0/8 ::1', '10.1.2.3/8', 'any'), fc.array(word, { minLength: 1, maxLength: 3 }).map((w) => w.join(' '))),
  source: fc.oneof(fc.constantFrom('127.0.0.9', '::1', '[::1]', '2001:DB8::1', 'localhost', '10.0.0.0/8', '1.2.3.4:5', '1.2.3.4 5.6.7.8', ''), word),
};

/** A directive line: a known name (any case), blanks, a plausible or broken value, maybe a comment. */
const directiveLine = fc
  .tuple(
    fc.constantFrom(...DIRECTIVES),
    fc.boolean(),
    fc.constantFrom(' ', '\t', '  ', ' \t '),
    fc.constantFrom('', '', '  ', '\t'),
    fc.constantFrom('', '', ' # comment', ' #', '#glued'),
  )
  .chain(([name, upper, sep, indent, comment]) =>
    (valueFor[name] ?? word).map((v) => `${indent}${upper ? name.toUpperCase() : name}${v === '' ? '' : sep + v}${comment}`),
  );

/** Junk: any code points (lone surrogates included), NULs, CRs, U+FFFD, long runs, unicode words. */
const junkLine = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ maxLength: 40 }).map((s) => `${s}\0${s}`),
  fc.string({ maxLength: 40 }).map((s) => `port 25\r${s}`),
  fc.constantFrom('\uFFFD', 'port \uFFFD', '\uFEFFport 25', 'sever 127.0.0.1', 'PoRt 25', '#', '   ', '\t', '\r', ''),
  fc.constantFrom(4095, 4096, 4097, 8193).chain((n) => fc.constantFrom('a', ' ', '#', 'é', '😀', '\t').map((c) => c.repeat(n))),
  fc.constantFrom(4096, 5000).map((n) => `port ${'9'.repeat(n)}`),
);

const anyLine = fc.oneof({ weight: 3, arbitrary: directiveLine }, { weight: 1, arbitrary: junkLine });
const lineEnd = fc.constantFrom('\n', '\n', '\n', '\r\n', '\r', '\n\n');

/** A whole file: lines joined by mixed line ends, maybe a BOM, maybe no final newline. */
const configText = fc
  .tuple(fc.array(fc.tuple(anyLine, lineEnd), { maxLength: 30 }), fc.boolean(), fc.boolean())
  .map(([lines, bom, finalNewline]) => {
    const body = lines.map(([l, e]) => l + e).join('');
    const text = finalNewline ? body : body.replace(/(\r\n|\r|\n)$/, '');
    return bom ? `\uFEFF${text}` : text;
  });

/** Lines as parseConfig counts them. */
function lineCount(text: string): number {
  return text.split('\n').length;
}

function checkShape(text: string, r: ConfigResult): void {
  if (r.ok) {
    expect(Object.keys(r).sort()).toEqual(['config', 'ok']);
    expect(r.config.file).toBe(FILE);
    expect(r.config.services.length).toBeGreaterThan(0);
    for (const s of r.config.services) {
      expect(Number.isInteger(s.port) && s.port >= 1 && s.port <= 65535).toBe(true);
      expect(s.timeoutSec >= 0 && s.timeoutSec <= 2147483).toBe(true);
      expect(s.uid === null || (s.uid >= 1 && s.uid <= 4294967294)).toBe(true);
      expect(s.gid === null || (s.gid >= 1 && s.gid <= 4294967294)).toBe(true);
      expect(s.origin.line >= 1 && s.origin.line <= lineCount(text)).toBe(true);
      for (const p of [...s.access.allow, ...s.access.deny]) expect(parsePrefix(formatPrefix(p))).toEqual({ ok: true, value: p });
      for (const n of [s.access.maxconn, s.access.perSource, s.access.rate]) expect(n === null || (Number.isInteger(n) && n >= 1 && n <= 1000000000)).toBe(true);
      const { rlimitNproc, rlimitAs, rlimitCpu, rlimitNofile, noNewPrivs } = s.sandbox;
      for (const n of [rlimitNproc, rlimitCpu, rlimitNofile]) expect(n === null || (Number.isInteger(n) && n >= 1 && n <= 1000000000)).toBe(true);
      for (const n of [rlimitAs, s.bounds.writefileMax]) expect(n === null || (Number.isSafeInteger(n) && n >= 1)).toBe(true);
      expect(Number.isInteger(s.bounds.handlerTimeoutSec) && s.bounds.handlerTimeoutSec >= 0 && s.bounds.handlerTimeoutSec <= 2147483).toBe(true);
      expect([typeof noNewPrivs, typeof s.bounds.keepalive]).toEqual(['boolean', 'boolean']);
      const { sendProxy, acceptProxy, balance, source } = s.proxy;
      expect([null, 1, 2]).toContain(sendProxy);
      expect(['first', 'roundrobin', 'source']).toContain(balance);
      for (const p of acceptProxy ?? []) expect(parsePrefix(formatPrefix(p))).toEqual({ ok: true, value: p });
      if (source !== null) expect(normalizeIp(source)).toBe(source);
      if (s.target.kind === 'server') {
        expect(s.target.servers.length >= 1 && s.target.servers.length <= 64).toBe(true);
        expect(new Set(s.target.servers.map((x) => `${x.host} ${x.port}`)).size).toBe(s.target.servers.length);
      }
    }
    return;
  }
  expect(Object.keys(r).sort()).toEqual(['errors', 'ok', 'programs']);
  expect(r.errors.length).toBeGreaterThan(0);
  let lastProgram = 0;
  for (const p of r.programs) {
    expect(p.line).toBeGreaterThanOrEqual(Math.max(1, lastProgram)); // in file order
    expect(p.line).toBeLessThanOrEqual(lineCount(text));
    lastProgram = p.line;
  }
  let last = 0;
  for (const e of r.errors) {
    expect(Object.keys(e).sort()).toEqual(['file', 'line', 'message']);
    expect(e.file).toBe(FILE);
    expect(Number.isInteger(e.line)).toBe(true);
    expect(e.line).toBeGreaterThanOrEqual(0);
    expect(e.line).toBeLessThanOrEqual(lineCount(text));
    expect(e.line).toBeGreaterThanOrEqual(last); // sorted by line
    last = e.line;
    expect(typeof e.message).toBe('string');
    expect(e.message.trim()).not.toBe('');
  }
}

// ------------------------------------------------------------------ properties

/** Control characters shown as \xNN / \uNNNN, for failure messages. */
function visible(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029]/g, (c) => {
    const n = c.charCodeAt(0);
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

describe('parseConfig, property-based', () => {
  test('on 5,000 generated files: {ok: true, config} or {ok: false, errors} with file, line ≥ 0 and a message each; never throws; bounded time', () => {
    let slowest = 0;
    const started = Date.now();
    fc.assert(
      fc.property(configText, (text) => {
        const t0 = performance.now();
        const r = parseConfig(text, FILE, resolve);
        slowest = Math.max(slowest, performance.now() - t0);
        checkShape(text, r);
      }),
      { numRuns: 5000, seed: 0x7c9 },
    );
    // Every file is at most 30 lines of at most 8,193 characters: linear work.
    expect(slowest).toBeLessThan(500);
    expect(Date.now() - started).toBeLessThan(40000);
  }, 60000);

  test('2,000 more files with random seeds (new cases every run)', () => {
    fc.assert(
      fc.property(configText, (text) => checkShape(text, parseConfig(text, FILE, resolve))),
      { numRuns: 2000 },
    );
  }, 60000);

  test('a generated valid file parses into exactly its services, in file order', () => {
    const block = fc.record({
      target: fc.oneof(
        fc.constantFrom('127.0.0.1', '127.0.0.1:2525', '[::1]:80', 'mail.example.org:smtp'),
        fc.constantFrom('/bin/cat', '/usr/bin/env X=1 prog').map((c) => `exec ${c}`),
      ),
      iface: fc.option(fc.constantFrom('127.0.0.1', '127.0.0.2', '::1'), { nil: null }),
      timeout: fc.option(fc.integer({ min: 0, max: 2147483 }), { nil: null }),
      uid: fc.option(fc.integer({ min: 1, max: 4294967294 }), { nil: null }),
    });
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 65535 }), { minLength: 1, maxLength: 8 }), fc.array(block, { minLength: 8, maxLength: 8 }), fc.constantFrom('\n', '\r\n'), (ports, blocks, eol) => {
        const lines: string[] = [];
        ports.forEach((port, i) => {
          const b = blocks[i];
          if (b === undefined) throw new Error('no block');
          lines.push(`port ${port}`);
          if (b.iface !== null) lines.push(`  interface ${b.iface}`);
          lines.push(b.target.startsWith('exec ') ? `    ${b.target}` : `    server ${b.target}`);
          if (b.timeout !== null) lines.push(`    timeout ${b.timeout}`);
          if (b.uid !== null) lines.push(`    uid ${b.uid}`);
        });
        const r = parseConfig(lines.join(eol) + eol, FILE, resolve);
        if (!r.ok) throw new Error(r.errors.map(formatConfigError).join('\n'));
        expect(r.config.services.map((s) => s.port)).toEqual(ports);
        r.config.services.forEach((s, i) => {
          const b = blocks[i];
          expect(s.iface).toBe(b?.iface === '::1' ? '::1' : (b?.iface ?? null));
          expect(s.target.kind).toBe(b?.target.startsWith('exec ') ? 'exec' : 'server');
          expect(s.timeoutSec).toBe(b?.timeout ?? 60);
          expect(s.uid).toBe(b?.uid ?? null);
        });
      }),
      { numRuns: 1000 },
    );
  });

  test('CRLF line ends give exactly what LF gives (files without a lone CR)', () => {
    fc.assert(
      fc.property(configText, (text) => {
        fc.pre(!text.includes('\r'));
        const lf = parseConfig(text, FILE, resolve);
        const crlf = parseConfig(text.replace(/\n/g, '\r\n'), FILE, resolve);
        expect(crlf).toEqual(lf);
      }),
      { numRuns: 1000 },
    );
  });

  test('every message is one line of printable text (no CR, ESC or other control character from the file)', () => {
    // A value with a CR or an escape sequence, quoted raw into a message, rewrites the
    // operator's terminal line (`invalid port "25<CR>"` prints as `"nvalid port "25`).
    const controls = fc.constantFrom('\r', '\x1b[2K', '\x1b]0;title\x07', '\b', '\x7f', '\x85', '\u2028');
    const line = fc
      .tuple(fc.constantFrom('port 25', 'port 25x', 'server h', 'interface 1.2.3.4', 'timeout 5', 'setenv P', 'logname x', 'bogus', 'uid 1'), controls, fc.constantFrom('', 'x', '9'))
      .map(([head, c, tail]) => `${head}${c}${tail}`);
    const bad: string[] = [];
    fc.assert(
      fc.property(line, (l) => {
        const r = parseConfig(`${l}\nport 1\n  server h\n`, FILE, resolve);
        for (const e of r.ok ? [] : r.errors) {
          // eslint-disable-next-line no-control-regex
          if (/[\x00-\x1f\x7f-\x9f\u2028\u2029]/.test(e.message)) bad.push(visible(formatConfigError(e)));
        }
      }),
      { numRuns: 300, seed: 42 },
    );
    expect([...new Set(bad)].slice(0, 8)).toEqual([]);
  });
});

// ------------------------------------------------------------------ access lists

/** The address as a number of 32 or 128 bits, by a route of its own: isIP, the URL parser, string splitting. */
function refAddress(text: string): { family: 4 | 6; value: bigint } | null {
  if (isIP(text) === 4) return { family: 4, value: text.split('.').reduce((a, p) => (a << 8n) | BigInt(p), 0n) };
  const bare = text.replace(/%.*$/, '');
  if (isIP(bare) !== 6) return null;
  const host = new URL(`http://[${bare}]/`).hostname.slice(1, -1);
  const [head = '', tail] = host.split('::');
  const hs = head === '' ? [] : head.split(':');
  const ts = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? hs : [...hs, ...Array<string>(8 - hs.length - ts.length).fill('0'), ...ts];
  const value = groups.reduce((a, g) => (a << 16n) | BigInt(parseInt(g, 16)), 0n);
  if (value >> 32n === 0xffffn) return { family: 4, value: value & 0xffffffffn };
  return { family: 6, value };
}

/** checkAccess as the spec says it, the slow way: every prefix, the longest match, a deny on a tie. */
function refCheck(access: Access, client: string): string | null {
  const c = refAddress(client);
  let best: { bits: number; deny: string | null } | null = null;
  if (c !== null) {
    const rules = [...access.allow.map((p) => ({ p, deny: null })), ...access.deny.map((p) => ({ p, deny: `deny ${p.address}/${p.bits}` }))];
    for (const { p, deny } of rules) {
      const net = refAddress(p.address);
      if (net === null || net.family !== c.family || p.family !== c.family) continue;
      const shift = BigInt((c.family === 4 ? 32 : 128) - p.bits);
      if (c.value >> shift !== net.value >> shift) continue;
      if (best === null || p.bits > best.bits || (p.bits === best.bits && deny !== null)) best = { bits: p.bits, deny };
    }
  }
  if (best !== null) return best.deny;
  return access.allow.length > 0 ? 'no allow matched' : null;
}

/** Bytes and groups drawn from a few values most of the time, so that prefixes and clients share bits. */
const octet = fc.oneof(fc.constantFrom(0, 1, 10, 127, 128, 192, 255), fc.integer({ min: 0, max: 255 }));
const group = fc.oneof(fc.constantFrom(0, 0, 1, 0xffff, 0x8000, 0xdb8, 0x2001, 0xfe80), fc.integer({ min: 0, max: 0xffff }));
const v4Octets = fc.array(octet, { minLength: 4, maxLength: 4 });
const v6Groups = fc.array(group, { minLength: 8, maxLength: 8 });

/** Groups as text: in full or compressed, any case. */
const v6Text = (groups: number[], style: number): string => {
  const full = groups.map((g) => g.toString(16)).join(':');
  if (style === 0) return full;
  if (style === 1) return full.toUpperCase();
  return normalizeIp(full) ?? full;
};

/** A valid prefix of either family: random bits, host bits cleared. */
const prefixArb: fc.Arbitrary<Prefix> = fc.oneof(
  fc.tuple(v4Octets, fc.integer({ min: 0, max: 32 })).map(([o, bits]): Prefix => {
    const v = o.reduce((a, b) => a * 256 + b, 0);
    const net = bits === 0 ? 0 : Math.floor(v / 2 ** (32 - bits)) * 2 ** (32 - bits);
    return { family: 4, address: [24, 16, 8, 0].map((s) => Math.floor(net / 2 ** s) % 256).join('.'), bits };
  }),
  fc.tuple(v6Groups, fc.integer({ min: 0, max: 128 })).map(([g, bits]): Prefix => {
    const masked = g.map((x, i) => {
      const keep = Math.min(16, Math.max(0, bits - 16 * i));
      return keep === 0 ? 0 : x & (0xffff << (16 - keep)) & 0xffff;
    });
    return { family: 6, address: normalizeIp(masked.map((x) => x.toString(16)).join(':')) ?? '', bits };
  }),
);

/** A client as Node's remoteAddress may give it, plus spellings it does not (full, upper case, mapped in hex). */
const clientArb = fc.oneof(
  v4Octets.map((o) => o.join('.')),
  v4Octets.map((o) => `::ffff:${o.join('.')}`),
  v4Octets.map((o) => `::FFFF:${((o[0] ?? 0) * 256 + (o[1] ?? 0)).toString(16)}:${((o[2] ?? 0) * 256 + (o[3] ?? 0)).toString(16)}`),
  fc.tuple(v6Groups, fc.integer({ min: 0, max: 2 })).map(([g, style]) => v6Text(g, style)),
  fc.constantFrom('', 'garbage', '::', '0.0.0.0', '255.255.255.255', 'fe80::1%eth0', '1::2::3', '10.0.0', '::ffff:1.2.3'),
);

const accessArb: fc.Arbitrary<Access> = fc.record({
  allow: fc.array(prefixArb, { maxLength: 12 }),
  deny: fc.array(prefixArb, { maxLength: 12 }),
  maxconn: fc.constant(null),
  perSource: fc.constant(null),
  rate: fc.constant(null),
});

describe('access lists, property-based', () => {
  test('checkAccess gives what the slow reference gives, for random lists and clients of both families', () => {
    fc.assert(
      fc.property(accessArb, fc.array(clientArb, { minLength: 1, maxLength: 20 }), (access, clients) => {
        for (const c of clients) expect([c, checkAccess(access, c)]).toEqual([c, refCheck(access, c)]);
      }),
      { numRuns: 3000, seed: 0x12 },
    );
  });

  test('the same with random seeds, and on a JSON copy of the lists (what a worker gets)', () => {
    fc.assert(
      fc.property(accessArb, clientArb, (access, c) => {
        const copy = JSON.parse(JSON.stringify(access)) as Access;
        expect(checkAccess(copy, c)).toBe(refCheck(access, c));
      }),
      { numRuns: 2000 },
    );
  });

  test('the native matcher of the fast path (native/access.cc) gives what checkAccess gives', () => {
    const addon = native();
    fc.assert(
      fc.property(accessArb, fc.array(clientArb.filter((c) => isIP(c) !== 0 && !c.includes('%')), { minLength: 1, maxLength: 20 }), (access, clients) => {
        const rules = accessRules(access);
        for (const c of clients) expect([c, addon.accessCheck(rules, c)]).toEqual([c, checkAccess(access, c)]);
      }),
      { numRuns: 2000, seed: 0x13 },
    );
  });

  test('parsePrefix reads any address with any length: the network back, or the host-bits, length or mapped error', () => {
    const text = fc.oneof(
      fc.tuple(v4Octets, fc.integer({ min: 0, max: 40 }), fc.boolean()).map(([o, bits, withLen]) => (withLen ? `${o.join('.')}/${bits}` : o.join('.'))),
      fc.tuple(v6Groups, fc.integer({ min: 0, max: 140 }), fc.boolean(), fc.integer({ min: 0, max: 2 })).map(([g, bits, withLen, style]) =>
        withLen ? `${v6Text(g, style)}/${bits}` : v6Text(g, style),
      ),
    );
    fc.assert(
      fc.property(text, (t) => {
        const r = parsePrefix(t);
        const [addr = '', len] = t.split('/');
        const ref = refAddress(addr);
        if (ref === null) throw new Error(`not an address: ${t}`);
        const isV6Text = addr.includes(':');
        const max = isV6Text ? 128 : 32;
        const bits = len === undefined ? max : Number(len);
        if (bits > max) return expect(r).toEqual({ ok: false, error: `invalid prefix "${t}": the length must be 0-${max}` });
        if (isV6Text && ref.family === 4 && bits >= 96) return expect(r.ok ? '' : r.error).toMatch(/: write an IPv4-mapped address as IPv4 \([0-9.]+(\/[0-9]+)?\)$/);
        const width = BigInt(max);
        const value = isV6Text && ref.family === 4 ? ref.value | (0xffffn << 32n) : ref.value;
        const hostMask = (1n << (width - BigInt(bits))) - 1n;
        if ((value & hostMask) !== 0n) return expect(r.ok ? '' : r.error).toMatch(new RegExp(`^invalid prefix "${t.replace(/[.]/g, '\\.')}": host bits are set \\(the network is [0-9a-f.:]+/${bits}\\)$`));
        expect(r).toEqual({ ok: true, value: { family: isV6Text ? 6 : 4, address: normalizeIp(addr), bits } });
        if (r.ok) expect(parsePrefix(formatPrefix(r.value))).toEqual(r);
      }),
      { numRuns: 5000, seed: 7 },
    );
  });

  test('the network a host-bits error names is itself a valid prefix that holds the address written', () => {
    fc.assert(
      fc.property(fc.oneof(v4Octets.map((o) => o.join('.')), v6Groups.map((g) => v6Text(g, 2))), fc.integer({ min: 0, max: 128 }), (addr, n) => {
        const bits = addr.includes(':') ? n : n % 33;
        const r = parsePrefix(`${addr}/${bits}`);
        const m = r.ok ? null : /host bits are set \(the network is (.*)\)$/.exec(r.error);
        if (m === null) return;
        const net = parsePrefix(m[1] ?? '');
        expect(net.ok).toBe(true);
        if (net.ok) expect(checkAccess({ allow: [], deny: [net.value], maxconn: null, perSource: null, rate: null }, addr)).toBe(`deny ${m[1] ?? ''}`);
      }),
      { numRuns: 2000, seed: 99 },
    );
  });

  test('random allow/deny/limit lines in any scope never throw, and every error is one of the documented messages', () => {
    const token = fc.oneof(prefixArb.map(formatPrefix), clientArb, word, fc.string({ maxLength: 12 }).filter((x) => !/[\s#]/.test(x)));
    const accessLine = fc.oneof(
      fc.tuple(fc.constantFrom('allow', 'deny', 'ALLOW', 'Deny'), fc.array(token, { maxLength: 5 })).map(([d, ws]) => `${d} ${ws.join(' ')}`),
      fc.tuple(fc.constantFrom('maxconn', 'per-source', 'rate'), fc.oneof(fc.integer({ min: -5, max: 1000000005 }).map(String), word)).map(([d, v]) => `${d} ${v}`),
    );
    const file = fc
      .array(fc.tuple(fc.constantFrom('', 'port 7000', 'port 7001', '  interface 127.0.0.2', '  interface ::1', '  server h'), fc.array(accessLine, { maxLength: 3 })), { maxLength: 8 })
      .map((parts) => parts.flatMap(([structural, lines]) => [structural, ...lines]).join('\n'));
    const documented = [
      /^"(allow|deny)" needs at least one prefix$/,
      /^invalid prefix ".*": (expected an IPv4 or IPv6 address with an optional \/length|the length must be 0-(32|128)|host bits are set \(the network is \S+\)|write an IPv4-mapped address as IPv4 \(\S+\))$/,
      /^invalid (maxconn|per-source|rate) ".*": expected a whole number from 1 to 1000000000$/,
      /^"(maxconn|per-source|rate)" (needs an argument|takes one argument)$/,
      /^duplicate "(maxconn|per-source|rate)" \(first on line [0-9]+\)$/,
      /has neither "server" nor "exec"$/,
      /is already defined on line [0-9]+$/,
      /^no service defined/,
      /^"(server|interface)" outside a port block/,
      /^duplicate "server"/,
    ];
    fc.assert(
      fc.property(file, (text) => {
        const r = parseConfig(text, FILE, resolve);
        checkShape(text, r);
        for (const e of r.ok ? [] : r.errors) expect([e.message, documented.some((re) => re.test(e.message))]).toEqual([e.message, true]);
      }),
      { numRuns: 800, seed: 0xacce55 },
    );
  });
});

describe('server groups and the PROXY protocol directives, property-based', () => {
  test('random server groups and balance/send-proxy/accept-proxy/source lines in any scope never throw, and every error is one of the documented messages', () => {
    const host = fc.oneof(fc.constantFrom('a', 'A', 'a:25', 'a:smtp', '127.0.0.1', '[::1]:80', '::1', 'h:0', ':1', 'x!', '[::1', '/bin/cat'), word);
    const proxyLine = fc.oneof(
      fc.array(host, { minLength: 1, maxLength: 70 }).map((ws) => `  server ${ws.join(' ')}`),
      fc.tuple(fc.constantFrom('balance', 'send-proxy', 'source', 'Balance', 'SEND-PROXY'), fc.oneof(valueFor['balance'] ?? word, valueFor['send-proxy'] ?? word, valueFor['source'] ?? word, word)).map(([d, v]) => `${d} ${v}`),
      fc.tuple(fc.constantFrom('accept-proxy', 'Accept-Proxy'), fc.array(fc.oneof(prefixArb.map(formatPrefix), fc.constantFrom('none', 'NONE'), word), { maxLength: 4 })).map(([d, ws]) => `${d} ${ws.join(' ')}`),
    );
    const file = fc
      .array(fc.tuple(fc.constantFrom('', 'port 7000', 'port 7001', '  interface 127.0.0.2', '  interface ::1', '  server h'), fc.array(proxyLine, { maxLength: 3 })), { maxLength: 8 })
      .map((parts) => parts.flatMap(([structural, lines]) => [structural, ...lines]).join('\n'));
    const documented = [
      /^invalid balance ".*": expected first, roundrobin or source$/,
      /^invalid send-proxy ".*": expected v1, v2 or none$/,
      /^invalid source ".*": expected an IP address$/,
      /^"accept-proxy none" takes no other words$/,
      /^invalid prefix ".*": (expected an IPv4 or IPv6 address with an optional \/length|the length must be 0-(32|128)|host bits are set \(the network is \S+\)|write an IPv4-mapped address as IPv4 \(\S+\))$/,
      /^"(balance|send-proxy|source|server)" (needs an argument|takes one argument)$/,
      /^duplicate "(balance|send-proxy|accept-proxy|source|server)" \(first on line [0-9]+\)$/,
      /^server ".*" is listed twice$/,
      /^"server" takes at most 64 servers$/,
      /^invalid server ".*": expected host\[:port\]$/,
      /^invalid server host ".*"$/,
      /^server ".*": (port [0-9]+ is out of range \(1-65535\)|invalid port ".*"|unknown service name ".*"|empty port)$/,
      /has neither "server" nor "exec"$/,
      /has both "exec" \(line [0-9]+\) and "server"$/,
      /is already defined on line [0-9]+$/,
      /^no service defined/,
      /^"(server|interface)" outside a port block/,
    ];
    fc.assert(
      fc.property(file, (text) => {
        const r = parseConfig(text, FILE, resolve);
        checkShape(text, r);
        for (const e of r.ok ? [] : r.errors) expect([e.message, documented.some((re) => re.test(e.message))]).toEqual([e.message, true]);
      }),
      { numRuns: 800, seed: 0x9409 },
    );
  });
});

// ------------------------------------------------------------------ through the CLI

describe('bad files through the built CLI (-z -f FILE): exit 2, exact messages', () => {
  test('NUL bytes: the line is rejected, and what it leaves incomplete is reported', async () => {
    const f = file('nul.conf', 'port 7000\n  server 127.0.0.1\0:25\n');
    const r = await runCli(['-z', '-f', f]);
    expect(r).toMatchObject({ code: 2, stdout: '' });
    expect(r.stderr).toBe(
      `tcpproxy:${f}:1: port 7000 has neither "server" nor "exec"\n` + `tcpproxy:${f}:2: line contains a NUL byte\n` + `tcpproxy:${f}: 2 errors\n`,
    );
  });

  test('a 1 MB line: one error, at once', async () => {
    const f = file('long.conf', `port 7000\n  server 127.0.0.1:25 # ${'x'.repeat(1024 * 1024)}\n`);
    const t0 = Date.now();
    const r = await runCli(['-z', '-f', f]);
    expect(Date.now() - t0).toBeLessThan(8000);
    expect(r).toMatchObject({ code: 2, stdout: '' });
    expect(r.stderr).toBe(
      `tcpproxy:${f}:1: port 7000 has neither "server" nor "exec"\n` +
        `tcpproxy:${f}:2: line is longer than 4096 characters\n` +
        `tcpproxy:${f}: 2 errors\n`,
    );
  });

  test('invalid UTF-8: the line is named', async () => {
    const f = file('latin1.conf', Buffer.concat([Buffer.from('port 7000\n  server 127.0.0.1:25\nlogname caf'), Buffer.from([0xe9]), Buffer.from('\n')]));
    const r = await runCli(['-z', '-f', f]);
    expect(r).toMatchObject({ code: 2, stdout: '' });
    expect(r.stderr).toBe(`tcpproxy:${f}:3: line is not valid UTF-8\ntcpproxy:${f}: 1 error\n`);
  });

  test('CRLF line ends: read like LF (exit 0, the same listing); a stray CR inside a line is an error', async () => {
    const text = 'timeout 30\nport 7000\n  interface 127.0.0.1\n    server 127.0.0.1:25\nport 7001\n  exec /bin/cat\n';
    const lf = await runCli(['-zz', '-f', file('lf.conf', text)]);
    const crlf = await runCli(['-zz', '-f', file('crlf.conf', text.replace(/\n/g, '\r\n'))]);
    expect(lf).toMatchObject({ code: 0, stderr: '' });
    expect(crlf).toMatchObject({ code: 0, stderr: '', stdout: lf.stdout });
    expect(lf.stdout).toBe(
      'port=7000\tinterface=127.0.0.1\tserver=127.0.0.1:25\tuid=-\tgid=-\ttimeout=30\tacp=-\twritefile=-\tprefix=PROXY_\tallow=-\tdeny=-\tmaxconn=-\tper-source=-\trate=-\thandler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=1\n' +
        'port=7001\tinterface=*\texec=/bin/cat\tuid=-\tgid=-\ttimeout=30\tacp=-\twritefile=-\tprefix=PROXY_\tallow=-\tdeny=-\tmaxconn=-\tper-source=-\trate=-\thandler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=1\n',
    );
    const f = file('cr.conf', 'port 7000\r\r\n  server 127.0.0.1:25\r\n');
    const r = await runCli(['-z', '-f', f]);
    expect(r).toMatchObject({ code: 2, stdout: '' });
    // The CR is quoted back (raw today; escaped once messages escape control characters: see the property test above).
    const quoted = (cr: string): string => `tcpproxy:${f}:1: invalid port "7000${cr}"\ntcpproxy:${f}: 1 error\n`;
    expect([quoted('\r'), quoted('\\r'), quoted('\\x0d')]).toContain(r.stderr);
  });

  test('a directory', async () => {
    const d = path.join(dir, 'a-directory.conf');
    fs.mkdirSync(d, { mode: 0o700 });
    const r = await runCli(['-z', '-f', d]);
    expect(r).toMatchObject({ code: 2, stdout: '' });
    expect(r.stderr).toBe(`tcpproxy:${d}: is not a regular file\ntcpproxy:${d}: 1 error\n`);
  });

  test('a FIFO: refused without blocking on it', async () => {
    const f = path.join(dir, 'a-fifo.conf');
    execFileSync('mkfifo', ['-m', '600', f]);
    const t0 = Date.now();
    const r = await runCli(['-z', '-f', f], { timeoutMs: 10000 });
    expect(r.timedOut).toBe(false);
    expect(Date.now() - t0).toBeLessThan(8000);
    expect(r).toMatchObject({ code: 2, stdout: '' });
    expect(r.stderr).toBe(`tcpproxy:${f}: is not a regular file\ntcpproxy:${f}: 1 error\n`);
  });
});

/**
 * Every directive with a missing, an extra and a malformed argument. Each
 * case is a complete file whose only problem is that one line; `at` is the
 * line of the error. Checked through parseConfig and through the CLI.
 */
const DIRECTIVE_CASES: readonly { name: string; text: string; at: number; message: string }[] = [
  { name: 'standalone, missing', text: 'standalone\nport 7000\n server h\n', at: 1, message: '"standalone" needs an argument' },
  { name: 'standalone, extra', text: 'standalone yes no\nport 7000\n server h\n', at: 1, message: '"standalone" takes one argument' },
  { name: 'standalone, malformed', text: 'standalone maybe\nport 7000\n server h\n', at: 1, message: 'standalone must be "yes" or "no", not "maybe"' },
  { name: 'workers, missing', text: 'workers\nport 7000\n server h\n', at: 1, message: '"workers" needs an argument' },
  { name: 'workers, extra', text: 'workers 2 3\nport 7000\n server h\n', at: 1, message: '"workers" takes one argument' },
  { name: 'workers, malformed', text: 'port 7000\n server h\n workers 0\n', at: 3, message: 'workers must be a whole number from 1 to 64 or "auto", not "0"' },
  { name: 'control, missing', text: 'control\nport 7000\n server h\n', at: 1, message: '"control" needs an argument' },
  { name: 'control, extra', text: 'control /a /b\nport 7000\n server h\n', at: 1, message: '"control" takes one argument' },
  { name: 'control, malformed', text: 'control rel\nport 7000\n server h\n', at: 1, message: 'control must be an absolute path or "none", not "rel"' },
  { name: 'metrics, missing', text: 'metrics\nport 7000\n server h\n', at: 1, message: '"metrics" needs an argument' },
  { name: 'metrics, extra', text: 'metrics 1 2\nport 7000\n server h\n', at: 1, message: '"metrics" takes one argument' },
  { name: 'metrics, malformed', text: 'metrics 127.0.0.1:x\nport 7000\n server h\n', at: 1, message: 'metrics: unknown service name "x"' },
  { name: 'uid, missing', text: 'uid\nport 7000\n server h\n', at: 1, message: '"uid" needs an argument' },
  { name: 'uid, extra', text: 'uid 1 2\nport 7000\n server h\n', at: 1, message: '"uid" takes one argument' },
  { name: 'uid, malformed', text: 'uid 1x\nport 7000\n server h\n', at: 1, message: 'invalid uid "1x": expected a number or a user name' },
  { name: 'uid, unknown name', text: 'uid no-such-user-x\nport 7000\n server h\n', at: 1, message: 'unknown user "no-such-user-x" (uid takes a number or a name from /etc/passwd or nsswitch)' },
  { name: 'uid, root by name', text: 'uid root\nport 7000\n server h\n', at: 1, message: 'uid root is uid 0, which is not allowed: tcpproxy never serves requests as root' },
  { name: 'uid, root', text: 'uid 0\nport 7000\n server h\n', at: 1, message: 'uid 0 is not allowed: tcpproxy never serves requests as root' },
  { name: 'uid, (uid_t)-1', text: 'uid 4294967295\nport 7000\n server h\n', at: 1, message: 'uid 4294967295 is out of range (1-4294967294)' },
  { name: 'gid, missing', text: 'port 7000\n gid\n server h\n', at: 2, message: '"gid" needs an argument' },
  { name: 'gid, extra', text: 'port 7000\n gid 1 2\n server h\n', at: 2, message: '"gid" takes one argument' },
  { name: 'gid, malformed', text: 'port 7000\n gid -5\n server h\n', at: 2, message: 'invalid gid "-5": expected a number or a group name' },
  { name: 'port, missing', text: 'port\n', at: 1, message: '"port" needs an argument' },
  { name: 'port, extra', text: 'port 7000 7001\n server h\n', at: 1, message: '"port" takes one argument' },
  { name: 'port, malformed', text: 'port 70x0\n server h\n', at: 1, message: 'invalid port "70x0"' },
  { name: 'port, unknown name', text: 'port nosuchservice\n server h\n', at: 1, message: 'unknown service name "nosuchservice"' },
  { name: 'interface, missing', text: 'port 7000\n interface\n  server h\n', at: 2, message: '"interface" needs an argument' },
  { name: 'interface, extra', text: 'port 7000\n interface 127.0.0.1 127.0.0.2\n  server h\n', at: 2, message: '"interface" takes one argument' },
  { name: 'interface, malformed', text: 'port 7000\n interface localhost\n  server h\n', at: 2, message: 'interface "localhost" is not an IP address' },
  { name: 'server, missing', text: 'port 7000\n server\n', at: 2, message: '"server" needs an argument' },
  { name: 'server, listed twice', text: 'port 7000\n server h 25 H\n', at: 2, message: 'server "H" is listed twice' },
  { name: 'server, too many', text: `port 7000\n server ${Array.from({ length: 65 }, (_, i) => `h${i}`).join(' ')}\n`, at: 2, message: '"server" takes at most 64 servers' },
  { name: 'server, malformed', text: 'port 7000\n server ho$t:25\n', at: 2, message: 'invalid server host "ho$t"' },
  { name: 'server, bad port', text: 'port 7000\n server h:2x5\n', at: 2, message: 'server "h:2x5": invalid port "2x5"' },
  { name: 'exec, missing', text: 'port 7000\n exec\n', at: 2, message: '"exec" needs an argument' },
  { name: 'acp, missing', text: 'port 7000\n acp\n server h\n', at: 2, message: '"acp" needs an argument' },
  { name: 'logname, missing', text: 'logname\nport 7000\n server h\n', at: 1, message: '"logname" needs an argument' },
  { name: 'logname, extra', text: 'logname a b\nport 7000\n server h\n', at: 1, message: '"logname" takes one argument' },
  { name: 'setenv, missing', text: 'setenv\nport 7000\n server h\n', at: 1, message: '"setenv" needs an argument' },
  { name: 'setenv, extra', text: 'setenv A B\nport 7000\n server h\n', at: 1, message: '"setenv" takes one argument' },
  { name: 'setenv, malformed', text: 'setenv 9X\nport 7000\n server h\n', at: 1, message: 'invalid variable prefix "9X"' },
  { name: 'timeout, missing', text: 'timeout\nport 7000\n server h\n', at: 1, message: '"timeout" needs an argument' },
  { name: 'timeout, extra', text: 'timeout 1 2\nport 7000\n server h\n', at: 1, message: '"timeout" takes one argument' },
  { name: 'timeout, malformed', text: 'timeout -1\nport 7000\n server h\n', at: 1, message: 'invalid timeout "-1": expected a number of seconds' },
  { name: 'timeout, too large', text: 'timeout 2147484\nport 7000\n server h\n', at: 1, message: 'invalid timeout "2147484": expected a number of seconds' },
  { name: 'writefile, missing', text: 'writefile\nport 7000\n server h\n', at: 1, message: '"writefile" needs an argument' },
  { name: 'writefile, extra', text: 'writefile a b\nport 7000\n server h\n', at: 1, message: '"writefile" takes one argument' },
  { name: 'allow, missing', text: 'port 7000\n allow\n server h\n', at: 2, message: '"allow" needs at least one prefix' },
  { name: 'allow, malformed', text: 'allow 10.0.0.0/x\nport 7000\n server h\n', at: 1, message: 'invalid prefix "10.0.0.0/x": expected an IPv4 or IPv6 address with an optional /length' },
  { name: 'allow, bad length', text: 'port 7000\n server h\n allow 10.0.0.0/8 ::/129\n', at: 3, message: 'invalid prefix "::/129": the length must be 0-128' },
  { name: 'allow, host bits', text: 'port 7000\n interface 127.0.0.1\n  allow 127.0.0.1/8\n  server h\n', at: 3, message: 'invalid prefix "127.0.0.1/8": host bits are set (the network is 127.0.0.0/8)' },
  { name: 'deny, missing', text: 'deny # nothing\nport 7000\n server h\n', at: 1, message: '"deny" needs at least one prefix' },
  { name: 'deny, malformed', text: 'port 7000\n deny localhost\n server h\n', at: 2, message: 'invalid prefix "localhost": expected an IPv4 or IPv6 address with an optional /length' },
  { name: 'deny, mapped', text: 'port 7000\n deny ::ffff:127.0.0.0/104\n server h\n', at: 2, message: 'invalid prefix "::ffff:127.0.0.0/104": write an IPv4-mapped address as IPv4 (127.0.0.0/8)' },
  { name: 'maxconn, missing', text: 'maxconn\nport 7000\n server h\n', at: 1, message: '"maxconn" needs an argument' },
  { name: 'maxconn, extra', text: 'maxconn 1 2\nport 7000\n server h\n', at: 1, message: '"maxconn" takes one argument' },
  { name: 'maxconn, malformed', text: 'port 7000\n maxconn 0\n server h\n', at: 2, message: 'invalid maxconn "0": expected a whole number from 1 to 1000000000' },
  { name: 'per-source, missing', text: 'port 7000\n per-source\n server h\n', at: 2, message: '"per-source" needs an argument' },
  { name: 'per-source, extra', text: 'port 7000\n per-source 1 2\n server h\n', at: 2, message: '"per-source" takes one argument' },
  { name: 'per-source, malformed', text: 'port 7000\n server h\n per-source 1000000001\n', at: 3, message: 'invalid per-source "1000000001": expected a whole number from 1 to 1000000000' },
  { name: 'rate, missing', text: 'rate\nport 7000\n server h\n', at: 1, message: '"rate" needs an argument' },
  { name: 'rate, extra', text: 'rate 5 s\nport 7000\n server h\n', at: 1, message: '"rate" takes one argument' },
  { name: 'rate, malformed', text: 'rate 2.5\nport 7000\n server h\n', at: 1, message: 'invalid rate "2.5": expected a whole number from 1 to 1000000000' },
  { name: 'handler-timeout, missing', text: 'port 7000\n handler-timeout\n exec /bin/cat\n', at: 2, message: '"handler-timeout" needs an argument' },
  { name: 'handler-timeout, malformed', text: 'handler-timeout 2147484\nport 7000\n exec /bin/cat\n', at: 1, message: 'invalid handler-timeout "2147484": expected a number of seconds' },
  { name: 'keepalive, extra', text: 'keepalive yes please\nport 7000\n server h\n', at: 1, message: '"keepalive" takes one argument' },
  { name: 'keepalive, malformed', text: 'port 7000\n server h\n keepalive on\n', at: 3, message: 'keepalive must be "yes" or "no", not "on"' },
  { name: 'writefile-max, missing', text: 'writefile-max\nport 7000\n server h\n', at: 1, message: '"writefile-max" needs an argument' },
  { name: 'writefile-max, malformed', text: 'port 7000\n writefile-max 10MB\n server h\n', at: 2, message: 'invalid writefile-max "10MB": expected bytes, optionally with K, M or G' },
  { name: 'writefile-max, out of range', text: 'port 7000\n writefile-max 0\n server h\n', at: 2, message: 'writefile-max 0 is out of range (1-9007199254740991 bytes)' },
  { name: 'no-new-privs, extra', text: 'port 7000\n no-new-privs no no\n exec /bin/cat\n', at: 2, message: '"no-new-privs" takes one argument' },
  { name: 'no-new-privs, malformed', text: 'no-new-privs off\nport 7000\n exec /bin/cat\n', at: 1, message: 'no-new-privs must be "yes" or "no", not "off"' },
  { name: 'rlimit-nproc, missing', text: 'port 7000\n exec /bin/cat\n rlimit-nproc\n', at: 3, message: '"rlimit-nproc" needs an argument' },
  { name: 'rlimit-nproc, malformed', text: 'rlimit-nproc 0\nport 7000\n exec /bin/cat\n', at: 1, message: 'invalid rlimit-nproc "0": expected a whole number from 1 to 1000000000' },
  { name: 'rlimit-as, extra', text: 'port 7000\n rlimit-as 1 G\n exec /bin/cat\n', at: 2, message: '"rlimit-as" takes one argument' },
  { name: 'rlimit-as, malformed', text: 'port 7000\n rlimit-as 12Q\n exec /bin/cat\n', at: 2, message: 'invalid rlimit-as "12Q": expected bytes, optionally with K, M or G' },
  { name: 'rlimit-cpu, missing', text: 'rlimit-cpu\nport 7000\n exec /bin/cat\n', at: 1, message: '"rlimit-cpu" needs an argument' },
  { name: 'rlimit-cpu, malformed', text: 'port 7000\n exec /bin/cat\n rlimit-cpu 1s\n', at: 3, message: 'invalid rlimit-cpu "1s": expected a whole number of seconds from 1 to 1000000000' },
  { name: 'rlimit-nofile, extra', text: 'rlimit-nofile 64 128\nport 7000\n exec /bin/cat\n', at: 1, message: '"rlimit-nofile" takes one argument' },
  { name: 'rlimit-nofile, malformed', text: 'port 7000\n rlimit-nofile 64K\n exec /bin/cat\n', at: 2, message: 'invalid rlimit-nofile "64K": expected a whole number from 1 to 1000000000' },
  { name: 'loglevel, missing', text: 'loglevel\nport 7000\n server h\n', at: 1, message: '"loglevel" needs an argument' },
  { name: 'loglevel, extra', text: 'port 7000\n loglevel quiet verbose\n server h\n', at: 2, message: '"loglevel" takes one argument' },
  { name: 'loglevel, malformed', text: 'port 7000\n interface 127.0.0.1\n  loglevel debug\n  server h\n', at: 3, message: 'invalid loglevel "debug": expected quiet, normal or verbose' },
  { name: 'balance, missing', text: 'balance\nport 7000\n server h i\n', at: 1, message: '"balance" needs an argument' },
  { name: 'balance, extra', text: 'port 7000\n server h i\n balance first source\n', at: 3, message: '"balance" takes one argument' },
  { name: 'balance, malformed', text: 'port 7000\n interface 127.0.0.1\n  balance random\n  server h i\n', at: 3, message: 'invalid balance "random": expected first, roundrobin or source' },
  { name: 'send-proxy, missing', text: 'port 7000\n send-proxy\n server h\n', at: 2, message: '"send-proxy" needs an argument' },
  { name: 'send-proxy, extra', text: 'send-proxy v1 v2\nport 7000\n server h\n', at: 1, message: '"send-proxy" takes one argument' },
  { name: 'send-proxy, malformed', text: 'port 7000\n server h\n send-proxy 2\n', at: 3, message: 'invalid send-proxy "2": expected v1, v2 or none' },
  { name: 'accept-proxy, none and more', text: 'port 7000\n accept-proxy none ::1\n server h\n', at: 2, message: '"accept-proxy none" takes no other words' },
  { name: 'accept-proxy, malformed', text: 'accept-proxy 10.0.0.0/8 any\nport 7000\n server h\n', at: 1, message: 'invalid prefix "any": expected an IPv4 or IPv6 address with an optional /length' },
  { name: 'source, missing', text: 'source\nport 7000\n server h\n', at: 1, message: '"source" needs an argument' },
  { name: 'source, extra', text: 'port 7000\n server h\n source ::1 ::2\n', at: 3, message: '"source" takes one argument' },
  { name: 'source, malformed', text: 'port 7000\n source localhost\n server h\n', at: 2, message: 'invalid source "localhost": expected an IP address' },
];

describe('every directive with a missing, extra or malformed argument', () => {
  test('covers every directive', () => {
    const covered = new Set(DIRECTIVE_CASES.map((c) => c.name.split(',')[0]));
    expect([...covered].sort()).toEqual([...DIRECTIVES].sort());
  });

  test.each(DIRECTIVE_CASES)('parseConfig: $name', ({ text, at, message }) => {
    const r = parseConfig(text, FILE, resolve);
    expect(r.ok ? [] : r.errors).toEqual([{ file: FILE, line: at, message }]);
  });

  test('the CLI prints each as `tcpproxy:FILE:LINE: message`, the count, and exits 2', async () => {
    const cases = DIRECTIVE_CASES.map((c, i) => ({ ...c, f: file(`directive-${i}.conf`, c.text) }));
    const results = [];
    // A few at a time: each is a node process.
    for (let i = 0; i < cases.length; i += 6) {
      results.push(...(await Promise.all(cases.slice(i, i + 6).map((c) => runCli(['-z', '-f', c.f], { timeoutMs: 20000 })))));
    }
    const got = results.map((r) => ({ code: r.code, stdout: r.stdout, stderr: r.stderr }));
    const want = cases.map((c) => ({ code: 2, stdout: '', stderr: `tcpproxy:${c.f}:${c.at}: ${c.message}\ntcpproxy:${c.f}: 1 error\n` }));
    expect(got).toEqual(want);
  }, 60000);
});

describe('ports 0, 65536 and -1 in a config file', () => {
  test.each([
    ['port 0', 'port 0\n server h\n', 'tcpproxy:F:1: port 0 is out of range (1-65535)'],
    ['port 65536', 'port 65536\n server h\n', 'tcpproxy:F:1: port 65536 is out of range (1-65535)'],
    ['port -1', 'port -1\n server h\n', 'tcpproxy:F:1: invalid port "-1"'],
    ['server port 0', 'port 7000\n server h:0\n', 'tcpproxy:F:2: server "h:0": port 0 is out of range (1-65535)'],
    ['server port 65536', 'port 7000\n server h:65536\n', 'tcpproxy:F:2: server "h:65536": port 65536 is out of range (1-65535)'],
    ['server port -1', 'port 7000\n server h:-1\n', 'tcpproxy:F:2: server "h:-1": invalid port "-1"'],
  ])('%s, through the CLI', async (_name, text, line) => {
    const f = file(`ports-${_name.replace(/\W+/g, '-')}.conf`, text);
    const r = await runCli(['-z', '-f', f]);
    expect(r).toMatchObject({ code: 2, stdout: '' });
    expect(r.stderr).toBe(`${line.replace('tcpproxy:F:', `tcpproxy:${f}:`)}\ntcpproxy:${f}: 1 error\n`);
  });
});
