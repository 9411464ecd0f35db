/**
 * The one launcher of the tests and bench/: every process they start (the
 * built CLI, package.json bin: dist/src/bin/tcpproxy.js, the bundle, or inetd, a launcher,
 * a command run to its end) goes through launch(), which records its output
 * and exit and tracks it until it has exited; killLaunched() (part of
 * helpers/setup cleanUpAfterEach) ends what still runs, with its process
 * tree (helpers/kill). On top of it:
 *
 * - startDaemon(): `tcpproxy -D` with exactly the environment given,
 *   optionally under a private mount namespace with a syslog sink mounted
 *   over /dev/log, optionally with an extra inherited descriptor, resolved
 *   once its `listening on` lines are out; startProxy() is the same with the
 *   test's environment merged in, in the test runner's process group (so a
 *   harness that kills the group, timeout(1), takes it too).
 * - runCli() and runToExit(): run once, bounded.
 * - tcpproxy's log lines: the ready workers, a line matching a pattern.
 *
 * Jest-free: bench/ imports it too.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';
import { killGroup, killTree, snapshotTree } from './kill';
import { until } from './until';

/** The repository: the nearest directory above this file with a package.json (also from dist/test/helpers). */
export const ROOT = ((): string => {
  for (let d = __dirname; d !== path.dirname(d); d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json'))) return d;
  }
  throw new Error(`no package.json above ${__dirname}`);
})();

/**
 * The built command: package.json's `bin.tcpproxy` (dist/src/bin/tcpproxy.js, one file: scripts/bundle.mjs).
 * Not dist/src/table/cli.js, which is the pure argv parser and runs nothing.
 */
export const CLI = ((): string => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin?: Record<string, string> };
  return path.join(ROOT, pkg.bin?.['tcpproxy'] ?? 'dist/src/bin/tcpproxy.js');
})();

/** The forwarding engines; the proxy picks one from TCPPROXY_ENGINE. */
export const ENGINES = ['js', 'splice'] as const;
export type Engine = (typeof ENGINES)[number];
/**
 * The path an end line names for a session of small messages (a few KiB,
 * no stream): the splice engine's splice-auto copies them (no pipe), the js
 * engine is js.
 */
export function smallPath(engine: Engine): 'copy' | 'js' {
  return engine === 'splice' ? 'copy' : 'js';
}

/** Fails with the fix when the CLI has not been built. */
export function assertBuilt(): void {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: build it with "npx tsc -p tsconfig.build.json"`);
}

/** The first executable called `name` on PATH, or null. */
export function onPath(name: string): string | null {
  for (const dir of (process.env['PATH'] ?? '').split(':')) {
    if (dir === '') continue;
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return file;
    } catch {
      // not here
    }
  }
  return null;
}

/** Absolute path of a program: on PATH, else in the usual system directories; throws when there is none. */
export function which(name: string): string {
  const found = onPath(name);
  if (found !== null) return found;
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    const file = path.join(dir, name);
    if (fs.existsSync(file)) return file;
  }
  throw new Error(`${name} not found in PATH`);
}

// ------------------------------------------------------------------ launch

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** What stop() and wait() return when the process could not be seen to exit (it escaped every kill). */
const STILL_RUNNING: Exit = { code: null, signal: null };

export type Stdio = 'ignore' | 'pipe' | 'inherit' | number | net.Socket;

export interface LaunchOptions {
  /** The whole environment of the process: nothing is merged in. Default: this process's. */
  readonly env?: NodeJS.ProcessEnv;
  /** Default: the repository root. */
  readonly cwd?: string;
  /** Default: stdin /dev/null (a pipe with `input`), stdout and stderr pipes. */
  readonly stdio?: readonly Stdio[];
  /** Written to stdin, which is then closed. */
  readonly input?: string;
  /** A process group of its own (setsid): signalled as a whole, and whatever is left in it is killed at its exit. */
  readonly detached?: boolean;
  /** Run as this user and group (root only). */
  readonly uid?: number;
  readonly gid?: number;
  /** Keep the output for stdout()/stderr(); default true (off for a long benchmark). */
  readonly keepOutput?: boolean;
  /** stderr also goes to stdout(), in the order it came. */
  readonly together?: boolean;
  /** Called with each chunk of stderr as it arrives, the whole stderr so far, and the process. */
  readonly onStderr?: (chunk: string, all: string, child: ChildProcess) => void;
  /**
   * Called before it is killed (stop, killLaunched), for processes it started
   * outside its tree's reach (inetd puts each service in a session of its own).
   */
  readonly beforeKill?: (pid: number) => void;
}

export interface Launched {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly argv: readonly string[];
  readonly stdout: () => string;
  readonly stderr: () => string;
  /** Null while running. */
  readonly exit: () => Exit | null;
  /** The process has exited (its pipes may still be open in a descendant). */
  readonly gone: Promise<void>;
  /** The process has exited and its stdout/stderr are drained. */
  readonly exited: Promise<Exit>;
  /** Resolves at exit; kills the tree if that takes longer than `timeoutMs`. */
  wait(timeoutMs?: number): Promise<Exit>;
  /**
   * SIGTERM, then the exit status; after `graceMs` the tree is SIGKILLed.
   * Descendants still alive once it has exited (workers) are SIGKILLed too.
   */
  stop(graceMs?: number): Promise<Exit>;
  /** SIGKILLs it and its tree now. */
  kill(): void;
}

const launched = new Set<Launched>();

/** Stops waiting after `ms` (a process that escaped every kill must not hang the suite). */
function bounded<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(fallback), ms);
    timer.unref();
    void p.then((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

/** Starts `argv` (argv[0] the program), recording its output and exit; tracked until it has exited. */
export function launch(argv: readonly string[], opts: LaunchOptions = {}): Launched {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error('launch: empty argv');
  const stdio = opts.stdio ?? [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'];
  const child = spawn(file, args, {
    cwd: opts.cwd ?? ROOT,
    env: opts.env ?? process.env,
    stdio: stdio as StdioOptions,
    detached: opts.detached === true,
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
  });
  const keep = opts.keepOutput !== false;
  let out = '';
  let err = '';
  let exit: Exit | null = null;
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    if (keep) out += s;
  });
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (keep) err += s;
    if (keep && opts.together === true) out += s;
    opts.onStderr?.(s, err, child);
  });
  if (opts.input !== undefined) child.stdin?.end(opts.input);
  child.on('error', (e) => {
    err += `spawn failed: ${e.message}\n`;
    if (opts.together === true) out += `spawn failed: ${e.message}\n`;
  });
  const gone = new Promise<void>((resolve) => {
    child.once('exit', () => {
      // Anything left in its group once it has exited is killed: nothing outlives what a test started.
      if (opts.detached === true && child.pid !== undefined) killGroup(child.pid);
      resolve();
    });
    child.once('error', () => resolve());
  });
  const exited = new Promise<Exit>((resolve) => {
    // 'close': exited and its stdout/stderr drained, so what it printed is all there.
    child.on('close', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
  });
  const pid = child.pid ?? 0;
  const killNow = (): void => {
    opts.beforeKill?.(pid);
    if (pid !== 0) killTree(pid);
  };
  const self: Launched = {
    child,
    pid,
    argv,
    stdout: () => out,
    stderr: () => err,
    exit: () => exit,
    gone,
    exited,
    kill: killNow,
    async wait(timeoutMs = 10000): Promise<Exit> {
      const timer = setTimeout(killNow, timeoutMs);
      try {
        return await bounded(exited, timeoutMs + 5000, STILL_RUNNING);
      } finally {
        clearTimeout(timer);
      }
    },
    async stop(graceMs = 5000): Promise<Exit> {
      if (exit !== null) return exit;
      opts.beforeKill?.(pid);
      // Its workers, known now: once it has exited they would belong to init.
      const below = snapshotTree(pid);
      child.kill('SIGTERM');
      const timer = setTimeout(killNow, graceMs);
      await bounded(gone, graceMs + 5000, undefined);
      clearTimeout(timer);
      // A worker that outlived it would also hold its stderr open.
      killTree(pid, below);
      return bounded(exited, 5000, STILL_RUNNING);
    },
  };
  if (child.pid === undefined) {
    // spawn failed (ENOENT...): 'error' and 'close' follow; nothing to track.
    return self;
  }
  launched.add(self);
  void exited.then(() => launched.delete(self));
  return self;
}

/** SIGKILLs every process started through launch() that still runs, with its tree, and waits (bounded) for their exits. */
export async function killLaunched(): Promise<void> {
  const running = [...launched];
  launched.clear();
  for (const l of running) l.kill();
  await Promise.all(running.map((l) => bounded(l.exited, 5000, STILL_RUNNING)));
}

// ------------------------------------------------------------ run to exit

/** What a command run to its exit did. */
export interface Ran {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  /** With a note of a failed spawn or of the kill at the deadline. */
  readonly stderr: string;
}

export interface RunResult extends Ran {
  /** True if it had to be killed at the deadline. */
  readonly timedOut: boolean;
}

export interface RunToExitOptions extends Omit<LaunchOptions, 'stdio' | 'detached' | 'keepOutput' | 'onStderr' | 'beforeKill'> {
  /** Default 10000 ms: then it is killed with its tree (`[killed after N ms]` added to stderr). */
  readonly timeoutMs?: number;
}

async function run(argv: readonly string[], opts: RunToExitOptions, noteKill: boolean): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 10000;
  const r = launch(argv, opts);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    r.kill();
  }, timeoutMs);
  const exit = await r.exited;
  clearTimeout(timer);
  const note = timedOut && noteKill ? `\n[killed after ${timeoutMs} ms]` : '';
  if (opts.together === true) return { ...exit, stdout: r.stdout() + note, stderr: '', timedOut };
  return { ...exit, stdout: r.stdout(), stderr: r.stderr() + note, timedOut };
}

/** Runs `argv` to its exit, bounded, stdin /dev/null unless `input`; its exit status and output. */
export async function runToExit(argv: readonly string[], opts: RunToExitOptions = {}): Promise<Ran> {
  const { code, signal, stdout, stderr } = await run(argv, opts, true);
  return { code, signal, stdout, stderr };
}

/** Runs `tcpproxy ...args` (the test's environment plus `env`) to its exit, bounded. */
export async function runCli(
  args: readonly string[],
  opts: { readonly env?: NodeJS.ProcessEnv; readonly input?: string; readonly timeoutMs?: number } = {},
): Promise<RunResult> {
  assertBuilt();
  return run(
    [process.execPath, CLI, ...args],
    {
      env: { ...process.env, ...opts.env },
      ...(opts.input !== undefined ? { input: opts.input } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    },
    false, // its callers read timedOut
  );
}

// ------------------------------------------------------------------ daemons

export interface ListenAddress {
  /** IP literal without brackets, or '*' for the wildcard. */
  readonly host: string;
  readonly port: number;
}

/** `127.0.0.1:41234`, `[::1]:41234`, `*:41234` → host and port. */
export function parseListenAddress(text: string): ListenAddress {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|(\*|[0-9.]+)):([0-9]+)$/.exec(text);
  if (m === null) throw new Error(`unexpected address in "listening on" line: ${text}`);
  return { host: m[1] ?? m[2] ?? '', port: Number(m[3]) };
}

/** The addresses of tcpproxy's `listening on` lines, in order. */
function listeningLines(stderr: string): string[] {
  return [...stderr.matchAll(/^\S+Z tcpproxy: listening on (\S+)\s*$/gm)].map((m) => m[1] ?? '');
}

export const DEV_LOG = '/dev/log';

/** The descriptor of DaemonOptions.inheritFile in tcpproxy. */
export const INHERITED_FD = 20;

export interface DaemonOptions {
  /** tcpproxy's arguments; -D is added when missing. */
  readonly args: readonly string[];
  /** The built command to run (default CLI; a copy from packageWithWorker). */
  readonly cli?: string;
  /** Exactly the environment tcpproxy starts with: nothing is merged in. Default: this process's. */
  readonly env?: NodeJS.ProcessEnv;
  /** Default: the repository root. */
  readonly cwd?: string;
  /** Default true: a process group of its own (see LaunchOptions.detached). */
  readonly detached?: boolean;
  /** Programs in front of node (e.g. `prlimit --nofile=256:256`): each must exec the next under the same pid. */
  readonly wrapper?: readonly string[];
  /** A bind-mount sink (helpers/syslog): tcpproxy runs under `unshare -m` with it mounted over /dev/log. */
  readonly syslog?: { readonly mode: string; readonly socketPath: string };
  /**
   * Start tcpproxy with this file open on fd INHERITED_FD, not close-on-exec,
   * as a careless parent (a shell redirection, a service manager) would leave
   * it. (Measured: Node 20 itself marks fds 3-16 close-on-exec at start, so
   * the fd is above those.)
   */
  readonly inheritFile?: string;
  readonly onStderr?: LaunchOptions['onStderr'];
  /** Keep the output (default true). */
  readonly keepOutput?: boolean;
  /** `listening on` lines to wait for; default 1. */
  readonly listeners?: number;
  readonly timeoutMs?: number;
}

export interface Daemon extends Launched {
  /** From the `listening on` lines, in the order they were printed. */
  readonly addresses: ListenAddress[];
}

/**
 * python3 program: makes a new pseudo-terminal the controlling terminal of
 * its session (it must lead one: start it detached), then runs argv[2...]:
 * `exec` in place (same pid; the master side stays open on fd 30 of the
 * program, so the terminal lives as long as it does), or `fork` (argv[1]):
 * as its child, in its session and process group but leading neither, the
 * wrapper holding the master and exiting with the child's status.
 */
const TERMINAL_WRAPPER = `
import fcntl, os, sys, termios
master, slave = os.openpty()
fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
os.close(slave)
if sys.argv[1] == 'exec':
    os.dup2(master, 30, inheritable=True)
    os.execv(sys.argv[2], sys.argv[2:])
pid = os.fork()
if pid == 0:
    os.close(master)
    os.execv(sys.argv[2], sys.argv[2:])
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) & 0xff)
`;

/** A wrapper (DaemonOptions.wrapper) that gives what it runs a controlling terminal (see TERMINAL_WRAPPER). */
export function terminalWrapper(how: 'exec' | 'fork'): string[] {
  const python = onPath('python3');
  if (python === null) throw new Error('python3 is not on PATH: the terminal wrapper needs it');
  return [python, '-c', TERMINAL_WRAPPER, how];
}

/** The argv that starts tcpproxy with `args`: directly, or under `unshare -m` with `syslog` mounted over /dev/log. */
export function tcpproxyArgv(args: readonly string[], syslog: DaemonOptions['syslog'], cli = CLI): string[] {
  if (syslog === undefined) return [process.execPath, cli, ...args];
  if (syslog.mode !== 'bind-mount') throw new Error('startDaemon: only a bind-mount sink needs a mount namespace');
  if (!fs.existsSync(DEV_LOG)) throw new Error(`startDaemon: ${DEV_LOG} must exist to be mounted over`);
  return [
    which('unshare'),
    '-m',
    '--propagation',
    'private',
    '--',
    '/bin/sh',
    '-c',
    `${which('mount')} --bind "$0" ${DEV_LOG} && exec "$@"`,
    syslog.socketPath,
    process.execPath,
    cli,
    ...args,
  ];
}

/**
 * A copy of the built package in `dir` (package.json, dist/src, the addon)
 * whose worker module is `worker` (a CommonJS file; the real one is next to
 * it as real-worker.js, with runWorker exported): the master of that copy
 * forks it as it forks its workers. For tests of what the master does with
 * a worker that misbehaves; tcpproxy itself has no switch for this. Returns
 * the copy's CLI.
 */
export function packageWithWorker(dir: string, worker: string): string {
  assertBuilt();
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  fs.cpSync(path.join(ROOT, 'dist', 'src'), path.join(dir, 'dist', 'src'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'build', 'Release'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'build', 'Release', 'tcpproxy.node'), path.join(dir, 'build', 'Release', 'tcpproxy.node'));
  const proc = path.join(dir, 'dist', 'src', 'process');
  fs.renameSync(path.join(proc, 'worker.js'), path.join(proc, 'real-worker.js'));
  fs.copyFileSync(worker, path.join(proc, 'worker.js'));
  return path.join(dir, path.relative(ROOT, CLI));
}

/**
 * Starts `tcpproxy -D ...args` and resolves once it has printed `listeners`
 * `listening on` lines (its pid is tcpproxy's, the master's: also under
 * unshare, sh or a wrapper, which exec it). Fails (and kills it) if it exits
 * first or takes longer than `timeoutMs`.
 */
export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  assertBuilt();
  const args = opts.args.includes('-D') ? [...opts.args] : ['-D', ...opts.args];
  const argv = [...(opts.wrapper ?? []), ...tcpproxyArgv(args, opts.syslog, opts.cli)];
  const stdio: Stdio[] = ['ignore', 'pipe', 'pipe'];
  let inherited: number | null = null;
  if (opts.inheritFile !== undefined) {
    inherited = fs.openSync(opts.inheritFile, 'r');
    while (stdio.length < INHERITED_FD) stdio.push('ignore');
    stdio.push(inherited);
  }
  let d: Launched;
  let heard = '';
  const keep = opts.keepOutput !== false;
  try {
    d = launch(argv, {
      ...(opts.env !== undefined ? { env: { ...opts.env } } : {}),
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
      detached: opts.detached !== false,
      stdio,
      keepOutput: keep,
      onStderr: (chunk, all, child) => {
        // Without kept output: the lines up to the listening ones, for the wait below.
        if (!keep && listeningLines(heard).length < (opts.listeners ?? 1)) heard += chunk;
        opts.onStderr?.(chunk, all, child);
      },
    });
  } finally {
    if (inherited !== null) fs.closeSync(inherited);
  }
  const err = (): string => (keep ? d.stderr() : heard);
  const listeners = opts.listeners ?? 1;
  try {
    await until(
      () => listeningLines(err()).length >= listeners || d.exit() !== null,
      `${listeners} "listening on" line(s) from tcpproxy ${args.join(' ')}`,
      opts.timeoutMs ?? 10000,
    );
  } catch (e) {
    d.kill();
    throw new Error(`${(e as Error).message}; stderr so far:\n${err()}`);
  }
  const ended = d.exit();
  if (ended !== null && listeningLines(err()).length < listeners) {
    throw new Error(`tcpproxy ${args.join(' ')} exited before listening (code ${ended.code}, signal ${ended.signal}):\n${err()}`);
  }
  if (d.pid === 0) throw new Error('tcpproxy has no pid');
  return Object.assign(d, { addresses: listeningLines(err()).map(parseListenAddress) });
}

/** A proxy of startProxy(). */
export type Proxy = Daemon;

/** startDaemon with the test's environment plus `env`, in the test runner's process group. */
export function startProxy(args: readonly string[], env?: NodeJS.ProcessEnv, listeners = 1, timeoutMs = 10000): Promise<Proxy> {
  return startDaemon({ args, env: { ...process.env, ...env }, detached: false, listeners, timeoutMs });
}

/**
 * Starts a proxy, runs `body` with it and stops it. A failure inside `body`
 * gets the proxy's stderr appended to its message (the proxy is left for
 * killLaunched()).
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

/**
 * What becomes of the code cache beside the bundled command `mainJs`
 * (`MAIN.v8cache`, scripts/bundle.mjs: a 4-byte length, the source it was
 * made from, V8's data), asked in a fresh node that does what the command's
 * loader does: `stale` (made from another source), `rejected` (by V8), or
 * `accepted`.
 */
export async function codeCacheVerdict(mainJs: string, opts: { readonly v8Only?: boolean } = {}): Promise<'accepted' | 'rejected' | 'stale' | string> {
  // v8Only: what V8 alone makes of the data for the source as it is now, without the loader's check.
  const probe =
    `const vm = require('vm'), fs = require('fs'), M = require('module'); const f = ${JSON.stringify(mainJs)};` +
    "const src = fs.readFileSync(f), c = fs.readFileSync(f + '.v8cache'), n = c.readUInt32LE(0);" +
    (opts.v8Only === true ? '' : "if (n !== src.length || !src.equals(c.subarray(4, 4 + n))) { console.log('stale'); process.exit(0); }") +
    "const s = new vm.Script(M.wrap(src.toString('utf8')), { filename: f, cachedData: c.subarray(4 + n) });" +
    "console.log(s.cachedDataRejected ? 'rejected' : 'accepted')";
  const r = await runToExit([process.execPath, '-e', probe], { timeoutMs: 20000 });
  return r.code === 0 && r.stderr === '' ? r.stdout.trim() : `exit ${r.code ?? r.signal}: ${r.stderr.trim()}`;
}

// ---------------------------------------------------------------- log lines

export interface ReadyWorker {
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
}

/** The `worker uid U gid G ready, pid P` lines of tcpproxy's stderr, in order. */
export function readyWorkers(stderr: string): ReadyWorker[] {
  return [...stderr.matchAll(/^\S+Z tcpproxy: worker uid (\d+) gid (\d+) ready, pid (\d+)$/gm)].map((m) => ({
    uid: Number(m[1]),
    gid: Number(m[2]),
    pid: Number(m[3]),
  }));
}

/** Waits for `n` ready workers of identity uid/gid and returns them all (in order). */
export async function waitWorkers(stderr: () => string, uid: number, gid: number, n = 1, timeoutMs = 10000): Promise<ReadyWorker[]> {
  const mine = (): ReadyWorker[] => readyWorkers(stderr()).filter((w) => w.uid === uid && w.gid === gid);
  try {
    await until(() => mine().length >= n, `${n} ready line(s) of worker uid ${uid} gid ${gid}`, timeoutMs);
  } catch (e) {
    throw new Error(`${(e as Error).message}; stderr:\n${stderr()}`);
  }
  return mine();
}

/**
 * The start of a log line on stderr (-D): the ISO 8601 time, then
 * `tcpproxy: `, or `tcpproxy:` alone before a message of the
 * `tcpproxy:FILE:LINE:` form (kept whole).
 */
export const LOG_STAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?:tcpproxy: |(?=tcpproxy:\S))/;

/** tcpproxy's log lines on stderr, without the time and the `tcpproxy: ` prefix. */
export function logLines(stderr: string): string[] {
  return stderr.split('\n').flatMap((l) => {
    const m = LOG_STAMP.exec(l);
    return m === null ? [] : [l.slice(m[0].length)];
  });
}

/** Waits for a log line matching `re` and returns its match. */
export async function waitLog(stderr: () => string, re: RegExp, timeoutMs = 10000): Promise<RegExpExecArray> {
  let m: RegExpExecArray | null = null;
  const find = (): boolean => {
    for (const l of logLines(stderr())) {
      m = re.exec(l);
      if (m !== null) return true;
    }
    return false;
  };
  try {
    await until(find, `a log line matching ${String(re)}`, timeoutMs);
  } catch (e) {
    throw new Error(`${(e as Error).message}; stderr:\n${stderr()}`);
  }
  return m as unknown as RegExpExecArray;
}

/** Escapes text for use inside a RegExp. */
export function re(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
