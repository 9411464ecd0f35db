/**
 * Runs the built CLI (package.json bin: dist/src/tcpproxy.js). startProxy() keeps a daemon in the
 * foreground (-D) and waits for its `tcpproxy: listening on ADDR` lines;
 * runCli() runs it once, bounded. Every process started here is tracked, and
 * killLeftovers() ends the ones still running, with their descendants (a
 * daemon's workers). Processes stay in the test runner's process group, so a
 * harness that kills the group (timeout(1)) takes them too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { until } from './until';

export const ROOT = path.resolve(__dirname, '../..');

/**
 * The built command: package.json's `bin.tcpproxy` (dist/src/tcpproxy.js).
 * Not dist/src/cli.js, which is the pure argv parser and runs nothing.
 */
function binPath(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin?: Record<string, string> };
  return path.join(ROOT, pkg.bin?.['tcpproxy'] ?? 'dist/src/tcpproxy.js');
}
export const CLI = binPath();

/** The forwarding engines; the proxy picks one from TCPPROXY_ENGINE. */
export const ENGINES = ['js', 'splice'] as const;
export type Engine = (typeof ENGINES)[number];

export interface ListenAddress {
  /** IP literal without brackets, or '*' for the wildcard. */
  readonly host: string;
  readonly port: number;
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
}

export interface Proxy {
  readonly child: ChildProcess;
  readonly pid: number;
  /** From the `listening on` lines, in the order they were printed. */
  readonly addresses: ListenAddress[];
  readonly stdout: () => string;
  readonly stderr: () => string;
  /** Null while running. */
  readonly exit: () => Exit | null;
  /**
   * SIGTERM, then wait for exit; after `graceMs` SIGKILL. Descendants still
   * alive once it has exited are SIGKILLed too.
   */
  stop(graceMs?: number): Promise<Exit>;
}

const live = new Set<ChildProcess>();

/** The pids below `pid` in the process tree, read from /proc (Linux). */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(name)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold blanks and parentheses.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(name));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const queue = [pid];
  for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

function signal(pids: readonly number[], sig: NodeJS.Signals): void {
  for (const p of pids) {
    try {
      process.kill(p, sig);
    } catch {
      // ESRCH: already gone
    }
  }
}

/** Still running (not a zombie) and still one of ours: its command line runs from ROOT. */
function isAlive(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(ROOT);
  } catch {
    return false;
  }
}

/** `child` and everything below it, SIGKILLed. */
function killTree(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  signal([child.pid, ...descendants(child.pid)], 'SIGKILL');
}

/** SIGKILLs every process started here that is still running, with its descendants. */
export function killLeftovers(): void {
  for (const child of live) killTree(child);
  live.clear();
}

/** Fails with the fix when the CLI has not been built. */
export function assertBuilt(): void {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: build it with "npx tsc -p tsconfig.build.json"`);
}

interface Running {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exit: () => Exit | null;
  /** The process has exited (its pipes may still be open in a descendant). */
  gone: Promise<void>;
  /** The process has exited and stdout/stderr are drained. */
  exited: Promise<Exit>;
}

function launch(args: readonly string[], env: NodeJS.ProcessEnv | undefined, input?: string): Running {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  live.add(child);
  let out = '';
  let err = '';
  let exit: Exit | null = null;
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (err += s));
  if (input !== undefined) child.stdin?.end(input);
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const exited = new Promise<Exit>((resolve) => {
    child.on('error', (e) => {
      err += `spawn failed: ${e.message}\n`;
    });
    // 'close': the process has exited and its stdout/stderr are drained.
    child.on('close', (code, signal) => {
      live.delete(child);
      exit = { code, signal, stderr: err };
      resolve(exit);
    });
  });
  return { child, out: () => out, err: () => err, exit: () => exit, gone, exited };
}

const LISTENING = /^tcpproxy: listening on (\S+)\s*$/gm;

/** `127.0.0.1:41234`, `[::1]:41234`, `*:41234` → host and port. */
export function parseListenAddress(text: string): ListenAddress {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|(\*|[0-9.]+)):([0-9]+)$/.exec(text);
  if (m === null) throw new Error(`unexpected address in "listening on" line: ${text}`);
  return { host: m[1] ?? m[2] ?? '', port: Number(m[3]) };
}

function listeningLines(stderr: string): string[] {
  return [...stderr.matchAll(LISTENING)].map((m) => m[1] ?? '');
}

/**
 * Starts `tcpproxy -D ...args` and resolves once it has printed `listeners`
 * `listening on` lines. Fails (and kills it) if it exits first or takes
 * longer than `timeoutMs`.
 */
export async function startProxy(
  args: readonly string[],
  env?: NodeJS.ProcessEnv,
  listeners = 1,
  timeoutMs = 10000,
): Promise<Proxy> {
  assertBuilt();
  const argv = args.includes('-D') ? [...args] : ['-D', ...args];
  const r = launch(argv, env);
  try {
    await until(
      () => listeningLines(r.err()).length >= listeners || r.exit() !== null,
      `${listeners} "listening on" line(s) from tcpproxy ${argv.join(' ')}`,
      timeoutMs,
    );
  } catch (e) {
    killTree(r.child);
    throw new Error(`${(e as Error).message}; stderr so far:\n${r.err()}`);
  }
  const ended = r.exit();
  if (ended !== null) {
    throw new Error(
      `tcpproxy ${argv.join(' ')} exited before listening (code ${ended.code}, signal ${ended.signal}):\n${ended.stderr}`,
    );
  }
  const addresses = listeningLines(r.err()).map(parseListenAddress);
  const pid = r.child.pid;
  if (pid === undefined) throw new Error('tcpproxy has no pid');
  return {
    child: r.child,
    pid,
    addresses,
    stdout: r.out,
    stderr: r.err,
    exit: r.exit,
    async stop(graceMs = 5000): Promise<Exit> {
      const done = r.exit();
      if (done !== null) return done;
      // Its workers, known now: once it has exited they would belong to init.
      const below = descendants(pid);
      r.child.kill('SIGTERM');
      const timer = setTimeout(() => killTree(r.child), graceMs);
      await r.gone;
      clearTimeout(timer);
      // A worker that outlived it would also hold its stderr open.
      signal(below.filter(isAlive), 'SIGKILL');
      return r.exited;
    },
  };
}

/**
 * Starts a proxy, runs `body` with it and stops it. A failure inside `body`
 * gets the proxy's stderr appended to its message (the proxy is left for
 * killLeftovers()).
 */
export async function withProxy(
  args: readonly string[],
  opts: { readonly env?: NodeJS.ProcessEnv; readonly listeners?: number },
  body: (proxy: Proxy) => Promise<void>,
): Promise<void> {
  const proxy = await startProxy(args, opts.env, opts.listeners ?? 1);
  try {
    await body(proxy);
  } catch (err) {
    if (err instanceof Error) err.message += `\n--- tcpproxy ${args.join(' ')}: stderr ---\n${proxy.stderr()}`;
    throw err;
  }
  await proxy.stop();
}

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** Written to stdin, which is then closed; default: stdin is /dev/null. */
  readonly input?: string;
  /** The process is SIGKILLed (with its descendants) after this long; default 10000 ms. */
  readonly timeoutMs?: number;
}

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** True if it had to be killed at the deadline. */
  readonly timedOut: boolean;
}

/** Runs `tcpproxy ...args` to completion (bounded) and returns its exit status and output. */
export async function runCli(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  assertBuilt();
  const r = launch(args, opts.env, opts.input);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killTree(r.child);
  }, opts.timeoutMs ?? 10000);
  const exit = await r.exited;
  clearTimeout(timer);
  return { code: exit.code, signal: exit.signal, stdout: r.out(), stderr: exit.stderr, timedOut };
}
