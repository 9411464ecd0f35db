/**
 * Hardening, load: 2,000 concurrent connections through one forwarding
 * service (both engines), each sending its own 64 KiB and checking the sha256
 * of the echo it gets back; then the daemon's descriptors return to their
 * baseline and no child of the master or a worker is left a zombie.
 *
 * The echo upstream runs in this process: 2,000 client sockets plus 2,000
 * upstream sockets stay far below RLIMIT_NOFILE (20,000 here). The daemon's
 * worker holds two sockets per session (4,000).
 */
import { createHash } from 'node:crypto';
import * as net from 'node:net';
import { ENGINES, killLaunched, type Proxy, readyWorkers, startProxy } from '../helpers/daemon';
import { backToBase, describeSocket, fdKinds, showKinds, socketInodesOf, zombiesOf } from '../helpers/proc';
import { closeAllServers, echoServer, payload, type Upstream } from '../helpers/servers';
import { until } from '../helpers/until';

const CONNECTIONS = 2000;
const PAYLOAD = 64 * 1024;
/** Connects in progress at a time (the listen backlog is 511): all stay open, this only paces the SYNs. */
const CONNECTING = 256;
/** The native pump keeps up to 64 idle pipe pairs for reuse (native/pump.cc kMaxIdlePipes). */
const PIPE_POOL_FDS = 2 * 64;

const sockets = new Set<net.Socket>();

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets.clear();
  await killLaunched();
  await closeAllServers();
});

// ------------------------------------------------------------------ load

interface RoundResult {
  readonly ok: number;
  readonly errors: string[];
  readonly ms: number;
}

/**
 * Opens `n` connections to the proxy (paced, all kept open), waits until the
 * upstream has accepted every one of them (n sessions live at once), then
 * each sends its own PAYLOAD bytes and its FIN, and checks that the echo it
 * reads up to the proxy's FIN has the same length and sha256.
 */
async function round(port: number, upstream: Upstream, n: number, tag: string, timeoutMs: number): Promise<RoundResult> {
  const started = Date.now();
  const acceptedBefore = upstream.sockets.length;
  const errors: string[] = [];
  const conns: { sock: net.Socket; closed: Promise<void>; send: () => void }[] = [];
  let ok = 0;

  /** Resolves once connected, or once the connect has failed. */
  const open = (i: number): Promise<void> =>
    new Promise((settled) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      sockets.add(sock);
      const want = createHash('sha256');
      const got = createHash('sha256');
      let received = 0;
      let ended = false;
      let error: string | null = null;
      sock.on('data', (chunk: Buffer) => {
        got.update(chunk);
        received += chunk.length;
      });
      sock.on('end', () => (ended = true));
      sock.on('error', (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message));
      sock.once('connect', () => settled());
      const closed = new Promise<void>((resolve) =>
        sock.once('close', () => {
          sockets.delete(sock);
          const wantHex = want.digest('hex');
          const gotHex = got.digest('hex');
          if (error === null && ended && received === PAYLOAD && gotHex === wantHex) ok++;
          else errors.push(`connection ${i}: ${error ?? (ended ? 'eof' : 'closed')} after ${received} bytes, sha256 ${gotHex === wantHex ? 'equal' : 'differs'}`);
          settled();
          resolve();
        }),
      );
      conns[i] = {
        sock,
        closed,
        send: () => {
          const data = payload(PAYLOAD, `${tag}-${i}`);
          want.update(data);
          sock.end(data);
        },
      };
    });

  // Paced connects: at most CONNECTING SYNs outstanding.
  const pending = new Set<Promise<void>>();
  for (let i = 0; i < n; i++) {
    const p = open(i).then(() => {
      pending.delete(p);
    });
    pending.add(p);
    if (pending.size >= CONNECTING) await Promise.race(pending);
  }
  await Promise.all(pending);
  const deadline = started + timeoutMs;
  await until(
    () => upstream.sockets.length - acceptedBefore >= n || errors.length > 0,
    () => `${n} upstream connections (have ${upstream.sockets.length - acceptedBefore}, errors ${errors.length})`,
    Math.max(1000, deadline - Date.now()),
  );
  // n sessions are live at the same time: now every one transfers.
  for (const c of conns) if (!c.sock.destroyed) c.send();
  await until(
    () => ok + errors.length >= n,
    () => `${n} connections to finish (ok ${ok}, errors ${errors.length}: ${errors.slice(0, 5).join('; ')})`,
    Math.max(1000, deadline - Date.now()),
  );
  return { ok, errors, ms: Date.now() - started };
}

function workerPids(p: Proxy): number[] {
  return readyWorkers(p.stderr()).map((w) => w.pid);
}

describe.each(ENGINES)('load (%s engine)', (engine) => {
  test(
    `${CONNECTIONS} concurrent connections × 64 KiB echo, every sha256 checked; fds back to baseline, no zombies`,
    async () => {
      const upstream = await echoServer();
      // No control socket: its clients (other tests' daemons probing the default path) would be descriptors of the master too.
      const p = await startProxy(['-S', 'none', '-b', '127.0.0.1:0', `127.0.0.1:${upstream.port}`], { TCPPROXY_ENGINE: engine });
      const port = p.addresses[0]?.port ?? 0;
      await until(() => workerPids(p).length === 1, () => `the worker's ready line; stderr:\n${p.stderr()}`);
      const [worker] = workerPids(p) as [number];

      // Warm-up: a smaller concurrent round makes each process open whatever
      // it opens once (libuv's threads, the pump's first pipes), so the
      // baseline is the daemon's steady state.
      const warm = await round(port, upstream, 100, `${engine}-warm`, 30000);
      expect(warm.errors).toEqual([]);
      const idle = (): boolean => upstream.sockets.every((s) => s.destroyed);
      await until(idle, 'the upstream connections of the warm-up to close', 10000);
      const workerSocketsBase = socketInodesOf(worker);
      let masterBase = fdKinds(p.pid);
      let workerBase = fdKinds(worker);
      // The counts must settle (the last sessions of the warm-up may be closing).
      await until(
        () => {
          const [m, w] = [fdKinds(p.pid), fdKinds(worker)];
          // Only the listening socket is TCP, in the master (which holds it) and in the worker (which accepts on it).
          const same = showKinds(m) === showKinds(masterBase) && showKinds(w) === showKinds(workerBase) && m.get('tcp') === 1 && w.get('tcp') === 1;
          masterBase = m;
          workerBase = w;
          return same;
        },
        () => `the fd counts to settle after the warm-up: master ${showKinds(fdKinds(p.pid))}, worker ${showKinds(fdKinds(worker))}`,
        10000,
      );

      const r = await round(port, upstream, CONNECTIONS, engine, 90000);
      // eslint-disable-next-line no-console
      console.log(`load ${engine}: ${CONNECTIONS} connections × ${PAYLOAD} B echoed in ${r.ms} ms`);
      expect(r.errors.slice(0, 20)).toEqual([]);
      expect(r.ok).toBe(CONNECTIONS);
      expect(upstream.errors.map((e) => e.message)).toEqual([]);
      await until(idle, 'every upstream connection to close', 10000);

      // Descriptors: the master exactly as before; the worker exactly as
      // before except for pipes, of which the pump pool may keep up to 64
      // idle pairs more than at the baseline.
      const settled = (): boolean =>
        backToBase(masterBase, fdKinds(p.pid), 0) && backToBase(workerBase, fdKinds(worker), engine === 'splice' ? PIPE_POOL_FDS : 0);
      try {
        await until(settled, 'the master and worker fds to return to the baseline', 15000);
      } catch (e) {
        throw new Error(
          `${(e as Error).message}\nmaster: baseline ${showKinds(masterBase)}, now ${showKinds(fdKinds(p.pid))}\n` +
            `worker: baseline ${showKinds(workerBase)}, now ${showKinds(fdKinds(worker))}\n` +
            `worker sockets not there at the baseline:\n${[...socketInodesOf(worker)]
              .filter((i) => !workerSocketsBase.has(i))
              .map(describeSocket)
              .join('\n')}`,
        );
      }
      expect(zombiesOf([p.pid, worker])).toEqual([]);
      // Still the one worker, never restarted; the daemon still running.
      expect(workerPids(p)).toEqual([worker]);
      expect(p.exit()).toBeNull();
      // Every session logged its end record (written after its sockets closed: poll).
      const endLines = (): string[] => p.stderr().match(/^\S+Z tcpproxy: connection \d+: end: .*$/gm) ?? [];
      await until(() => endLines().length >= CONNECTIONS + 100, () => `${CONNECTIONS + 100} end records (have ${endLines().length})`, 20000);
      const ends = endLines();
      expect(ends).toHaveLength(CONNECTIONS + 100);
      const unclean = ends.filter((l) => !new RegExp(`: end: client \\S+ on \\S+, server \\S+ from \\S+, ${PAYLOAD} bytes up, ${PAYLOAD} down, \\d+ ms, eof, (splice|copy|js)$`).test(l));
      expect(unclean.slice(0, 10)).toEqual([]);
      await p.stop();
    },
    180000,
  );
});
