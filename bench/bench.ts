/**
 * `npm run bench [-- --quick]`: tcpproxy against no proxy, haproxy and socat,
 * and as a request-handler server against openbsd-inetd, measured in one
 * run, interleaved round-robin, medians of the rounds.
 *
 * Layout (2 CPUs): every proxy runs pinned to the proxy CPU (taskset -c 0);
 * the upstreams (an iperf3 server, a Node echo server), the load generators
 * (iperf3 clients, bench/load.js) and this process run on the load CPU
 * (taskset -c 1). Each forwarding variant runs twice per round, one instance
 * in front of each upstream; tcpproxy once more running /bin/cat for every
 * connection, as inetd does. CPU and memory are read from the instance's own
 * process tree in /proc (tcpproxy: master + worker + handlers, those reaped
 * included).
 *
 * Per round, every variant is started fresh, then each phase runs over all
 * variants in turn (the order rotates every round): idle connections (RSS),
 * throughput one stream up / down and 8 streams up (iperf3, CPU per GiB),
 * new connections per second (CPU per connection), the request handler's
 * connections per second (CPU per connection), ping-pong RTT.
 *
 * Not part of `npm test`: the numbers depend on the machine, targets are
 * reported, never asserted.
 */
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { CLI as TCPPROXY, ROOT } from '../test/helpers/daemon';
import { executable, INETD } from '../test/helpers/inetd';
import { freePort } from '../test/helpers/ports';
import { isListening, loadAverage, treeCpuSeconds, treeRss } from '../test/helpers/proc';
import { until } from '../test/helpers/until';
import { killAll, killAllNow, killTree, nextMessage, pinned, runPinned, sleep } from './children';
import type { LoadCmd, LoadMsg } from './load';
import {
  computeMedians,
  evaluateTargets,
  markdownTable,
  metricDefs,
  type MetricKey,
  type Sample,
  type Samples,
} from './report';
import type { UpstreamMsg } from './upstream';
import { measureStartup, startupLines, summarizeStartup, type StartupRound } from './startup';
import { ACL_PREFIXES, ACL_VARIANTS, HANDLER_VARIANTS, Instance, PROXY_VARIANTS, VARIANT_LABELS, type InstanceKind, type VariantName } from './variants';

const GIB = 1024 ** 3;
const ALL_VARIANTS: readonly VariantName[] = ['direct', 'splice', 'base', 'js', 'haproxy', 'socat', 'inetd', 'acl', 'sendproxy', 'acceptproxy'];

interface Options {
  readonly quick: boolean;
  readonly rounds: number;
  readonly iperfSeconds: number;
  readonly connSeconds: number;
  readonly connWarmupMs: number;
  readonly concurrency: number;
  /** Connections in flight for the request handler. */
  readonly handlerConcurrency: number;
  readonly rttRounds: number;
  readonly rttWarmup: number;
  readonly idle: readonly [number, number];
  readonly idleSettleMs: number;
  readonly variants: VariantName[];
  readonly proxyCpu: number;
  readonly loadCpu: number;
  readonly keepTmp: boolean;
  /** inetd start-up samples per command per round (bench/startup.ts); 0: none. */
  readonly startup: number;
  /** dist/src/bin/tcpproxy.js of another build (--base DIR), for the base variant; null: none. */
  readonly base: string | null;
}

const USAGE = `usage: npm run bench [-- options]
  --quick            short smoke run (1 round, short tests, fewer idle connections; < 60 s)
  --rounds N         rounds, interleaved (default 3; medians are reported)
  --seconds S        iperf3 and connections/s duration per test (default 5)
  --variants LIST    comma-separated subset of ${ALL_VARIANTS.join(',')}
  --idle A,B         idle connection counts (default 1000,9000)
  --proxy-cpu N      CPU for the proxies (default 0)
  --load-cpu N       CPU for upstreams and load (default 1)
  --keep-tmp         keep the temp dir (proxy logs, haproxy and inetd configs)
  --startup N        inetd start-up samples per command and round (default 30, --quick 10; 0: none)
  --base DIR         another build of tcpproxy (a built checkout), measured side by side as the
                     base variant (tcpproxy splice of DIR); in the default variants when given
`;

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      seconds: { type: 'string' },
      variants: { type: 'string' },
      idle: { type: 'string' },
      'proxy-cpu': { type: 'string' },
      'load-cpu': { type: 'string' },
      'keep-tmp': { type: 'boolean', default: false },
      startup: { type: 'string' },
      base: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const quick = values.quick === true;
  const int = (s: string | undefined, def: number, name: string): number => {
    if (s === undefined) return def;
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${name}: not a whole number: ${s}`);
    return n;
  };
  let base: string | null = null;
  if (values.base !== undefined) {
    base = path.resolve(values.base, 'dist/src/bin/tcpproxy.js');
    if (!fs.existsSync(base)) throw new Error(`--base: ${base} is missing: build that checkout first`);
  }
  const defaults = ALL_VARIANTS.filter((v) => v !== 'base' || base !== null);
  const variants = (values.variants ?? defaults.join(',')).split(',').map((v) => {
    if (!(ALL_VARIANTS as readonly string[]).includes(v)) throw new Error(`--variants: unknown variant ${v}`);
    if (v === 'base' && base === null) throw new Error('--variants: base needs --base DIR');
    return v as VariantName;
  });
  const idleList = (values.idle ?? (quick ? '100,500' : '1000,9000')).split(',').map((s) => int(s, 0, 'idle'));
  if (idleList.length !== 2 || !(idleList[0]! > 0 && idleList[1]! > idleList[0]!)) throw new Error('--idle: two increasing counts, e.g. 1000,9000');
  const cpus = os.cpus().length;
  const seconds = int(values.seconds, quick ? 1 : 5, 'seconds');
  return {
    quick,
    rounds: Math.max(1, int(values.rounds, quick ? 1 : 3, 'rounds')),
    iperfSeconds: Math.max(1, seconds),
    connSeconds: Math.max(1, seconds),
    connWarmupMs: quick ? 200 : 1000,
    concurrency: 16,
    handlerConcurrency: 8,
    rttRounds: quick ? 2000 : 10_000,
    rttWarmup: quick ? 200 : 1000,
    idle: [idleList[0]!, idleList[1]!],
    idleSettleMs: quick ? 300 : 1000,
    variants: ALL_VARIANTS.filter((v) => variants.includes(v)),
    proxyCpu: int(values['proxy-cpu'], 0, 'proxy-cpu'),
    loadCpu: int(values['load-cpu'], cpus > 1 ? 1 : 0, 'load-cpu'),
    keepTmp: values['keep-tmp'] === true,
    startup: int(values.startup, quick ? 10 : 30, 'startup'),
    base,
  };
}

const T0 = Date.now();

function log(line: string): void {
  process.stderr.write(`bench [${((Date.now() - T0) / 1000).toFixed(1)}s]: ${line}\n`);
}

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** The programs the comparisons need, by name: the Debian package that has each, and whether it is there. */
const TOOLS: Record<string, { readonly pkg: string; readonly present: () => boolean }> = {
  haproxy: { pkg: 'haproxy', present: () => have('haproxy') },
  socat: { pkg: 'socat', present: () => have('socat') },
  iperf3: { pkg: 'iperf3', present: () => have('iperf3') },
  inetd: { pkg: 'openbsd-inetd', present: () => executable(INETD) },
};

/** Installs haproxy, socat, iperf3 and openbsd-inetd with apt-get when missing (as root); says what it does. */
function ensureTools(): Record<string, boolean> {
  const missing = Object.values(TOOLS)
    .filter((t) => !t.present())
    .map((t) => t.pkg);
  if (missing.length > 0) {
    if (process.getuid?.() !== 0 || !have('apt-get')) {
      log(`${missing.join(', ')} not installed and cannot install them (needs root and apt-get): those variants/metrics are skipped`);
    } else {
      log(`${missing.join(', ')} not installed: installing with "apt-get install -y ${missing.join(' ')}"`);
      const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
      const install = (): number | null =>
        spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { stdio: ['ignore', 2, 2], env }).status;
      if (install() !== 0) {
        log('apt-get install failed: running "apt-get update" and trying again');
        spawnSync('apt-get', ['update'], { stdio: ['ignore', 2, 2], env });
        install();
      }
    }
  }
  return Object.fromEntries(Object.entries(TOOLS).map(([name, t]) => [name, t.present()]));
}

/** The installed version of a Debian package, or null. */
function packageVersion(pkg: string): string | null {
  const r = spawnSync('dpkg-query', ['-W', '-f', '${Version}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() !== '' ? `${pkg} ${r.stdout.trim()}` : null;
}

function toolVersion(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').find((l) => l.trim() !== '')?.trim() ?? '?';
}

/** The running benchmark: upstreams, instances, samples. */
class Bench {
  readonly opts: Options;
  readonly tmpDir: string;
  readonly samples = {} as Samples;
  readonly notes: string[] = [];
  echo: ChildProcess | null = null;
  echoPort = 0;
  iperfServer: ChildProcess | null = null;
  iperfPort = 0;
  readonly variants: VariantName[];
  readonly hasIperf: boolean;
  instances = new Map<string, Instance>();
  /** Proxy log lines other than per-connection records, by instance, over all rounds. */
  readonly proxyLogs: Record<string, string[]> = {};
  /** tcpproxy: connections per forwarding path (splice, copy, js) from the end records, by instance. */
  readonly forwardPaths: Record<string, Record<string, number>> = {};

  constructor(opts: Options, variants: VariantName[], hasIperf: boolean) {
    this.opts = opts;
    this.variants = variants;
    this.hasIperf = hasIperf;
    this.tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcpproxy-bench-'));
    for (const v of variants) this.samples[v] = {};
  }

  record(v: VariantName, key: MetricKey, s: Sample): void {
    (this.samples[v][key] ??= []).push(s);
  }

  note(text: string): void {
    this.notes.push(text);
    log(`NOTE: ${text}`);
  }

  // ---- upstreams -------------------------------------------------------

  async startEcho(): Promise<void> {
    this.echo = pinned(this.opts.loadCpu, process.execPath, [path.join(__dirname, 'upstream.js')], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const m = await nextMessage<Extract<UpstreamMsg, { type: 'listening' }>>(this.echo, 'listening', 10_000);
    this.echoPort = m.port;
  }

  async echoOpen(): Promise<number> {
    const echo = this.echo as ChildProcess;
    echo.send({ type: 'count' });
    return (await nextMessage<Extract<UpstreamMsg, { type: 'count' }>>(echo, 'count', 10_000)).open;
  }

  /** Waits until the echo upstream holds `want` connections (`atLeast`) or at most `want`. */
  async waitEchoOpen(want: number, atLeast: boolean, timeoutMs: number): Promise<number> {
    let n = 0;
    const enough = async (): Promise<boolean> => {
      n = await this.echoOpen();
      return atLeast ? n >= want : n <= want;
    };
    await until(enough, 'the echo upstream connections', timeoutMs).catch(() => undefined);
    return n;
  }

  async ensureIperfServer(restart = false): Promise<void> {
    if (this.iperfServer && !restart && this.iperfServer.exitCode === null && this.iperfServer.signalCode === null) return;
    if (this.iperfServer) await killTree(this.iperfServer, 1000);
    if (this.iperfPort === 0) this.iperfPort = await freePort();
    this.iperfServer = pinned(this.opts.loadCpu, 'iperf3', ['-s', '-B', '127.0.0.1', '-p', String(this.iperfPort)], { stdio: 'ignore' });
    await until(() => isListening(this.iperfPort), `the iperf3 server to listen on ${this.iperfPort}`, 10_000);
  }

  // ---- proxies -----------------------------------------------------------

  private startContext() {
    return { proxyCpu: this.opts.proxyCpu, tmpDir: this.tmpDir, tcpproxy: TCPPROXY, baseTcpproxy: this.opts.base, maxConns: this.opts.idle[1] };
  }

  /** The instances of `v`: in front of each upstream (forwarding variants), running the handler (handler variants). */
  kinds(v: VariantName): [InstanceKind, number][] {
    const out: [InstanceKind, number][] = [];
    if (PROXY_VARIANTS.includes(v)) {
      out.push(['echo', this.echoPort]);
      if (this.hasIperf) out.push(['iperf', this.iperfPort]);
    }
    if (HANDLER_VARIANTS.includes(v)) out.push(['handler', 0]);
    if (ACL_VARIANTS.includes(v)) out.push(['echo', this.echoPort]);
    return out;
  }

  async startInstances(): Promise<void> {
    this.instances.clear();
    for (const v of this.variants) {
      for (const [kind, port] of this.kinds(v)) {
        const inst = new Instance(v, kind, port);
        this.instances.set(`${v}/${kind}`, inst);
        try {
          await inst.start(this.startContext());
        } catch (err) {
          this.note(`${inst.label} (${kind}) did not start: ${(err as Error).message}`);
        }
      }
    }
  }

  async stopInstances(): Promise<void> {
    for (const [key, inst] of this.instances) {
      await inst.stop();
      this.reportEvents(key, inst);
    }
  }

  reportEvents(key: string, inst: Instance): void {
    const lines = inst.scanLog();
    (this.proxyLogs[key] ??= []).push(...lines);
    const paths = (this.forwardPaths[key] ??= {});
    for (const [p, n] of Object.entries(inst.paths)) paths[p] = (paths[p] ?? 0) + n;
    for (const p of Object.keys(inst.paths)) delete inst.paths[p];
    // socat logs a reset or broken pipe whenever iperf3 ends a test: kept in the JSON only.
    if (inst.variant === 'socat') return;
    for (const line of lines) this.note(`${key}: ${line}`);
  }

  /** The instance of `v` of `kind`, running (restarted if it died: noted). */
  async instance(v: VariantName, kind: InstanceKind): Promise<Instance | null> {
    const key = `${v}/${kind}`;
    const inst = this.instances.get(key);
    if (!inst) return null;
    this.reportEvents(key, inst);
    if (!inst.isAlive() || inst.port === 0) {
      if (inst.port !== 0) this.note(`${key}: proxy process ${inst.pid ?? '?'} is gone: restarting it`);
      await inst.stop();
      try {
        await inst.start(this.startContext());
      } catch (err) {
        this.note(`${key}: restart failed: ${(err as Error).message}`);
        return null;
      }
    }
    return inst;
  }

  /** Waits (≤ maxMs) until the proxy's CPU time stops moving: the previous test's teardown is over. */
  async settle(inst: Instance, maxMs = 3000): Promise<void> {
    const pid = inst.pid;
    if (pid === null) return sleep(100);
    const deadline = Date.now() + maxMs;
    let prev = treeCpuSeconds(pid);
    while (Date.now() < deadline) {
      await sleep(200);
      const cur = treeCpuSeconds(pid);
      if (cur - prev < 0.015) return;
      prev = cur;
    }
  }

  cpu(inst: Instance): number {
    const pid = inst.pid;
    return pid === null ? NaN : treeCpuSeconds(pid);
  }

  startLoad(): ChildProcess {
    return pinned(this.opts.loadCpu, process.execPath, [path.join(__dirname, 'load.js')], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
  }

  // ---- phases ------------------------------------------------------------

  /** One iperf3 run through `inst`; retried (3 attempts) when the proxy or the server misbehaves. */
  async iperf(v: VariantName, round: number, key: 'thrUp1' | 'thrDown1' | 'thrUp8'): Promise<{ bytes: number; cpu: number } | null> {
    const extra = key === 'thrDown1' ? ['-R'] : key === 'thrUp8' ? ['-P', '8'] : [];
    let lastError = '';
    for (let attempt = 1; attempt <= 3; attempt++) {
      const inst = await this.instance(v, 'iperf');
      if (!inst) {
        lastError = 'proxy not running';
        break;
      }
      await this.ensureIperfServer();
      await this.settle(inst);
      const args = ['-c', '127.0.0.1', '-p', String(inst.port), '-t', String(this.opts.iperfSeconds), '-J', ...extra];
      const cpu0 = this.cpu(inst);
      const r = await runPinned(this.opts.loadCpu, 'iperf3', args, (this.opts.iperfSeconds + 30) * 1000);
      const cpu1 = this.cpu(inst);
      let j: { error?: string; end?: { sum_received?: { bytes: number; bits_per_second: number; seconds: number } } } = {};
      try {
        j = JSON.parse(r.stdout) as typeof j;
      } catch {
        j = { error: `no JSON from iperf3 (exit ${r.code ?? '?'}${r.timedOut ? ', timed out' : ''}): ${r.stderr.trim().slice(0, 200)}` };
      }
      const sum = j.end?.sum_received;
      if (!j.error && sum && sum.bytes > 0) {
        const cpu = cpu1 - cpu0;
        this.record(v, key, {
          round,
          value: sum.bits_per_second / 1e9,
          detail: { bytes: sum.bytes, seconds: sum.seconds, proxyCpuS: Number.isFinite(cpu) ? cpu : null, attempt },
        });
        log(`round ${round} ${key} ${VARIANT_LABELS[v]}: ${(sum.bits_per_second / 1e9).toFixed(2)} Gbit/s${Number.isFinite(cpu) ? `, proxy CPU ${cpu.toFixed(2)} s` : ''}`);
        return { bytes: sum.bytes, cpu };
      }
      lastError = j.error ?? 'no bytes received';
      log(`round ${round} ${key} ${VARIANT_LABELS[v]}: attempt ${attempt} failed: ${lastError}`);
      // A stuck or confused iperf3 server answers "busy" forever: start a fresh one.
      await this.ensureIperfServer(true);
      await sleep(500);
    }
    this.record(v, key, { round, value: null, error: lastError });
    return null;
  }

  async throughput(v: VariantName, round: number): Promise<void> {
    let bytes = 0;
    let cpu = 0;
    const parts: Record<string, number> = {};
    for (const key of ['thrUp1', 'thrDown1', 'thrUp8'] as const) {
      const r = await this.iperf(v, round, key);
      if (r) {
        bytes += r.bytes;
        cpu += r.cpu;
        parts[key] = r.cpu / (r.bytes / GIB);
      }
    }
    this.record(v, 'gibMoved', { round, value: bytes > 0 ? bytes / GIB : null, detail: { bytes } });
    if (v !== 'direct') {
      const value = bytes > 0 && Number.isFinite(cpu) ? cpu / (bytes / GIB) : null;
      this.record(v, 'cpuPerGiB', { round, value, detail: { bytes, proxyCpuS: cpu, perTest: parts } });
    }
  }

  /**
   * Connections per second and CPU per connection: forwarding to the echo
   * upstream (16 in flight), or, with `handler`, served by /bin/cat (8 in
   * flight, the write side shut after the 64 B: cat echoes until EOF).
   */
  async connRate(v: VariantName, round: number, handler = false): Promise<void> {
    const [rateKey, cpuKey, what] = handler
      ? (['handlerConnPerSec', 'handlerCpuUsPerConn', 'handler conn/s'] as const)
      : (['connPerSec', 'cpuUsPerConn', 'conn/s'] as const);
    const inst = await this.instance(v, handler ? 'handler' : 'echo');
    if (!inst) {
      this.record(v, rateKey, { round, value: null, error: 'proxy not running' });
      return;
    }
    await this.settle(inst);
    const load = this.startLoad();
    try {
      const cmd: LoadCmd = {
        type: 'connrate',
        port: inst.port,
        durationMs: this.opts.connSeconds * 1000,
        concurrency: handler ? this.opts.handlerConcurrency : this.opts.concurrency,
        warmupMs: this.opts.connWarmupMs,
        halfClose: handler,
        proxyHeader: v === 'acceptproxy',
      };
      load.send(cmd);
      await nextMessage(load, 'ready', this.opts.connWarmupMs + 60_000);
      const cpu0 = this.cpu(inst);
      load.send({ type: 'go' } satisfies LoadCmd);
      const r = await nextMessage<Extract<LoadMsg, { type: 'connrate' }>>(load, 'connrate', this.opts.connSeconds * 1000 + 60_000);
      const cpu = this.cpu(inst) - cpu0;
      const rate = r.done / r.seconds;
      const detail = { done: r.done, errors: r.errors, seconds: r.seconds, firstError: r.firstError, proxyCpuS: cpu };
      this.record(v, rateKey, { round, value: r.done > 0 ? rate : null, detail });
      if (v !== 'direct') this.record(v, cpuKey, { round, value: r.done > 0 ? (cpu * 1e6) / r.done : null, detail });
      if (r.errors > 0) {
        this.note(`round ${round} ${what} ${VARIANT_LABELS[v]}: ${r.errors} of ${r.done + r.errors} connections failed (first: ${r.firstError ?? '?'})`);
      }
      log(
        `round ${round} ${what} ${VARIANT_LABELS[v]}: ${rate.toFixed(0)}/s` +
          `${v !== 'direct' && r.done > 0 ? `, ${((cpu * 1e6) / r.done).toFixed(1)} µs CPU/conn` : ''}` +
          `${r.errors ? `, ${r.errors} errors (${r.firstError ?? ''})` : ''}`,
      );
    } catch (err) {
      this.record(v, rateKey, { round, value: null, error: (err as Error).message });
      log(`round ${round} ${what} ${VARIANT_LABELS[v]}: failed: ${(err as Error).message}`);
    } finally {
      await killTree(load, 1000);
    }
  }

  async rtt(v: VariantName, round: number): Promise<void> {
    const inst = await this.instance(v, 'echo');
    if (!inst) {
      this.record(v, 'rttP50', { round, value: null, error: 'proxy not running' });
      return;
    }
    await this.settle(inst);
    const load = this.startLoad();
    try {
      load.send({ type: 'rtt', port: inst.port, rounds: this.opts.rttRounds, warmup: this.opts.rttWarmup } satisfies LoadCmd);
      await nextMessage(load, 'ready', 60_000);
      load.send({ type: 'go' } satisfies LoadCmd);
      const r = await nextMessage<Extract<LoadMsg, { type: 'rtt' }>>(load, 'rtt', 120_000);
      const detail = { rounds: r.rounds, meanUs: r.meanUs, error: r.error };
      this.record(v, 'rttP50', { round, value: r.error === null ? r.p50Us : null, detail });
      this.record(v, 'rttP99', { round, value: r.error === null ? r.p99Us : null, detail });
      log(
        `round ${round} rtt ${VARIANT_LABELS[v]}: ` +
          (r.error === null ? `p50 ${r.p50Us.toFixed(1)} µs, p99 ${r.p99Us.toFixed(1)} µs` : `failed: ${r.error}`),
      );
    } catch (err) {
      this.record(v, 'rttP50', { round, value: null, error: (err as Error).message });
      log(`round ${round} rtt ${VARIANT_LABELS[v]}: failed: ${(err as Error).message}`);
    } finally {
      await killTree(load, 1000);
    }
  }

  async idleRss(v: VariantName, round: number): Promise<void> {
    const inst = await this.instance(v, 'echo');
    if (!inst || inst.pid === null) {
      this.record(v, 'rss1', { round, value: null, error: 'proxy not running' });
      return;
    }
    await this.waitEchoOpen(0, false, 10_000);
    await this.settle(inst);
    await sleep(this.opts.idleSettleMs);
    const pid = inst.pid;
    const base = treeRss(pid);
    const load = this.startLoad();
    try {
      for (const [i, key] of [
        [0, 'rss1'],
        [1, 'rss2'],
      ] as const) {
        const want = this.opts.idle[i];
        const have = i === 0 ? 0 : this.opts.idle[0];
        load.send({ type: 'open', port: inst.port, n: want - have, concurrency: 64 } satisfies LoadCmd);
        const r = await nextMessage<Extract<LoadMsg, { type: 'opened' }>>(load, 'opened', 300_000);
        const upstream = await this.waitEchoOpen(r.total, true, 10_000);
        await this.settle(inst);
        await sleep(this.opts.idleSettleMs);
        const rss = treeRss(pid);
        const value = r.total > 0 && inst.isAlive() ? (rss.kib - base.kib) / r.total : null;
        const detail = {
          wanted: want,
          open: r.total,
          failed: r.failed,
          lostSinceOpen: r.lost,
          firstError: r.firstError,
          upstreamOpen: upstream,
          baseKiB: base.kib,
          rssKiB: rss.kib,
          basePssKiB: base.pssKib,
          pssKiB: rss.pssKib,
          pssPerConnKiB: r.total > 0 ? (rss.pssKib - base.pssKib) / r.total : null,
          processes: rss.procs,
        };
        const short = r.total < want ? ` (only ${r.total} of ${want} open: ${r.failed} failed, first error ${r.firstError ?? '?'})` : '';
        this.record(v, key, { round, value, detail, ...(short ? { error: short.trim() } : {}) });
        if (short) this.note(`round ${round} ${VARIANT_LABELS[v]}: idle connections${short}`);
        log(
          `round ${round} idle ${want} ${VARIANT_LABELS[v]}: RSS ${base.kib} → ${rss.kib} KiB in ${rss.procs} process(es)` +
            `${value !== null ? `, ${value.toFixed(2)} KiB/conn (PSS ${((rss.pssKib - base.pssKib) / r.total).toFixed(2)})` : ''}`,
        );
      }
      load.send({ type: 'close' } satisfies LoadCmd);
      await nextMessage(load, 'closed', 30_000);
    } catch (err) {
      this.record(v, 'rss1', { round, value: null, error: (err as Error).message });
      log(`round ${round} idle ${VARIANT_LABELS[v]}: failed: ${(err as Error).message}`);
    } finally {
      await killTree(load, 1000);
    }
    const left = await this.waitEchoOpen(0, false, 30_000);
    if (left > 0) this.note(`round ${round} ${VARIANT_LABELS[v]}: ${left} upstream connections still open 30 s after the clients closed`);
  }
}

/**
 * The cost of an access list and of the PROXY protocol: the connection rate
 * of the acl, sendproxy and acceptproxy variants against plain splice,
 * measured in the same rounds (target for each: at most 5 % less).
 */
function costLines(med: ReturnType<typeof computeMedians>, variants: readonly VariantName[]): string[] {
  if (!variants.includes('splice')) return [];
  const s = med.splice?.connPerSec?.value ?? null;
  const what: Record<string, string> = {
    acl: `Access list cost: tcpproxy splice with a ${ACL_PREFIXES}-prefix allow list (the client's prefix last)`,
    sendproxy: 'PROXY protocol cost: tcpproxy splice writing a send-proxy v2 header to the upstream',
    acceptproxy: 'PROXY protocol cost: tcpproxy splice reading an accept-proxy v2 header from the client',
  };
  const out: string[] = [];
  for (const v of ACL_VARIANTS) {
    if (!variants.includes(v)) continue;
    const a = med[v]?.connPerSec?.value ?? null;
    if (a === null || s === null || s === 0) {
      out.push(`${what[v] ?? v}: not measured (a run failed).`);
      continue;
    }
    const ratio = a / s;
    out.push(
      `${what[v] ?? v}: ${a.toFixed(0)} conn/s, plain ${s.toFixed(0)} conn/s: ${ratio.toFixed(3)}× ` +
        `(target ≥ 0.95×: ${ratio >= 0.95 ? 'met' : '**missed**'}).`,
    );
  }
  return out.length > 0 ? [...out, ''] : [];
}

function rotate<T>(xs: readonly T[], by: number): T[] {
  const k = xs.length === 0 ? 0 : by % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

function stamp(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let opts: Options;
  try {
    opts = parseOptions(argv);
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const command = `cd ${ROOT} && npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`;
  const startedAt = new Date();
  const loadStart = loadAverage();
  log(`reproduce: ${command}`);
  log(`load average at start: ${loadStart}`);
  if (!fs.existsSync(TCPPROXY)) {
    log(`${TCPPROXY} missing: build first (npm run compile)`);
    return 1;
  }
  const cpus = os.cpus().length;
  if (cpus < 2 || opts.proxyCpu === opts.loadCpu) log(`WARNING: ${cpus} CPU(s): proxy and load share CPU ${opts.proxyCpu}`);
  // This process only waits and reads /proc: keep it off the proxy's CPU.
  spawnSync('taskset', ['-a', '-c', '-p', String(opts.loadCpu), String(process.pid)], { stdio: 'ignore' });

  const tools = ensureTools();
  let variants = opts.variants;
  for (const [v, tool] of [
    ['haproxy', 'haproxy'],
    ['socat', 'socat'],
    ['inetd', 'inetd'],
  ] as const) {
    if (variants.includes(v) && !tools[tool]) {
      log(`${tool} not available: variant ${v} skipped`);
      variants = variants.filter((x) => x !== v);
    }
  }
  if (variants.includes('inetd') && process.getuid?.() !== 0) {
    log('openbsd-inetd needs root (its service runs as nobody, in a mount namespace of its own): variant inetd skipped');
    variants = variants.filter((x) => x !== 'inetd');
  }
  if (!tools['iperf3']) log('iperf3 not available: throughput and CPU per GiB skipped');

  const bench = new Bench(opts, variants, tools['iperf3'] === true);
  if (!opts.keepTmp) tmpDirToRemove = bench.tmpDir;
  const defs = metricDefs(opts.idle, opts.concurrency, opts.handlerConcurrency);
  const startup: StartupRound[] = [];
  try {
    await bench.startEcho();
    if (bench.hasIperf) await bench.ensureIperfServer();
    log(
      `variants: ${variants.map((v) => VARIANT_LABELS[v]).join(', ')}; ${opts.rounds} round(s); proxies on CPU ${opts.proxyCpu}, ` +
        `load on CPU ${opts.loadCpu}; echo upstream :${bench.echoPort}${bench.hasIperf ? `, iperf3 upstream :${bench.iperfPort}` : ''}`,
    );
    for (let round = 1; round <= opts.rounds; round++) {
      const order = rotate(variants, round - 1);
      log(`round ${round}/${opts.rounds}: order ${order.join(', ')}; load average ${loadAverage()}`);
      await bench.startInstances();
      const forwarding = order.filter((v) => PROXY_VARIANTS.includes(v));
      const handlers = order.filter((v) => HANDLER_VARIANTS.includes(v));
      try {
        for (const v of forwarding) if (v !== 'direct') await bench.idleRss(v, round);
        if (bench.hasIperf) for (const v of forwarding) await bench.throughput(v, round);
        for (const v of forwarding) await bench.connRate(v, round);
        for (const v of order.filter((x) => ACL_VARIANTS.includes(x))) await bench.connRate(v, round);
        for (const v of handlers) await bench.connRate(v, round, true);
        for (const v of forwarding) await bench.rtt(v, round);
        if (opts.startup > 0) {
          log(`inetd start-up: ${opts.startup} samples each of node -e 0 and tcpproxy`);
          startup.push(await measureStartup({ tcpproxy: TCPPROXY, echoPort: bench.echoPort, cpu: opts.proxyCpu, samples: opts.startup }));
        }
      } finally {
        await bench.stopInstances();
      }
    }
  } finally {
    await killAll();
  }

  for (const [key, paths] of Object.entries(bench.forwardPaths)) {
    const [engine, kind] = key.split('/');
    // The acl, PROXY and base variants run the splice engine, which ends small sessions on copy (splice-auto).
    const spliceEngine = engine === 'splice' || engine === 'base' || ACL_VARIANTS.includes(engine as VariantName);
    const usual = kind === 'handler' ? ['handler exit 0'] : spliceEngine ? ['splice', 'copy'] : [engine];
    const other = Object.entries(paths).filter(([p]) => !usual.includes(p));
    if (other.length === 0) continue;
    const list = other.map(([p, n]) => `${n} ${kind === 'handler' ? `ended ${p}` : `on ${p}`}`).join(', ');
    bench.note(kind === 'handler' ? `${key}: handler connections that did not end with exit 0: ${list}` : `${key}: connections not forwarded by ${engine}: ${list}`);
  }
  const startupSummary = startup.length > 0 ? summarizeStartup(startup) : null;
  const medians = computeMedians(bench.samples, variants, defs);
  const targets = evaluateTargets(defs, medians, variants);
  const table = markdownTable(defs, medians, variants, targets, opts.rounds);
  const loadEnd = loadAverage();
  const endedAt = new Date();
  const out = [
    '',
    `## tcpproxy benchmark, ${endedAt.toISOString()}`,
    '',
    `Medians of ${opts.rounds} interleaved round(s); ×d = ratio to direct (no proxy), ×h = ratio to haproxy, ×i = ratio to openbsd-inetd.`,
    'tcpproxy logs every connection (`-D`: two lines each to stderr and syslog); haproxy and openbsd-inetd log nothing.',
    `Proxies pinned to CPU ${opts.proxyCpu}, upstreams and load to CPU ${opts.loadCpu}; ${os.cpus()[0]?.model ?? '?'}, ${cpus} CPUs, Linux ${os.release()}, Node ${process.version}.`,
    `Load average at start ${loadStart}, at end ${loadEnd}.`,
    '',
    table,
    '',
    ...costLines(medians, variants),
    ...(startupSummary === null ? [] : startupLines(startupSummary)),
  ];
  if (bench.notes.length > 0) {
    out.push('Notes:', '');
    const seen = new Map<string, number>();
    for (const n of bench.notes) seen.set(n, (seen.get(n) ?? 0) + 1);
    for (const [n, c] of seen) out.push(`- ${n}${c > 1 ? ` (×${c})` : ''}`);
    out.push('');
  }
  out.push(`Reproduce: \`${command}\``);
  process.stdout.write(`${out.join('\n')}\n`);

  const dir = path.join(ROOT, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `bench-${stamp(startedAt)}${opts.quick ? '-quick' : ''}.json`);
  const json = {
    command,
    startedAt: startedAt.toISOString(),
    endedAt: endedAt.toISOString(),
    loadAverage: { start: loadStart, end: loadEnd },
    machine: {
      cpu: os.cpus()[0]?.model ?? '?',
      cpus,
      kernel: os.release(),
      node: process.version,
      haproxy: tools['haproxy'] ? toolVersion('haproxy', ['-v']) : null,
      socat: tools['socat'] ? toolVersion('socat', ['-V']).replace(/^.*?socat/, 'socat') : null,
      iperf3: tools['iperf3'] ? toolVersion('iperf3', ['--version']) : null,
      inetd: tools['inetd'] ? packageVersion('openbsd-inetd') : null,
      git: (() => {
        try {
          return execFileSync('git', ['-C', ROOT, 'rev-parse', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
        } catch {
          return null;
        }
      })(),
    },
    options: opts,
    variants,
    units: Object.fromEntries(defs.map((d) => [d.key, { label: d.label, unit: d.unit, target: d.target ?? null }])),
    samples: bench.samples,
    medians,
    targets,
    notes: bench.notes,
    proxyLogs: bench.proxyLogs,
    forwardPaths: bench.forwardPaths,
    startup: startupSummary === null ? null : { summary: startupSummary, rounds: startup },
    table,
  };
  fs.writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`);
  log(`raw numbers: ${path.relative(process.cwd(), file)}`);
  log(`load average at end: ${loadEnd}`);
  if (opts.keepTmp) log(`temp dir kept: ${bench.tmpDir}`);
  return 0;
}

/** The temp dir (proxy logs, haproxy config), removed at exit however the run ends, unless --keep-tmp. */
let tmpDirToRemove: string | null = null;

process.on('exit', () => {
  killAllNow();
  if (tmpDirToRemove !== null) fs.rmSync(tmpDirToRemove, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    log(`${sig}: stopping everything started`);
    killAllNow();
    process.exit(130);
  });
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    killAllNow();
    process.exitCode = 1;
  },
);
