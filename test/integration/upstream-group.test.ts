/**
 * The session code's server groups (src/session/upstream.ts), on real
 * loopback sockets: the order each balance gives, failover past a refusing
 * server with its down and up lines, and the source address the upstream
 * sees. The daemon-level cases (both engines, the fast path) are in
 * test/interop.
 */
import * as net from 'node:net';
import { connectGroup, groupOrder, type GroupLog, type UpstreamGroup } from '../../src/session/upstream';
import type { ServerAddress } from '../../src/table/address';
import { freePort } from '../helpers/ports';

const servers = (n: number): ServerAddress[] => Array.from({ length: n }, (_, i) => ({ host: `127.0.0.${i + 2}`, port: 1000 + i }));
let keys = 0;
const group = (n: number, balance: UpstreamGroup['balance'], list = servers(n)): UpstreamGroup => ({
  key: `test-${++keys}`,
  servers: list,
  balance,
  source: null,
  defaultPort: 1,
});

describe('groupOrder', () => {
  test('first: the servers in the order written, every time', () => {
    const g = group(3, 'first');
    expect([groupOrder(g, '10.0.0.1'), groupOrder(g, '10.0.0.2')]).toEqual([
      [0, 1, 2],
      [0, 1, 2],
    ]);
  });

  test('roundrobin: each connection starts one further, the rest in list order', () => {
    const g = group(3, 'roundrobin');
    const firsts = Array.from({ length: 30 }, () => groupOrder(g, '10.0.0.1'));
    expect(firsts.slice(0, 4)).toEqual([
      [0, 1, 2],
      [1, 2, 0],
      [2, 0, 1],
      [0, 1, 2],
    ]);
    const counts = [0, 0, 0];
    for (const o of firsts) counts[o[0] ?? 0] = (counts[o[0] ?? 0] ?? 0) + 1;
    expect(counts).toEqual([10, 10, 10]);
  });

  test('source: one client always starts at the same server, and clients spread over all of them', () => {
    const g = group(4, 'source');
    const firstOf = (c: string): number => groupOrder(g, c)[0] ?? -1;
    expect(firstOf('192.0.2.77')).toBe(firstOf('192.0.2.77'));
    // IPv4 and its IPv4-mapped form are one client.
    expect(firstOf('::ffff:192.0.2.77')).toBe(firstOf('192.0.2.77'));
    const seen = new Set(Array.from({ length: 64 }, (_, i) => firstOf(`10.1.${i}.${i * 3}`)));
    expect([...seen].sort()).toEqual([0, 1, 2, 3]);
  });
});

function recorder(): GroupLog & { readonly lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    attemptFailed: (server, message) => lines.push(`failed ${server}: ${message}`),
    health: (line, down) => lines.push(`${down ? 'down' : 'up'} ${line}`),
  };
}

describe('connectGroup', () => {
  const opened: net.Server[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => new Promise((r) => s.close(r))));
  });

  /** A server that tells each connection's peer address and port, then closes. */
  async function teller(host: string): Promise<number> {
    // A client that closes without reading resets the connection: not this test's subject.
    const s = net.createServer((c) => c.on('error', () => undefined).end(`${c.remoteAddress}:${c.remotePort}`));
    opened.push(s);
    await new Promise<void>((r) => s.listen(0, host, r));
    return (s.address() as net.AddressInfo).port;
  }

  function read(sock: net.Socket): Promise<string> {
    return new Promise((resolve, reject) => {
      let text = '';
      sock.setEncoding('utf8').on('data', (d: string) => (text += d));
      // The upstream socket is half-open capable: end our side too, or the server's close waits for it.
      sock.once('end', () => {
        sock.destroy();
        resolve(text);
      });
      sock.once('error', reject);
      sock.resume();
    });
  }

  test('a refused server is passed over and marked down once; it goes last until it answers again, then "up again"', async () => {
    const refusing = await freePort('127.0.0.1');
    const good = await teller('127.0.0.1');
    const g = group(2, 'first', [
      { host: '127.0.0.1', port: refusing },
      { host: '127.0.0.1', port: good },
    ]);
    const log = recorder();
    const first = await connectGroup(g, '127.0.0.1', log);
    expect(first?.server).toBe(`server 127.0.0.1:${good}`);
    first?.sock.destroy();
    const second = await connectGroup(g, '127.0.0.1', log);
    second?.sock.destroy();
    expect(log.lines).toEqual([
      `failed server 127.0.0.1:${refusing}: connect ECONNREFUSED 127.0.0.1:${refusing}`,
      `down service ${g.key}: server 127.0.0.1:${refusing}: down for 10 s`,
    ]);
    // The down server is tried last now.
    expect(groupOrder(g, '127.0.0.1')).toEqual([1, 0]);
    // It comes back: the next connection that reaches it says so once.
    const back = net.createServer((c) => c.on('error', () => undefined).end('back'));
    opened.push(back);
    await new Promise<void>((r) => back.listen(refusing, '127.0.0.1', r));
    const goodServer = opened[0];
    await new Promise((r) => goodServer?.close(r));
    const third = await connectGroup(g, '127.0.0.1', log);
    expect(third?.server).toBe(`server 127.0.0.1:${refusing}`);
    expect(await read(third?.sock ?? new net.Socket())).toBe('back');
    expect(log.lines.slice(2)).toEqual([
      `failed server 127.0.0.1:${good}: connect ECONNREFUSED 127.0.0.1:${good}`,
      `down service ${g.key}: server 127.0.0.1:${good}: down for 10 s`,
      `up service ${g.key}: server 127.0.0.1:${refusing}: up again`,
    ]);
  });

  test('every server refused: null, each failure told, and a lone server is never marked down', async () => {
    const [a, b] = [await freePort('127.0.0.1'), await freePort('127.0.0.1')];
    const log = recorder();
    const g = group(2, 'first', [
      { host: '127.0.0.1', port: a },
      { host: '127.0.0.1', port: b },
    ]);
    expect(await connectGroup(g, '127.0.0.1', log)).toBeNull();
    expect(log.lines.filter((l) => l.startsWith('failed'))).toEqual([
      `failed server 127.0.0.1:${a}: connect ECONNREFUSED 127.0.0.1:${a}`,
      `failed server 127.0.0.1:${b}: connect ECONNREFUSED 127.0.0.1:${b}`,
    ]);
    const lone = recorder();
    expect(await connectGroup(group(1, 'first', [{ host: '127.0.0.1', port: a }]), '127.0.0.1', lone)).toBeNull();
    expect(lone.lines).toEqual([`failed server 127.0.0.1:${a}: connect ECONNREFUSED 127.0.0.1:${a}`]);
  });

  test('source: the upstream sees the connection come from that address', async () => {
    const port = await teller('127.0.0.1');
    const g = { ...group(1, 'first', [{ host: '127.0.0.1', port }]), source: '127.0.0.9' };
    const up = await connectGroup(g, '127.0.0.1', recorder());
    expect(up).not.toBeNull();
    expect(await read(up?.sock ?? new net.Socket())).toMatch(/^127\.0\.0\.9:[0-9]+$/);
  });
});
