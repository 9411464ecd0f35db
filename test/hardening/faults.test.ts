/**
 * Hardening, faults: what the daemon does when something around it fails.
 * An upstream or a client that dies mid-transfer (the reset travels on), an
 * upstream that never answers (the idle timeout), a name that does not
 * resolve, a worker killed under load, a connect flood, running out of file
 * descriptors, handlers that never exit or exit at once, an ACP that hangs.
 * After each, the daemon still serves.
 *
 * Runs as root (as here and in CI): workers then run as unprivileged ids.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client, destroyAllClients } from '../helpers/client';
import { ENGINES, killLaunched, type Proxy, readyWorkers, startDaemon, startProxy, waitLog, waitWorkers } from '../helpers/daemon';
import { killTree } from '../helpers/kill';
import { freePort, portOf } from '../helpers/ports';
import { writeConfig } from '../helpers/fixtures';
import { allStats, procAddress, procArgv, readStat, tcpFdCount, tcpSockets, zombiesOf } from '../helpers/proc';
import { closeAllServers, echoServer, payload, startServer, StreamHash } from '../helpers/servers';
import { until } from '../helpers/until';

const KiB = 1024;
let tmp = '';
/** Pids this file started outside the helpers (prlimit'ed daemons, handler children to kill): SIGKILLed after each test. */
const started = new Set<number>();
const rawSockets = new Set<net.Socket>();

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tcpproxy-faults-'));
});

afterEach(async () => {
  for (const s of rawSockets) s.destroy();
  rawSockets.clear();
  destroyAllClients();
  await killLaunched();
  for (const pid of started) killTree(pid);
  started.clear();
  await closeAllServers();
});

afterAll(() => {
  if (tmp !== '') fs.rmSync(tmp, { recursive: true, force: true });
});

// ------------------------------------------------------------------ helpers

/** One echo round trip through `port`: the daemon answers. */
async function answers(port: number, text = 'still there\n'): Promise<void> {
  const c = await Client.connect('127.0.0.1', port);
  c.socket.write(text);
  await c.waitBytes(Buffer.byteLength(text), 10000);
  expect(c.data().toString()).toBe(text);
  c.socket.end();
  await c.waitClosed(10000);
  expect({ ended: c.ended, error: c.error?.code ?? null }).toEqual({ ended: true, error: null });
}

const TCP_STATES: Readonly<Record<number, string>> = { 1: 'ESTABLISHED', 6: 'TIME_WAIT', 7: 'CLOSE', 8: 'CLOSE_WAIT', 9: 'LAST_ACK' };

/** The kernel's state of the IPv4 TCP socket from local port `local` to remote port `remote` on 127.0.0.1, or null when there is none. */
function tcpStateOf(local: number, remote: number): string | null {
  const [l, r] = [procAddress('127.0.0.1', local), procAddress('127.0.0.1', remote)];
  const s = tcpSockets().find((t) => t.local === l && t.remote === r);
  return s === undefined ? null : (TCP_STATES[s.state] ?? `state ${s.state}`);
}

/** Live (non-zombie) children of `ppid` whose argv is exactly `argv`. */
function childrenRunning(ppid: number, argv: readonly string[]): number[] {
  return allStats()
    .filter((st) => st.ppid === ppid && st.state !== 'Z')
    .map((st) => st.pid)
    .filter((pid) => {
      try {
        return procArgv(pid).join('\0') === argv.join('\0');
      } catch {
        return false; // gone
      }
    });
}

function workerOf(p: Proxy): number {
  const w = readyWorkers(p.stderr());
  if (w.length !== 1 || w[0] === undefined) throw new Error(`expected one worker, have ${JSON.stringify(w)}`);
  return w[0].pid;
}

/**
 * A client that keeps a stream going: writes a chunk, waits for its echo,
 * writes the next, until told to stop or the connection ends. Everything it
 * sent and received is hashed.
 */
class Streamer {
  readonly sent = new StreamHash();
  readonly got = new StreamHash();
  error: string | null = null;
  ended = false;
  closedAt: number | null = null;
  private stopping = false;
  private wake: (() => void) | null = null;
  readonly done: Promise<void>;
  readonly sock: net.Socket;
  private readonly tag: string;
  private readonly chunk: number;

  constructor(sock: net.Socket, tag: string, chunk = 16 * KiB) {
    this.sock = sock;
    this.tag = tag;
    this.chunk = chunk;
    rawSockets.add(sock);
    sock.on('data', (d: Buffer) => {
      this.got.update(d);
      this.poke();
    });
    sock.on('end', () => {
      this.ended = true;
      this.poke();
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      this.error ??= e.code ?? e.message;
    });
    sock.on('close', () => {
      this.closedAt = Date.now();
      rawSockets.delete(sock);
      this.poke();
    });
    this.done = this.run();
  }

  static open(port: number, tag: string): Promise<Streamer> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      sock.once('error', reject);
      sock.once('connect', () => {
        sock.off('error', reject);
        resolve(new Streamer(sock, tag));
      });
    });
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async run(): Promise<void> {
    for (let n = 0; !this.stopping && this.closedAt === null && !this.ended; n++) {
      const data = payload(this.chunk, `${this.tag}-${n}`);
      this.sent.update(data);
      this.sock.write(data);
      while (this.got.bytes < this.sent.bytes && this.closedAt === null && !this.ended) {
        await new Promise<void>((r) => (this.wake = r));
      }
    }
  }

  /** Stops after the chunk in flight, sends the FIN, and waits for the close. */
  async finish(timeoutMs: number): Promise<void> {
    this.stopping = true;
    this.poke();
    await this.done;
    if (this.closedAt === null) this.sock.end();
    await until(() => this.closedAt !== null, `${this.tag} to close`, timeoutMs);
  }
}

// ------------------------------------------------------------------ forwarding faults

describe.each(ENGINES)('forwarding faults (%s engine)', (engine) => {
  const env = { TCPPROXY_ENGINE: engine };

  test('the upstream resets mid-transfer: the client sees ECONNRESET, and the next connection is served', async () => {
    // The first connection: the upstream sends 16 KiB, then resets once it has
    // received 32 KiB of the client's 64 KiB. Every later one: echo.
    // The client reads the 16 KiB before it sends: an RST that arrives right
    // behind data is reported by libuv as EOF (uv__stream_io short-cuts POLLHUP
    // after a partial read to EOF without reading the error), in this test's
    // client as much as in the JS engine, so the reset must arrive alone.
    let n = 0;
    const up = await startServer((s) => {
      if (n++ > 0) {
        s.pipe(s);
        return;
      }
      let got = 0;
      s.write(payload(16 * KiB, 'down'));
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= 32 * KiB && !s.destroyed) s.resetAndDestroy();
      });
    });
    const p = await startProxy(['-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], env);
    const c = await Client.connect('127.0.0.1', portOf(p), { keep: false });
    await c.waitBytes(16 * KiB);
    c.socket.write(payload(64 * KiB, 'up'));
    await c.waitClosed(5000);
    expect(c.error?.code).toBe('ECONNRESET');
    expect(c.ended).toBe(false);
    await waitLog(p.stderr, /^connection 1: end: client \S+ on \S+, server \S+ from \S+, \d+ bytes up, 16384 down, \d+ ms, reset \(server: [a-z_]+ (ECONNRESET|EPIPE)\), (splice|copy|js)$/);
    await answers(portOf(p));
    expect(readyWorkers(p.stderr())).toHaveLength(1);
  });

  test('an upstream reset right behind its data reaches the client as a reset, never a FIN (20 connections, the kernel\'s view)', async () => {
    // The upstream sends 16 KiB at once and resets when it has 32 KiB of the
    // client's 64 KiB, so the RST arrives at the proxy right behind data. The
    // client does not read (libuv reports such an RST as EOF to a reader), so
    // the kernel tells: after an RST its socket is gone from /proc/net/tcp,
    // after a FIN it sits in CLOSE_WAIT.
    const up = await startServer((s) => {
      let got = 0;
      s.write(payload(16 * KiB, 'down'));
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= 32 * KiB && !s.destroyed) s.resetAndDestroy();
      });
    });
    const p = await startProxy(['-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], env);
    const port = portOf(p);
    const outcome: string[] = [];
    for (let i = 1; i <= 20; i++) {
      const sock = await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port });
        s.pause(); // never read
        rawSockets.add(s);
        s.once('error', reject);
        s.once('connect', () => resolve(s));
      });
      sock.on('error', () => {});
      sock.write(payload(64 * KiB, `up-${i}`));
      // The session ends (its record is logged), or the client got a FIN: then the
      // session waits for the client's half, which never comes.
      const endRe = new RegExp(`^\\S+Z tcpproxy: connection ${i}: end: client \\S+ on \\S+, server \\S+ from \\S+, \\d+ bytes up, \\d+ down, \\d+ ms, (.*)$`, 'm');
      const local = sock.localPort ?? 0;
      await until(() => endRe.test(p.stderr()) || tcpStateOf(local, port) === 'CLOSE_WAIT', `connection ${i} to end`, 10000);
      const state = tcpStateOf(local, port);
      outcome.push(`${endRe.exec(p.stderr())?.[1] ?? 'no end record'}; client socket ${state ?? 'reset (gone)'}`);
      sock.destroy();
    }
    const bad = outcome.filter((o) => !/^reset \(server: [a-z_]+ (ECONNRESET|EPIPE)\), (splice|copy|js); client socket reset \(gone\)$/.test(o));
    expect(bad).toEqual([]);
  });

  test('the client resets mid-transfer: the upstream sees ECONNRESET, and the next connection is served', async () => {
    let n = 0;
    const got: number[] = [];
    const up = await startServer((s) => {
      const i = n++;
      if (i > 0) {
        s.pipe(s);
        return;
      }
      got[i] = 0;
      s.on('data', (d: Buffer) => (got[i] = (got[i] ?? 0) + d.length));
    });
    const p = await startProxy(['-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], env);
    const c = await Client.connect('127.0.0.1', portOf(p), { keep: false });
    c.socket.write(payload(64 * KiB, 'up'));
    await until(() => (got[0] ?? 0) >= 64 * KiB, () => `the upstream to receive 64 KiB (has ${got[0] ?? 0})`, 5000);
    c.socket.resetAndDestroy();
    const victim = up.sockets[0];
    if (victim === undefined) throw new Error('no upstream socket');
    await until(() => victim.destroyed, 'the upstream socket to close', 5000);
    expect(up.errors.map((e) => (e as NodeJS.ErrnoException).code)).toEqual(['ECONNRESET']);
    await waitLog(p.stderr, /^connection 1: end: client \S+ on \S+, server \S+ from \S+, 65536 bytes up, 0 down, \d+ ms, reset \(client: [a-z_]+ ECONNRESET\), (splice|copy|js)$/);
    await answers(portOf(p));
  });

  test('an upstream that never answers and an idle client: the idle timeout (-t 1) closes both in about 1 s', async () => {
    // The first connection: accepted, never answered. Every later one: echo.
    let n = 0;
    const up = await startServer((s) => {
      if (n++ > 0) s.pipe(s);
    });
    const p = await startProxy(['-t', '1', '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], env);
    const c = await Client.connect('127.0.0.1', portOf(p), { keep: false });
    await until(() => up.sockets.length === 1, 'the upstream connection', 5000);
    await c.waitClosed(5000);
    const upSock = up.sockets[0] as net.Socket;
    await until(() => upSock.destroyed, 'the upstream side to close', 2000);
    expect(c.lifetimeMs()).toBeGreaterThanOrEqual(900);
    expect(c.lifetimeMs()).toBeLessThan(3000);
    // Not a clean end: the proxy resets both sides.
    expect(c.error?.code).toBe('ECONNRESET');
    expect(up.errors.map((e) => (e as NodeJS.ErrnoException).code)).toEqual(['ECONNRESET']);
    await waitLog(p.stderr, /^connection 1: end: client \S+ on \S+, server \S+ from \S+, 0 bytes up, 0 down, \d+ ms, idle-timeout, (splice|copy|js)$/);
    await answers(portOf(p));
  });
});

// ------------------------------------------------------------------ names, workers, floods

test('an upstream name that does not resolve: the client is closed at once, and the log says why', async () => {
  const p = await startProxy(['-b', '127.0.0.1:0', 'nonexistent.invalid:80']);
  const c = await Client.connect('127.0.0.1', portOf(p));
  await c.waitClosed(5000);
  expect(c.lifetimeMs()).toBeLessThan(5000);
  expect(c.received).toBe(0);
  await waitLog(p.stderr, /^connection 1: server nonexistent\.invalid:80: resolve nonexistent\.invalid: ENOTFOUND$/);
  expect(p.exit()).toBeNull();
});

test('a worker killed with SIGKILL under load: restarted, its clients closed within 5 s, the other identity unaffected', async () => {
  const up = await echoServer();
  const [a, b] = [await freePort(), await freePort()];
  const conf = writeConfig(
    tmp,
    'kill.conf',
    `port ${a}\n  interface 127.0.0.1\n  uid 4242\n  gid 4343\n  server 127.0.0.1:${up.port}\n` +
      `port ${b}\n  interface 127.0.0.1\n  uid 5252\n  gid 5353\n  server 127.0.0.1:${up.port}\n`,
  );
  const p = await startProxy(['-s', '-f', conf], {}, 2);
  const [victim] = await waitWorkers(p.stderr, 4242, 4343);
  const [bystander] = await waitWorkers(p.stderr, 5252, 5353);
  if (victim === undefined || bystander === undefined) throw new Error('workers missing');

  const PER_SIDE = 100;
  const onA = await Promise.all(Array.from({ length: PER_SIDE }, (_, i) => Streamer.open(a, `a-${i}`)));
  const onB = await Promise.all(Array.from({ length: PER_SIDE }, (_, i) => Streamer.open(b, `b-${i}`)));
  // Everyone flows before the kill.
  await until(() => [...onA, ...onB].every((s) => s.got.bytes >= 64 * KiB), 'every stream to move 64 KiB', 30000);

  process.kill(victim.pid, 'SIGKILL');
  const killedAt = Date.now();
  await waitLog(p.stderr, new RegExp(`^worker uid 4242 gid 4343 \\(pid ${victim.pid}\\) ended with signal SIGKILL; restarting in \\d+ ms$`));
  // Every client of the killed worker sees its connection end (FIN or RST), none hangs.
  await until(
    () => onA.every((s) => s.closedAt !== null),
    () => `every client of the killed worker to be closed (${onA.filter((s) => s.closedAt === null).length} still open)`,
    5000,
  );
  expect(Math.max(...onA.map((s) => (s.closedAt ?? Infinity) - killedAt))).toBeLessThan(5000);

  // Restarted with a new pid; the same identity serves again.
  const ready = await waitWorkers(p.stderr, 4242, 4343, 2);
  expect(ready[1]?.pid).not.toBe(victim.pid);
  await answers(a);

  // The other identity: the same worker, and every stream flowed through and ends with every byte.
  const beforeFinish = onB.map((s) => s.got.bytes);
  await until(() => onB.every((s, i) => s.got.bytes > (beforeFinish[i] ?? 0)), 'the other identity\'s streams to keep flowing', 10000);
  await Promise.all(onB.map((s) => s.finish(10000)));
  for (const s of onB) {
    expect({ tag: s.sock.remotePort, error: s.error, ended: s.ended }).toEqual({ tag: s.sock.remotePort, error: null, ended: true });
    expect(s.got.digest()).toEqual(s.sent.digest());
  }
  expect(readyWorkers(p.stderr()).filter((w) => w.uid === 5252)).toEqual([bystander]);
  expect(readStat(bystander.pid)?.state).not.toBe('Z');
  expect(p.exit()).toBeNull();
}, 90000);

test('a connect flood (5,000 connects in a burst, each closed at once): no crash, no descriptor left, the daemon answers after', async () => {
  const up = await echoServer();
  const p = await startProxy(['-b', '127.0.0.1:0', `127.0.0.1:${up.port}`]);
  const port = portOf(p);
  await until(() => readyWorkers(p.stderr()).length === 1, 'the worker');
  const worker = workerOf(p);

  const FLOOD = 5000;
  let settled = 0;
  let connected = 0;
  for (let i = 0; i < FLOOD; i++) {
    const s = net.connect({ host: '127.0.0.1', port });
    rawSockets.add(s);
    const timer = setTimeout(() => s.destroy(), 30000);
    s.on('error', () => {});
    s.once('connect', () => {
      connected++;
      // Half end with a FIN, half with an RST.
      if (i % 2 === 0) s.destroy();
      else s.resetAndDestroy();
    });
    s.once('close', () => {
      clearTimeout(timer);
      rawSockets.delete(s);
      settled++;
    });
  }
  await until(() => settled === FLOOD, () => `the flood to settle (${settled} of ${FLOOD})`, 45000);
  // eslint-disable-next-line no-console
  console.log(`connect flood: ${connected} of ${FLOOD} connected`);
  expect(connected).toBeGreaterThan(0);

  await answers(port);
  expect(p.exit()).toBeNull();
  expect(readyWorkers(p.stderr()).map((w) => w.pid)).toEqual([worker]);
  expect(p.stderr()).not.toMatch(/ended with|internal error|hand-off/);
  // Every session ended: the master and the worker keep only the listener.
  await until(
    () => tcpFdCount(p.pid) === 1 && tcpFdCount(worker) === 1,
    () => `the daemon to drop every flood connection (master ${tcpFdCount(p.pid)} TCP fds, worker ${tcpFdCount(worker)})`,
    // Upstream connects that lost their SYN to the echo server's full backlog retry for seconds before they end.
    60000,
  );
}, 120000);

// ------------------------------------------------------------------ EMFILE

/** The log lines that say a process of the daemon crashed or a worker ended. */
function crashLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => /ended with|internal error|^\S+Error|^\s+at /.test(l));
}

test.each(ENGINES)('EMFILE (daemon under prlimit --nofile=256:256, 400 connections, %s engine): no crash, no busy loop, served again after', async (engine) => {
  const up = await echoServer();
  const d = await startDaemon({
    wrapper: ['prlimit', '--nofile=256:256'],
    args: ['-b', '127.0.0.1:0', `127.0.0.1:${up.port}`],
    env: { ...process.env, TCPPROXY_ENGINE: engine },
    detached: false,
  });
  const master = d.pid; // prlimit execs the command: the same pid
  const err = d.stderr;
  const m = await waitLog(err, /^listening on 127\.0\.0\.1:(\d+)$/);
  const port = Number(m[1]);
  await waitLog(err, /^worker uid \d+ gid \d+ ready, pid \d+$/);
  const worker = readyWorkers(err())[0]?.pid ?? 0;
  expect(fs.readFileSync(`/proc/${master}/limits`, 'utf8')).toMatch(/^Max open files\s+256\s+256\s+files\s*$/m);
  expect(fs.readFileSync(`/proc/${worker}/limits`, 'utf8')).toMatch(/^Max open files\s+256\s+256\s+files\s*$/m);

  // 400 connections, paced, all held open (the daemon closes those it cannot serve).
  const held: net.Socket[] = [];
  let closedByDaemon = 0;
  for (let i = 0; i < 400; i++) {
    const s = await new Promise<net.Socket>((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      rawSockets.add(sock);
      sock.on('error', () => {});
      sock.once('close', () => closedByDaemon++);
      sock.once('connect', () => resolve(sock));
      sock.once('close', () => resolve(sock));
    });
    held.push(s);
  }
  // Saturated: 2 s of the master's and the worker's CPU time.
  const cpu0 = { master: readStat(master)?.cpuTicks, worker: readStat(worker)?.cpuTicks };
  const t0 = Date.now();
  await until(() => Date.now() - t0 >= 2000, '2 s of saturation', 3000);
  const cpu1 = { master: readStat(master)?.cpuTicks, worker: readStat(worker)?.cpuTicks };
  // eslint-disable-next-line no-console
  console.log(`EMFILE (${engine}): ${closedByDaemon} of 400 closed by the daemon; CPU ticks over 2 s: ${JSON.stringify({ cpu0, cpu1 })}`);
  // No crash: the master runs, the worker is the first one and never ended.
  expect(d.exit()).toBeNull();
  expect(crashLines(err())).toEqual([]);
  expect(readyWorkers(err()).map((w) => w.pid)).toEqual([worker]);
  // No busy loop: under 1 s of CPU (100 ticks) each.
  expect((cpu1.master ?? NaN) - (cpu0.master ?? NaN)).toBeLessThan(100);
  expect((cpu1.worker ?? NaN) - (cpu0.worker ?? NaN)).toBeLessThan(100);

  // Release everything: new connections are served.
  for (const s of held) s.destroy();
  // The worker keeps only its listener.
  await until(() => tcpFdCount(worker) === 1, () => `the worker to drop the released connections (${tcpFdCount(worker)} TCP fds)`, 20000);
  for (let i = 0; i < 10; i++) await answers(port, `after ${i}\n`);
  expect(d.exit()).toBeNull();
  expect(crashLines(err())).toEqual([]);
  expect(readyWorkers(err()).map((w) => w.pid)).toEqual([worker]);
}, 90000);

// ------------------------------------------------------------------ handlers and ACPs

test('a handler that never exits (exec /bin/sleep 1000): the client can close, nothing else breaks, killing it later is fine', async () => {
  const up = await echoServer();
  const [a, b] = [await freePort(), await freePort()];
  const conf = writeConfig(tmp, 'sleep.conf', `port ${a}\n  interface 127.0.0.1\n  exec /bin/sleep 1000\nport ${b}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`);
  const p = await startProxy(['-s', '-f', conf], {}, 2);
  await until(() => readyWorkers(p.stderr()).length === 1, 'the worker');
  const worker = workerOf(p);
  const argv = ['/bin/sleep', '1000'];

  const c1 = await Client.connect('127.0.0.1', a);
  await until(() => childrenRunning(worker, argv).length === 1, 'the handler to start', 10000);
  const [first] = childrenRunning(worker, argv) as [number];
  started.add(first);
  c1.destroy();
  await c1.waitClosed(2000);

  // The handler still runs; the same service and the other one both work.
  const c2 = await Client.connect('127.0.0.1', a);
  await until(() => childrenRunning(worker, argv).length === 2, 'a second handler', 10000);
  const second = childrenRunning(worker, argv).find((x) => x !== first) as number;
  started.add(second);
  await answers(b);
  expect(c2.closed).toBe(false);

  // Killing the handlers ends their sessions, logged; nothing is left a zombie.
  process.kill(first, 'SIGKILL');
  process.kill(second, 'SIGKILL');
  // Numbered by the session code (the fast path of the other service has a range of its own): each its own number.
  const [, one] = await waitLog(p.stderr, new RegExp(`^connection (\\d+): end: handler /bin/sleep pid ${first} signal SIGKILL, \\d+ ms$`));
  const [, two] = await waitLog(p.stderr, new RegExp(`^connection (\\d+): end: handler /bin/sleep pid ${second} signal SIGKILL, \\d+ ms$`));
  expect(one).not.toBe(two);
  await c2.waitClosed(5000);
  await until(() => zombiesOf([p.pid, worker]).length === 0, 'no zombie children', 5000);
  await answers(b);
  expect(readyWorkers(p.stderr()).map((w) => w.pid)).toEqual([worker]);
});

test('a handler that exits at once (exec /bin/true): the client sees EOF promptly', async () => {
  const p = await startProxy(['-b', '127.0.0.1:0', '/bin/true']);
  const c = await Client.connect('127.0.0.1', portOf(p));
  await c.waitClosed(2000);
  expect({ ended: c.ended, error: c.error?.code ?? null, received: c.received }).toEqual({ ended: true, error: null, received: 0 });
  expect(c.lifetimeMs()).toBeLessThan(2000);
  await waitLog(p.stderr, /^connection 1: end: handler \/bin\/true pid \d+ exit 0, \d+ ms$/);
  await until(() => zombiesOf([p.pid, workerOf(p)]).length === 0, 'no zombie children', 5000);
});

test('an ACP that hangs (acp /bin/sleep 1000, timeout 1): denied and the client closed in about 1 s', async () => {
  const up = await startServer((s) => s.destroy());
  const port = await freePort();
  const conf = writeConfig(tmp, 'acp.conf', `port ${port}\n  interface 127.0.0.1\n  acp /bin/sleep 1000\n  timeout 1\n  server 127.0.0.1:${up.port}\n`);
  const p = await startProxy(['-s', '-f', conf]);
  await until(() => readyWorkers(p.stderr()).length === 1, 'the worker');
  const worker = workerOf(p);
  const c = await Client.connect('127.0.0.1', port);
  await c.waitClosed(5000);
  expect(c.lifetimeMs()).toBeGreaterThanOrEqual(900);
  expect(c.lifetimeMs()).toBeLessThan(3000);
  expect(c.received).toBe(0);
  await waitLog(p.stderr, /^connection 1: acp \/bin\/sleep 1000: denied \(timeout\)$/);
  expect(up.sockets).toHaveLength(0);
  // The ACP is gone, not left running or a zombie.
  await until(() => childrenRunning(worker, ['/bin/sleep', '1000']).length === 0 && zombiesOf([worker]).length === 0, 'the ACP to be reaped', 5000);
  expect(p.exit()).toBeNull();
});
