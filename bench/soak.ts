/**
 * Soak test (`npm run soak`, not part of `npm test`): rounds of N concurrent
 * connections (default 9,000) through one tcpproxy forwarding service, each
 * sending its own payload (default 64 KiB) to an echo upstream and checking
 * the sha256 of what comes back, repeated for a given duration. After every
 * round the master's and the workers' descriptors must be back at their
 * baseline and no child of theirs may be a zombie.
 *
 *   npx tsc -p tsconfig.build.json && npm run soak -- --seconds 120 --connections 9000
 *
 * Three processes besides the daemon, each under RLIMIT_NOFILE (20,000 here):
 * this one (orchestration, /proc sampling), the load (N client sockets) and
 * the echo upstream (N server sockets); the daemon's worker holds 2N.
 * Figures per round on stdout: connections/s, errors, descriptors and RSS of
 * the master and the workers at the peak (all N open) and after. Exit status
 * 0 when every round was clean, 1 otherwise.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { CLI, killLaunched, LOG_STAMP, startDaemon } from '../test/helpers/daemon';
import { killTree } from '../test/helpers/kill';
import { portOf } from '../test/helpers/ports';
import { backToBase, fdKinds, loadAverage, showKinds, tcpInodes, vmRssKiB, zombiesOf } from '../test/helpers/proc';
import { until } from '../test/helpers/until';
import { nextMessage, sleep } from './children';
const HOST = '127.0.0.1';
/** Connects in progress at a time: the daemon's listen backlog is 511. */
const CONNECTING = 256;
/** The pump keeps up to 64 idle pipe pairs (native/pump.cc kMaxIdlePipes). */
const PIPE_POOL_FDS = 128;

// ------------------------------------------------------------------ options

interface Options {
  readonly seconds: number;
  readonly connections: number;
  readonly payload: number;
  readonly engine: 'splice' | 'js';
  readonly warmup: number;
}

const USAGE = `usage: npm run soak -- [--seconds N] [--connections N] [--payload BYTES] [--engine splice|js] [--warmup N]

  --seconds N       keep starting rounds for N seconds (default 60; at least one round)
  --connections N   concurrent connections per round (default 9000)
  --payload BYTES   bytes each connection sends and gets back (default 65536)
  --engine E        TCPPROXY_ENGINE of the daemon (default splice)
  --warmup N        connections of the warm-up round before the baseline (default 200)`;

function parseOptions(argv: readonly string[]): Options {
  const o = { seconds: 60, connections: 9000, payload: 65536, engine: 'splice' as 'splice' | 'js', warmup: 200 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) fail(`${a ?? ''} needs a value`);
      return v as string;
    };
    const int = (min: number): number => {
      const v = next();
      if (!/^[0-9]+$/.test(v) || Number(v) < min) fail(`${a ?? ''}: expected an integer >= ${min}, not "${v}"`);
      return Number(v);
    };
    switch (a) {
      case '--seconds':
        o.seconds = int(0);
        break;
      case '--connections':
        o.connections = int(1);
        break;
      case '--payload':
        o.payload = int(1);
        break;
      case '--warmup':
        o.warmup = int(1);
        break;
      case '--engine': {
        const v = next();
        if (v !== 'splice' && v !== 'js') fail(`--engine: "splice" or "js", not "${v}"`);
        o.engine = v as 'splice' | 'js';
        break;
      }
      case '--help':
      case '-h':
        process.stdout.write(`${USAGE}\n`);
        process.exit(0);
        break;
      default:
        fail(`unknown argument "${a ?? ''}"`);
    }
  }
  return o;
}

function fail(message: string): never {
  process.stderr.write(`soak: ${message}\n${USAGE}\n`);
  process.exit(2);
}

// ------------------------------------------------------------------ messages

type LoadCmd = { type: 'open'; port: number; n: number; payload: number; tag: string } | { type: 'go' };
type LoadMsg =
  | { type: 'opened'; connected: number; failed: number; firstError: string | null }
  | { type: 'done'; ok: number; errors: number; firstErrors: string[] };
type UpstreamMsg = { type: 'listening'; port: number } | { type: 'count'; open: number; accepted: number };

// ------------------------------------------------------------------ roles: upstream, load

/** Echo upstream: sends back every byte, ends after the peer's FIN. */
function upstreamRole(): void {
  let open = 0;
  let accepted = 0;
  const server = net.createServer({ allowHalfOpen: false }, (sock) => {
    open++;
    accepted++;
    sock.on('error', () => {});
    sock.on('close', () => open--);
    sock.pipe(sock);
  });
  server.on('error', (err) => {
    process.stderr.write(`soak upstream: ${err.message}\n`);
    process.exit(1);
  });
  server.listen({ host: HOST, port: 0, backlog: 4096 }, () => {
    process.send?.({ type: 'listening', port: (server.address() as net.AddressInfo).port } satisfies UpstreamMsg);
  });
  process.on('message', (m: { type: string }) => {
    if (m.type === 'count') process.send?.({ type: 'count', open, accepted } satisfies UpstreamMsg);
  });
  process.on('disconnect', () => process.exit(0));
}

/**
 * Load: on `open`, opens n connections (paced, all kept open) and reports;
 * on `go`, every connection sends its own payload and its FIN, reads the
 * echo to the end and compares length and sha256; then reports.
 */
function loadRole(): void {
  const base = randomBytes(1 << 20);
  let conns: { sock: net.Socket; send: () => void }[] = [];
  let results: Promise<string | null>[] = [];

  const open = async (c: Extract<LoadCmd, { type: 'open' }>): Promise<void> => {
    conns = [];
    results = [];
    let connected = 0;
    let failed = 0;
    let firstError: string | null = null;
    const pending = new Set<Promise<void>>();
    for (let i = 0; i < c.n; i++) {
      let settle: () => void = () => {};
      const p = new Promise<void>((r) => (settle = r)).then(() => {
        pending.delete(p);
      });
      pending.add(p);
      const sock = net.connect({ host: HOST, port: c.port });
      const want = createHash('sha256');
      const got = createHash('sha256');
      let received = 0;
      let ended = false;
      let error: string | null = null;
      sock.on('data', (d: Buffer) => {
        got.update(d);
        received += d.length;
      });
      sock.on('end', () => (ended = true));
      sock.on('error', (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message));
      let wasConnected = false;
      sock.once('connect', () => {
        wasConnected = true;
        connected++;
        settle();
      });
      results.push(
        new Promise((resolve) =>
          sock.once('close', () => {
            if (!wasConnected) {
              failed++;
              firstError ??= error;
            }
            settle();
            const w = want.digest('hex');
            const g = got.digest('hex');
            if (error === null && ended && received === c.payload && w === g) resolve(null);
            else resolve(`connection ${i}: ${error ?? (ended ? 'eof' : 'closed')} after ${received} of ${c.payload} bytes, sha256 ${w === g ? 'equal' : 'differs'}`);
          }),
        ),
      );
      conns.push({
        sock,
        send: () => {
          // Its own bytes: its index, then a slice of the random base at an offset of its own.
          const data = Buffer.allocUnsafe(c.payload);
          const head = Buffer.from(`${c.tag}:${i}:`);
          head.copy(data, 0, 0, Math.min(head.length, c.payload));
          for (let off = head.length, src = (i * 7919) % base.length; off < c.payload; ) {
            const n = Math.min(c.payload - off, base.length - src);
            base.copy(data, off, src, src + n);
            off += n;
            src = 0;
          }
          want.update(data);
          sock.end(data);
        },
      });
      if (pending.size >= CONNECTING) await Promise.race(pending);
    }
    await Promise.all(pending);
    process.send?.({ type: 'opened', connected, failed, firstError } satisfies LoadMsg);
  };

  const go = async (): Promise<void> => {
    for (const c of conns) if (!c.sock.destroyed) c.send();
    const errs = (await Promise.all(results)).filter((e): e is string => e !== null);
    process.send?.({ type: 'done', ok: results.length - errs.length, errors: errs.length, firstErrors: errs.slice(0, 5) } satisfies LoadMsg);
    conns = [];
    results = [];
  };

  process.on('message', (m: LoadCmd) => {
    if (m.type === 'open') void open(m);
    else if (m.type === 'go') void go();
  });
  process.on('disconnect', () => process.exit(0));
}

// ------------------------------------------------------------------ /proc

/** fdKinds (test/helpers/proc), empty once the process is gone. */
function kindsOf(pid: number, tcp: ReadonlySet<number>): Map<string, number> {
  try {
    return fdKinds(pid, tcp);
  } catch {
    return new Map();
  }
}

function total(k: Map<string, number>): number {
  let n = 0;
  for (const v of k.values()) n += v;
  return n;
}

// ------------------------------------------------------------------ orchestration

/** Polls `cond` (test/helpers/until) and says whether it held within `timeoutMs`. */
function poll(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  return until(cond, 'a condition', timeoutMs).then(
    () => true,
    () => false,
  );
}

interface Daemon {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly port: number;
  /** Worker pids, in the order of their ready lines. */
  readonly workers: () => number[];
  /** Log lines other than per-connection client/end records. */
  readonly notes: string[];
  readonly ends: Map<string, number>;
}

async function startSoakDaemon(upPort: number, engine: string): Promise<Daemon> {
  const workers: number[] = [];
  const notes: string[] = [];
  const ends = new Map<string, number>();
  let partial = '';
  // Its output is not kept (millions of lines): only parsed as it comes.
  const daemon = await startDaemon({
    args: ['-b', `${HOST}:0`, `${HOST}:${upPort}`],
    env: { ...process.env, TCPPROXY_ENGINE: engine },
    detached: false,
    keepOutput: false,
    timeoutMs: 15000,
    onStderr: (s) => {
      const lines = (partial + s).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const l = line.replace(LOG_STAMP, '');
        let m: RegExpExecArray | null;
        if ((m = /^connection \d+: end: .*, ([a-z-]+(?: \(.*\))?), (splice|copy|js)$/.exec(l)) !== null) {
          const key = `${m[1] ?? '?'} ${m[2] ?? ''}`;
          ends.set(key, (ends.get(key) ?? 0) + 1);
        } else if (/^connection \d+: client /.test(l)) {
          // one per connection
        } else {
          if ((m = /^worker uid \d+ gid \d+ ready, pid (\d+)$/.exec(l)) !== null) workers.push(Number(m[1]));
          if (notes.length < 200) notes.push(l);
        }
      }
    },
  });
  const ok = await poll(() => workers.length > 0, 15000);
  if (!ok) throw new Error(`tcpproxy did not start: ${notes.join(' | ')}`);
  return { child: daemon.child, pid: daemon.pid, port: portOf(daemon), workers: () => [...workers], notes, ends };
}

const children = new Set<ChildProcess>();

function killAll(): void {
  for (const c of children) if (c.pid !== undefined) killTree(c.pid);
  void killLaunched();
}

interface Sample {
  readonly masterFds: Map<string, number>;
  readonly workerFds: Map<string, number>;
  readonly masterRss: number;
  readonly workersRss: number;
}

function sample(d: Daemon): Sample {
  const tcp = tcpInodes();
  const workerFds = new Map<string, number>();
  let workersRss = 0;
  for (const w of d.workers()) {
    for (const [k, v] of kindsOf(w, tcp)) workerFds.set(k, (workerFds.get(k) ?? 0) + v);
    workersRss += vmRssKiB(w);
  }
  return { masterFds: kindsOf(d.pid, tcp), workerFds, masterRss: vmRssKiB(d.pid), workersRss };
}

function endCount(d: Daemon): number {
  let n = 0;
  for (const v of d.ends.values()) n += v;
  return n;
}

const MiB = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;

interface RoundResult {
  readonly ok: number;
  readonly errors: number;
  readonly ms: number;
  readonly peak: Sample;
  readonly firstErrors: string[];
}

async function round(d: Daemon, load: ChildProcess, upstream: ChildProcess, n: number, payload: number, tag: string): Promise<RoundResult> {
  const count = async (): Promise<{ open: number; accepted: number }> => {
    const reply = nextMessage<Extract<UpstreamMsg, { type: 'count' }>>(upstream, 'count', 10000);
    upstream.send({ type: 'count' });
    return reply;
  };
  const before = await count();
  const t0 = Date.now();
  const opened = nextMessage<Extract<LoadMsg, { type: 'opened' }>>(load, 'opened', 120000);
  load.send({ type: 'open', port: d.port, n, payload, tag } satisfies LoadCmd);
  const o = await opened;
  // Every session reaches the upstream: n live at once.
  let now = before;
  const deadline = Date.now() + 60000;
  while ((now = await count()).accepted - before.accepted < o.connected && Date.now() < deadline) await sleep(100);
  const peak = sample(d);
  const done = nextMessage<Extract<LoadMsg, { type: 'done' }>>(load, 'done', 300000);
  load.send({ type: 'go' } satisfies LoadCmd);
  const r = await done;
  const firstErrors = [...r.firstErrors];
  if (o.failed > 0) firstErrors.unshift(`${o.failed} connects failed (${o.firstError ?? '?'})`);
  if (now.accepted - before.accepted < o.connected) firstErrors.unshift(`only ${now.accepted - before.accepted} of ${o.connected} sessions reached the upstream`);
  return { ok: r.ok, errors: r.errors + o.failed, ms: Date.now() - t0, peak, firstErrors };
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  if (!fs.existsSync(CLI)) fail(`${CLI} is missing: run "npx tsc -p tsconfig.build.json"`);
  const log = (s: string): boolean => process.stdout.write(`${s}\n`);
  log(
    `soak: ${opts.connections} concurrent connections × ${opts.payload} B, engine ${opts.engine}, ${opts.seconds} s; ` +
      `load average ${loadAverage()}`,
  );

  const upstream = fork(__filename, ['--role', 'upstream'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(upstream);
  const up = await nextMessage<Extract<UpstreamMsg, { type: 'listening' }>>(upstream, 'listening', 10000);
  const load = fork(__filename, ['--role', 'load'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(load);
  const d = await startSoakDaemon(up.port, opts.engine);
  log(`tcpproxy pid ${d.pid}, workers ${d.workers().join(', ')}, listening on ${HOST}:${d.port}; upstream pid ${upstream.pid ?? '?'}, load pid ${load.pid ?? '?'}`);

  // Warm-up, then the baseline.
  const warm = await round(d, load, upstream, opts.warmup, opts.payload, 'warm');
  if (warm.errors > 0) log(`warm-up: ${warm.errors} errors: ${warm.firstErrors.join('; ')}`);
  const idle = (): boolean => (sample(d).masterFds.get('tcp') ?? 0) === 1 && (sample(d).workerFds.get('tcp') ?? 0) === 0;
  await poll(idle, 20000);
  await poll(() => endCount(d) >= opts.warmup, 30000);
  const base = sample(d);
  log(`baseline: master fds ${total(base.masterFds)} (${showKinds(base.masterFds)}), RSS ${MiB(base.masterRss)}; workers fds ${total(base.workerFds)} (${showKinds(base.workerFds)}), RSS ${MiB(base.workersRss)}`);

  const started = Date.now();
  let rounds = 0;
  let totalOk = 0;
  let totalErrors = 0;
  let leaks = 0;
  const workersAtStart = d.workers();
  do {
    rounds++;
    const r = await round(d, load, upstream, opts.connections, opts.payload, `r${rounds}`);
    totalOk += r.ok;
    totalErrors += r.errors;
    const extra = opts.engine === 'splice' ? PIPE_POOL_FDS : 0;
    const settled = await poll(() => {
      const s = sample(d);
      return backToBase(base.masterFds, s.masterFds, 0) && backToBase(base.workerFds, s.workerFds, extra);
    }, 30000);
    // Every session's end record (the log may lag behind the sockets).
    const expected = opts.warmup + rounds * opts.connections;
    const logged = await poll(() => endCount(d) >= expected, 30000);
    if (!logged) r.firstErrors.push(`only ${endCount(d)} of ${expected} end records logged within 30 s`);
    const after = sample(d);
    const zombies = zombiesOf([d.pid, ...d.workers()]);
    if (!settled || zombies.length > 0 || !logged) leaks++;
    log(
      `round ${rounds}: ${r.ok} ok, ${r.errors} errors in ${(r.ms / 1000).toFixed(1)} s (${Math.round((opts.connections * 1000) / r.ms)} conns/s); ` +
        `peak: master fds ${total(r.peak.masterFds)} RSS ${MiB(r.peak.masterRss)}, workers fds ${total(r.peak.workerFds)} RSS ${MiB(r.peak.workersRss)}; ` +
        `after: master fds ${total(after.masterFds)} RSS ${MiB(after.masterRss)}, workers fds ${total(after.workerFds)} RSS ${MiB(after.workersRss)}` +
        `${settled ? '' : ` — NOT back at the baseline: master ${showKinds(after.masterFds)}; workers ${showKinds(after.workerFds)}`}` +
        `${zombies.length > 0 ? ` — zombies ${zombies.join(', ')}` : ''}`,
    );
    for (const e of r.firstErrors) log(`  ${e}`);
    if (d.child.exitCode !== null || d.child.signalCode !== null) {
      log('tcpproxy exited');
      break;
    }
  } while (Date.now() - started < opts.seconds * 1000);

  const seconds = (Date.now() - started) / 1000;
  const restarted = d.workers().length !== workersAtStart.length;
  log('');
  log(`rounds ${rounds}, ${totalOk} connections ok, ${totalErrors} errors, ${leaks} rounds not back at the baseline, over ${seconds.toFixed(1)} s`);
  log(`end records: ${[...d.ends].sort().map(([k, v]) => `${k} ×${v}`).join(', ')}`);
  const notes = d.notes.filter((l) => !/^(listening on|tcpproxy \S+ serving|worker uid \d+ gid \d+ ready)/.test(l));
  if (notes.length > 0) log(`other log lines (first ${Math.min(notes.length, 20)}):\n  ${notes.slice(0, 20).join('\n  ')}`);
  if (restarted) log(`workers restarted: ${d.workers().join(', ')}`);
  const uncleanEnds = [...d.ends].filter(([k]) => !k.startsWith('eof ')).reduce((a, [, v]) => a + v, 0);
  const clean = totalErrors === 0 && leaks === 0 && !restarted && uncleanEnds === 0 && d.child.exitCode === null;
  log(clean ? 'soak: clean' : 'soak: FAILED');

  d.child.kill('SIGTERM');
  await poll(() => d.child.exitCode !== null || d.child.signalCode !== null, 5000);
  killAll();
  return clean ? 0 : 1;
}

const role = process.argv[2] === '--role' ? process.argv[3] : undefined;
if (role === 'upstream') upstreamRole();
else if (role === 'load') loadRole();
else {
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      killAll();
      process.exit(130);
    });
  }
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`soak: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      killAll();
      process.exit(1);
    },
  );
}
