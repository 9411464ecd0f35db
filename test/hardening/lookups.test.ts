/**
 * Hardening, name lookups: the client's name for PROXY_CLIENTNAME can
 * neither starve the worker nor be chosen by the client.
 *
 * - The attack: 50 clients at once whose reverse lookups never answer (a
 *   silent DNS server, in a private network and mount namespace with its
 *   own resolv.conf and hosts file: helpers/lookups-scenario.cjs) → an
 *   upstream host-name lookup of the same worker (getaddrinfo, on the libuv
 *   threadpool) still succeeds within 1 s, and each client gets its address
 *   as its name once the 2 s bound is over.
 * - clientName against a DNS server of the test (helpers/dns): a PTR name
 *   is used only when the name resolves back to the client's address and
 *   consists of host-name characters; /etc/hosts names are taken as they
 *   stand there; a server that never answers costs the bound and no more.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLIENTNAME_TIMEOUT_MS, clientName, hostName } from '../../src/session/clientname';
import { assertBuilt, CLI, runToExit, which } from '../helpers/daemon';
import { dnsServer, ptrName4, ptrName6, type DnsAnswerer, type DnsRecord, type DnsServer } from '../helpers/dns';
import { describeAsRoot, requireRoot } from '../helpers/root';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';

const tmp = useTempDir('tcpproxy-lookups-', 0o755);
const dnsServers: DnsServer[] = [];
cleanUpAfterEach(async () => {
  for (const s of dnsServers.splice(0)) await s.close();
});

const CLIENT4 = '192.0.2.7';
const CLIENT6 = '2001:db8::7';

/** A DNS server of `records` by question (`PTR 7.2.0.192.in-addr.arpa`); anything else NXDOMAIN, or per `otherwise`. */
async function zone(records: Readonly<Record<string, readonly DnsRecord[] | 'silent'>>, otherwise: DnsAnswerer = () => null): Promise<DnsServer> {
  const s = await dnsServer((q) => records[`${q.type} ${q.name}`] ?? otherwise(q));
  dnsServers.push(s);
  return s;
}

let hostsFiles = 0;

/** A hosts file of the test (none of the addresses asked of DNS here are in it). */
function hosts(text = '127.0.0.1 localhost\n'): string {
  const file = path.join(tmp.path, `hosts-${++hostsFiles}`);
  fs.writeFileSync(file, text);
  return file;
}

/** clientName with the test's server and hosts file; how long it took. */
async function timedName(address: string, server: DnsServer, opts: { hostsFile?: string; timeoutMs?: number } = {}): Promise<{ name: string; ms: number }> {
  const t0 = Date.now();
  const name = await clientName(address, {
    servers: [server.address],
    hostsFile: opts.hostsFile ?? hosts(),
    timeoutMs: opts.timeoutMs ?? CLIENTNAME_TIMEOUT_MS,
  });
  return { name, ms: Date.now() - t0 };
}

describe('hostName: host-name characters only', () => {
  test.each([
    ['Host-7.Example.ORG.', 'host-7.example.org'],
    ['a', 'a'],
    ['evil$(id).example.org', null],
    ['two words.example.org', null],
    ['line\nbreak.example.org', null],
    ['back\\slash.example.org', null],
    ['under_score.example.org', null],
    ['192.0.2.99', null],
    ['::1', null],
    ['', null],
    [`${'a'.repeat(254)}`, null],
    // Labels: letters, digits and inner hyphens, 1 to 63 of them.
    ['-rf.evil.example', null],
    ['-', null],
    ['a..b', null],
    ['.example.org', null],
    ['host-.example.org', null],
    ['host.-example.org', null],
    ['.', null],
    ['x-1.y--2.example', 'x-1.y--2.example'],
    ['7.example', '7.example'],
    [`${'a'.repeat(63)}.example`, `${'a'.repeat(63)}.example`],
    [`${'a'.repeat(64)}.example`, null],
    [`${Array.from({ length: 4 }, () => 'a'.repeat(62)).join('.')}.a`, `${Array.from({ length: 4 }, () => 'a'.repeat(62)).join('.')}.a`],
    [`${Array.from({ length: 4 }, () => 'a'.repeat(62)).join('.')}.ab`, null],
  ])('%j → %j', (text, expected) => {
    expect(hostName(text)).toBe(expected);
  });
});

describe('clientName: forward-confirmed, within the bound', () => {
  test('a PTR name that resolves back to the client: the name, in lower case, asked once each way', async () => {
    const s = await zone({
      [`PTR ${ptrName4(CLIENT4)}`]: [{ type: 'PTR', name: 'Host-7.Example.ORG' }],
      'A host-7.example.org': [
        { type: 'A', address: '198.51.100.1' },
        { type: 'A', address: CLIENT4 },
      ],
    });
    expect((await timedName(CLIENT4, s)).name).toBe('host-7.example.org');
    expect(s.questions).toEqual([
      { type: 'PTR', name: ptrName4(CLIENT4) },
      { type: 'A', name: 'host-7.example.org' },
    ]);
  });

  test('IPv6: the name is confirmed with AAAA, never A', async () => {
    const s = await zone({
      [`PTR ${ptrName6(CLIENT6)}`]: [{ type: 'PTR', name: 'v6host.example.org' }],
      'AAAA v6host.example.org': [{ type: 'AAAA', address: '2001:db8:0:0:0:0:0:7' }],
    });
    expect((await timedName(CLIENT6, s)).name).toBe('v6host.example.org');
    expect(s.questions.map((q) => q.type)).toEqual(['PTR', 'AAAA']);
  });

  test('a client that names itself after another host (its name resolves elsewhere): the address', async () => {
    const s = await zone({
      [`PTR ${ptrName4(CLIENT4)}`]: [{ type: 'PTR', name: 'trusted.example.org' }],
      'A trusted.example.org': [{ type: 'A', address: '198.51.100.1' }],
    });
    expect((await timedName(CLIENT4, s)).name).toBe(CLIENT4);
  });

  test('a PTR name that does not resolve at all: the address', async () => {
    const s = await zone({ [`PTR ${ptrName4(CLIENT4)}`]: [{ type: 'PTR', name: 'nowhere.example.org' }] });
    expect((await timedName(CLIENT4, s)).name).toBe(CLIENT4);
    expect(s.questions).toEqual([
      { type: 'PTR', name: ptrName4(CLIENT4) },
      { type: 'A', name: 'nowhere.example.org' },
    ]);
  });

  test('no PTR record: the address', async () => {
    const s = await zone({});
    expect((await timedName(CLIENT4, s)).name).toBe(CLIENT4);
  });

  // The forward zone confirms any name here: only the character check can refuse.
  const confirmsAll: DnsAnswerer = (q) => (q.type === 'A' ? [{ type: 'A', address: CLIENT4 }] : null);

  test.each([['evil$(id).example.org'], ['a;reboot.example.org'], ['192.0.2.99'], ['under_score.example.org'], ['-rf.evil.example'], ['-'], ['trailing-.example.org']])(
    'a PTR name %j that is not a host name, even one that resolves back: the address, not asked forward',
    async (ptr) => {
      const s = await zone({ [`PTR ${ptrName4(CLIENT4)}`]: [{ type: 'PTR', name: ptr }] }, confirmsAll);
      expect((await timedName(CLIENT4, s)).name).toBe(CLIENT4);
      expect(s.questions).toEqual([{ type: 'PTR', name: ptrName4(CLIENT4) }]);
    },
  );

  test('several PTR names: the first that is a host name, confirmed', async () => {
    const s = await zone(
      {
        [`PTR ${ptrName4(CLIENT4)}`]: [
          { type: 'PTR', name: 'bad name.example.org' },
          { type: 'PTR', name: 'good.example.org' },
        ],
      },
      confirmsAll,
    );
    expect((await timedName(CLIENT4, s)).name).toBe('good.example.org');
  });

  test('a reverse zone that never answers: the address, once the bound is over, after one question', async () => {
    const s = await zone({ [`PTR ${ptrName4(CLIENT4)}`]: 'silent' });
    const { name, ms } = await timedName(CLIENT4, s, { timeoutMs: 500 });
    expect(name).toBe(CLIENT4);
    expect(ms).toBeGreaterThanOrEqual(490);
    expect(ms).toBeLessThan(1500);
    expect(s.questions).toEqual([{ type: 'PTR', name: ptrName4(CLIENT4) }]);
  });

  test('a forward zone that never answers: the address, within the same bound', async () => {
    const s = await zone({
      [`PTR ${ptrName4(CLIENT4)}`]: [{ type: 'PTR', name: 'slow.example.org' }],
      'A slow.example.org': 'silent',
    });
    const { name, ms } = await timedName(CLIENT4, s, { timeoutMs: 500 });
    expect(name).toBe(CLIENT4);
    expect(ms).toBeGreaterThanOrEqual(490);
    expect(ms).toBeLessThan(1500);
  });

  test('an address in the hosts file: its first name there, in lower case, without asking DNS', async () => {
    const s = await zone({}, () => 'silent');
    const file = hosts(`# test\n198.51.100.9 other\n${CLIENT4}   Gate.Example  gate   # the gateway\n${CLIENT4} later\n2001:db8:0::7 six.example\n`);
    expect((await timedName(CLIENT4, s, { hostsFile: file })).name).toBe('gate.example');
    expect((await timedName(CLIENT6, s, { hostsFile: file })).name).toBe('six.example');
    expect(s.questions).toEqual([]);
  });

  test.each([['we!rd'], ['-rf.example'], ['a..b']])('a hosts-file name %j that is not a host name: the address', async (listed) => {
    const s = await zone({}, () => 'silent');
    const file = hosts(`${CLIENT4} ${listed}\n`);
    expect((await timedName(CLIENT4, s, { hostsFile: file })).name).toBe(CLIENT4);
    expect(s.questions).toEqual([]);
  });

  test('the system: 127.0.0.1 is named by /etc/hosts, as getnameinfo named it', async () => {
    const listed = fs
      .readFileSync('/etc/hosts', 'utf8')
      .split('\n')
      .map((l) => (l.split('#')[0] ?? '').trim().split(/\s+/))
      .find((f) => f[0] === '127.0.0.1');
    expect(await clientName('127.0.0.1')).toBe(listed?.[1]?.toLowerCase() ?? '127.0.0.1');
  });
});

describeAsRoot('the attack: 50 clients whose reverse lookups never answer (private network and mount namespace)', () => {
  const SCENARIO = path.join(__dirname, 'helpers', 'lookups-scenario.cjs');
  const CLIENTS = 50;

  beforeAll(() => {
    requireRoot();
    assertBuilt();
  });

  interface Outcome {
    readonly failure?: string;
    readonly queries: number;
    readonly upstream: { readonly ms: number | null; readonly data: string; readonly error: string | null } | null;
    readonly exec: { readonly closed: number; readonly names: Record<string, number>; readonly maxEndMs: number } | null;
    readonly stderr: string;
  }

  test('an upstream host-name lookup of the same worker still succeeds within 1 s; every client gets its address after the bound', async () => {
    fs.writeFileSync(path.join(tmp.path, 'resolv.conf'), 'nameserver 127.0.0.53\n', { mode: 0o644 });
    // No line for 127.0.0.1: the clients' names are asked of the silent server.
    fs.writeFileSync(path.join(tmp.path, 'hosts'), '127.0.0.2 upstream.tcpproxy.test\n', { mode: 0o644 });
    const setup = [
      `${which('ip')} link set lo up`,
      `${which('mount')} --bind "$0/resolv.conf" /etc/resolv.conf`,
      `${which('mount')} --bind "$0/hosts" /etc/hosts`,
      'exec "$@"',
    ].join(' && ');
    const r = await runToExit(
      [which('unshare'), '--net', '--mount', '--propagation', 'private', '--', '/bin/sh', '-c', setup, tmp.path, process.execPath, SCENARIO, CLI, tmp.path],
      { timeoutMs: 60000 },
    );
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    const out = JSON.parse(r.stdout) as Outcome;
    const summary = { ...out, stderr: undefined };
    const why = `scenario: ${JSON.stringify(summary)}\n--- tcpproxy ---\n${out.stderr}`;
    expect({ failure: out.failure, why: out.failure === undefined ? '' : why }).toEqual({ failure: undefined, why: '' });
    // Every client's lookup reached the silent server, each with one question (one try).
    expect({ queries: out.queries, why }).toEqual({ queries: CLIENTS, why });
    expect({ data: out.upstream?.data, error: out.upstream?.error }).toEqual({ data: 'upstream here\n', error: null });
    expect({ ms: out.upstream?.ms, why }).toEqual({ ms: expect.any(Number) as unknown, why });
    expect(out.upstream?.ms).toBeLessThan(1000);
    expect(out.exec?.closed).toBe(CLIENTS);
    expect(out.exec?.names).toEqual({ '127.0.0.1': CLIENTS });
    expect(out.exec?.maxEndMs).toBeGreaterThanOrEqual(CLIENTNAME_TIMEOUT_MS);
    expect(out.exec?.maxEndMs).toBeLessThan(CLIENTNAME_TIMEOUT_MS + 3000);
    const ends = out.stderr.split('\n').filter((l) => /^\S+Z tcpproxy: connection \d+: end: handler \/usr\/bin\/env pid \d+ exit 0, \d+ ms$/.test(l));
    expect(ends).toHaveLength(CLIENTS);
  });
});
