/**
 * What the engine issue adds to the forwarding suite, on both engines:
 * back-pressure against a slow reader (the proxy's memory stays bounded and
 * every byte arrives), fds back to their baseline after 1,000 connections,
 * and the end record naming the path that moved the bytes (splice engine:
 * copy for a small session under splice-auto, splice for a stream).
 */
import * as crypto from 'node:crypto';
import type * as net from 'node:net';
import { Client } from '../helpers/client';
import { assertBuilt, ENGINES, type Proxy, startProxy, waitWorkers } from '../helpers/daemon';
import { descendants, fdTargets, inodeOf, tcpInodes, vmRssKiB } from '../helpers/proc';
import { echoServer, payload, sha256, startServer, StreamHash } from '../helpers/servers';
import { cleanUpAfterEach } from '../helpers/setup';
import { until } from '../helpers/until';

const MiB = 1024 * 1024;
/** Pinned bound on how much the proxy (master + worker) may grow while a slow reader holds back 64 MiB. */
const RSS_GROWTH_LIMIT_KIB = 48 * 1024;

beforeAll(assertBuilt);
cleanUpAfterEach();

function proxyRssKiB(p: Proxy): number {
  return [p.pid, ...descendants(p.pid)].reduce((sum, pid) => sum + vmRssKiB(pid), 0);
}

/** The fds of a process by kind: sockets, pipes, others. */
/**
 * The worker's descriptors: TCP sockets, other sockets (the IPC channel, and
 * the syslog connection, which comes and goes with /dev/log while other test
 * files put a sink there), pipes, the rest.
 */
function fdKinds(pid: number): { sockets: number; unix: number; pipes: number; other: number } {
  const out = { sockets: 0, unix: 0, pipes: 0, other: 0 };
  const tcp = tcpInodes();
  for (const target of fdTargets(pid)) {
    const i = inodeOf(target);
    if (i?.kind === 'socket') {
      if (tcp.has(i.inode)) out.sockets++;
      else out.unix++;
    } else if (i?.kind === 'pipe') out.pipes++;
    else out.other++;
  }
  return out;
}

async function workerPid(p: Proxy): Promise<number> {
  const uid = process.getuid?.() === 0 ? 65535 : (process.getuid?.() ?? 0);
  const gid = process.getuid?.() === 0 ? 65534 : (process.getgid?.() ?? 0);
  const [w] = await waitWorkers(p.stderr, uid, gid);
  if (!w) throw new Error('no worker');
  return w.pid;
}

describe.each(ENGINES)('%s engine', (engine) => {
  const env = { ...process.env, TCPPROXY_ENGINE: engine };

  it('holds back a 64 MiB push to a slow reader with bounded memory, then delivers every byte', async () => {
    const sent = payload(64 * MiB, `slow-${engine}`);
    let upstreamSock: net.Socket | null = null;
    const hash = new StreamHash();
    let ended = false;
    const upstream = await startServer((s) => {
      upstreamSock = s;
      s.pause();
      s.on('end', () => {
        ended = true;
        s.end();
      });
    });
    const proxy = await startProxy(['-b', '127.0.0.1:0', `127.0.0.1:${upstream.port}`], env);
    const [addr] = proxy.addresses;
    await workerPid(proxy);
    const c = await Client.connect('127.0.0.1', addr?.port ?? 0, { keep: false });
    await until(() => upstreamSock !== null, 'the upstream connection');
    const before = proxyRssKiB(proxy);
    c.socket.end(sent);
    // Slow phase: 1 KiB every 10 ms for 3 s; the proxy must not buffer the rest.
    let peak = before;
    const sock = upstreamSock as unknown as net.Socket;
    const slowUntil = Date.now() + 3000;
    while (Date.now() < slowUntil) {
      const chunk = sock.read(1024) as Buffer | null;
      if (chunk) hash.update(chunk);
      peak = Math.max(peak, proxyRssKiB(proxy));
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(hash.bytes).toBeLessThan(sent.length / 4);
    expect(peak - before).toBeLessThan(RSS_GROWTH_LIMIT_KIB);
    // Fast phase: everything arrives, intact.
    sock.on('data', (chunk: Buffer) => hash.update(chunk));
    sock.resume();
    await until(() => ended, 'the upstream to see the whole upload and EOF', 60000);
    expect(hash.digest()).toEqual({ bytes: sent.length, sha256: sha256(sent) });
  }, 120000);

  it('is back to its baseline of sockets after 1,000 connections, and pipes stay within the pool', async () => {
    const upstream = await echoServer();
    const proxy = await startProxy(['-b', '127.0.0.1:0', `127.0.0.1:${upstream.port}`], env);
    const [addr] = proxy.addresses;
    const worker = await workerPid(proxy);
    const batch = async (n: number, tag: string): Promise<void> => {
      await Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const data = payload(4096, `${tag}-${i}`);
          const c = await Client.connect('127.0.0.1', addr?.port ?? 0);
          c.socket.end(data);
          await c.waitBytes(data.length);
          await c.waitClosed();
          expect(sha256(c.data())).toBe(sha256(data));
        }),
      );
    };
    await batch(50, 'warm');
    await until(() => fdKinds(worker).sockets === fdKinds(worker).sockets, 'a stable fd table');
    const base = await (async () => {
      let last = -1;
      await until(() => {
        const now = fdKinds(worker).sockets;
        const same = now === last;
        last = now;
        return same;
      }, 'the worker fd count to settle');
      return fdKinds(worker);
    })();
    for (let round = 0; round < 20; round++) await batch(50, `r${round}`);
    await until(() => fdKinds(worker).sockets === base.sockets, () => `worker sockets back to ${base.sockets} (now ${fdKinds(worker).sockets})`);
    const after = fdKinds(worker);
    expect(after.sockets).toBe(base.sockets);
    expect(Math.abs(after.unix - base.unix)).toBeLessThanOrEqual(1);
    expect(after.other).toBe(base.other);
    // Idle pipe pairs kept for reuse: at most the pool's 64 pairs.
    expect(after.pipes).toBeLessThanOrEqual(base.pipes + 2 * 64);
    if (engine === 'js') expect(after.pipes).toBe(base.pipes);
  }, 120000);

  it('says in the end record which path moved the bytes (splice engine: copy for a small session, splice for a stream)', async () => {
    const upstream = await echoServer();
    const proxy = await startProxy(['-b', '127.0.0.1:0', `127.0.0.1:${upstream.port}`], env);
    const [addr] = proxy.addresses;
    const c = await Client.connect('127.0.0.1', addr?.port ?? 0);
    c.socket.end('ping');
    await c.waitBytes(4);
    await until(() => /connection \d+: end: /.test(proxy.stderr()), 'the end line');
    const ends = (): string[] => [...proxy.stderr().matchAll(/^\S+Z tcpproxy: connection \d+: end: (.*)$/gm)].map((m) => m[1] ?? '');
    // splice-auto: four bytes each way never fill a read's buffer, so no pipe moved them.
    const small = engine === 'splice' ? 'copy' : 'js';
    expect(ends()[0]).toMatch(new RegExp(`^client \\S+ on \\S+, server \\S+ from \\S+, 4 bytes up, 4 down, \\d+ ms, eof, ${small}$`));
    const big = crypto.randomBytes(4 * 1024 * 1024);
    const s = await Client.connect('127.0.0.1', addr?.port ?? 0);
    s.socket.write(big);
    await s.waitBytes(big.length);
    s.socket.end();
    await until(() => ends().length === 2, 'the second end line');
    expect(ends()[1]).toMatch(new RegExp(`^client \\S+ on \\S+, server \\S+ from \\S+, ${big.length} bytes up, ${big.length} down, \\d+ ms, eof, ${engine}$`));
  });
});
