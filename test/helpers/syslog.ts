/**
 * Helpers of test/privileged (tests that run as root):
 *
 * - SyslogSink: the test owns the datagram socket syslog(3) writes to. When
 *   /dev/log does not exist, a small python3 process binds it there (Node has
 *   no AF_UNIX datagram sockets) and removes it afterwards; when it exists
 *   (a syslog daemon owns it), the socket is bound in a temporary directory
 *   and tcpproxy is started under `unshare -m` with it bind-mounted over
 *   /dev/log, so the system's syslog is never touched. A machine-wide lock
 *   keeps concurrent runs of these tests from owning /dev/log at once.
 * - startDaemon(): starts `tcpproxy -D` with exactly the environment given
 *   (nothing merged in), optionally under that mount namespace, optionally
 *   with an extra inherited descriptor; killDaemons() ends what it started.
 * - Reading tcpproxy's log lines (workers and their pids) and /proc
 *   (ids, open descriptors, sockets, processes found by a unique argument).
 * - The handler fixtures (test/fixtures/handlers), checked to be usable by
 *   the unprivileged service ids.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CLI, ROOT, parseListenAddress, type ListenAddress } from './proxy';
import { until } from './until';

export const DEV_LOG = '/dev/log';

// ---------------------------------------------------------------- root gate

/** True when the tests run as root. */
export const IS_ROOT = process.geteuid?.() === 0;

/** CI is set (and not "false"/"0"): privileged tests never skip there. */
export const IN_CI = ((): boolean => {
  const v = process.env['CI'];
  return v !== undefined && v !== '' && v !== 'false' && v !== '0';
})();

/**
 * `describe` for tests that need root. As root, or in CI, they run (in CI
 * without root they fail in `requireRoot`); otherwise they are skipped, with
 * a warning saying so.
 */
export function describeAsRoot(name: string, fn: () => void): void {
  if (IS_ROOT || IN_CI) {
    describe(name, fn);
    return;
  }
  // eslint-disable-next-line no-console
  console.warn(`SKIPPED "${name}": test/privileged needs root (run as root, or set CI=true to make this a failure)`);
  describe.skip(name, fn);
}

/** Throws when not root (for beforeAll: in CI a missing root is a failure, not a skip). */
export function requireRoot(): void {
  if (!IS_ROOT) throw new Error('test/privileged must run as root (CI is set, so this is not skipped)');
}

// ------------------------------------------------------------------ syslog

/** One datagram as syslog(3) sends it: `<PRI>Mmm dd hh:mm:ss IDENT[PID]: MESSAGE`. */
export interface SyslogRecord {
  readonly raw: string;
  readonly priority: number;
  /** priority >> 3 (3 = daemon). */
  readonly facility: number;
  /** priority & 7 (3 = err, 4 = warning, 6 = info). */
  readonly severity: number;
  readonly time: string;
  readonly ident: string;
  /** null when the line carries no [PID]. */
  readonly pid: number | null;
  readonly message: string;
}

const SYSLOG_LINE = /^<(\d{1,3})>([A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d) ([^\s[:]+)(?:\[(\d+)\])?: (.*)$/s;

export function parseSyslog(raw: string): SyslogRecord | null {
  const m = SYSLOG_LINE.exec(raw.replace(/\n$/, ''));
  if (m === null) return null;
  const priority = Number(m[1]);
  return {
    raw,
    priority,
    facility: priority >> 3,
    severity: priority & 7,
    time: m[2] ?? '',
    ident: m[3] ?? '',
    pid: m[4] === undefined ? null : Number(m[4]),
    message: m[5] ?? '',
  };
}

/**
 * The receiving end, in python3: binds argv[1] (mode 0666, as syslog daemons
 * do, so that the unprivileged workers may send), prints `READY` then one
 * `MSG <datagram>` line per datagram (backslashes and newlines escaped),
 * flushed. Ends when its stdin closes, and then removes the socket file if it
 * is still the one it made.
 */
const SINK_PY = `
import os, select, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
try:
    s.bind(path)
except OSError as e:
    sys.stdout.write("ERROR %s\\n" % e.strerror)
    sys.stdout.flush()
    sys.exit(1)
ino = os.stat(path).st_ino
try:
    os.chmod(path, 0o666)
    out = bytearray(b"READY %d\\n" % ino)
    # Never stop reading the socket: with net.unix.max_dgram_qlen (often 10)
    # datagrams queued, every sender on the machine would block in syslog(3).
    # So stdout is non-blocking and what it cannot take yet waits here.
    os.set_blocking(1, False)
    while True:
        r, w, _ = select.select([s, 0], [1] if out else [], [])
        if 0 in r and not os.read(0, 4096):
            break
        if s in r:
            for _ in range(256):
                try:
                    d = s.recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                out += b"MSG " + d.replace(b"\\\\", b"\\\\\\\\").replace(b"\\n", b"\\\\n") + b"\\n"
        if 1 in w and out:
            try:
                n = os.write(1, out)
                del out[:n]
            except BlockingIOError:
                pass
finally:
    try:
        if os.stat(path).st_ino == ino:
            os.unlink(path)
    except OSError:
        pass
`;

function unescapeSink(text: string): string {
  return text.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
}

/** How tcpproxy reaches the sink: at /dev/log itself, or bind-mounted over it in a private mount namespace. */
export type SinkMode = 'dev-log' | 'bind-mount';

export class SyslogSink {
  readonly mode: SinkMode;
  /** The socket file the sink is bound to. */
  readonly socketPath: string;
  private readonly child: ChildProcess;
  private readonly tmpDir: string | null;
  private readonly inode: number;
  private release: () => void = () => {};
  private readonly datagrams: string[];
  private readonly parsed: SyslogRecord[] = [];
  private parsedUpTo = 0;
  private exited = false;

  private constructor(mode: SinkMode, socketPath: string, child: ChildProcess, inode: number, tmpDir: string | null, datagrams: string[]) {
    this.mode = mode;
    this.socketPath = socketPath;
    this.child = child;
    this.inode = inode;
    this.tmpDir = tmpDir;
    this.datagrams = datagrams;
    child.once('exit', () => {
      this.exited = true;
    });
  }

  /**
   * Opens a sink. `auto`: at /dev/log when that does not exist, else (or if
   * another process creates it first) a socket to bind-mount over it. An
   * `auto` sink first takes the machine-wide lock (see takeSyslogLock), held
   * until close(): /dev/log is one for the whole machine, and a concurrent
   * run of these tests that removed its own /dev/log would also detach our
   * bind mount over it. (Sinks opened by name are for use while an `auto`
   * one is open, and take no lock.)
   */
  static async open(want: SinkMode | 'auto' = 'auto', lockTimeoutMs = 120000): Promise<SyslogSink> {
    if (want !== 'auto') return SyslogSink.openUnlocked(want);
    const release = await takeSyslogLock(lockTimeoutMs);
    try {
      const sink = await SyslogSink.openUnlocked('auto');
      sink.release = release;
      return sink;
    } catch (err) {
      release();
      throw err;
    }
  }

  private static async openUnlocked(want: SinkMode | 'auto'): Promise<SyslogSink> {
    if (want !== 'bind-mount' && !fs.existsSync(DEV_LOG)) {
      try {
        return await SyslogSink.bindAt('dev-log', DEV_LOG, null);
      } catch (err) {
        if (want === 'dev-log' || !fs.existsSync(DEV_LOG)) throw err;
        // Someone else made /dev/log in between: fall through to the bind mount.
      }
    }
    if (want === 'dev-log') throw new Error(`${DEV_LOG} exists: cannot own it`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcpproxy-syslog-'));
    fs.chmodSync(dir, 0o755);
    try {
      return await SyslogSink.bindAt('bind-mount', path.join(dir, 'log'), dir);
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  private static async bindAt(mode: SinkMode, socketPath: string, tmpDir: string | null): Promise<SyslogSink> {
    const child = spawn('python3', ['-c', SINK_PY, socketPath], { stdio: ['pipe', 'pipe', 'pipe'] });
    const datagrams: string[] = [];
    let pending = '';
    let status = '';
    let err = '';
    let exited = false;
    child.on('error', (e) => {
      err += `spawn python3: ${e.message}\n`;
      exited = true;
    });
    child.once('exit', () => {
      exited = true;
    });
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.stdout?.setEncoding('utf8').on('data', (s: string) => {
      pending += s;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const l of lines) {
        if (l.startsWith('MSG ')) datagrams.push(unescapeSink(l.slice(4)));
        else status = l;
      }
    });
    try {
      await until(() => status !== '' || exited, `the syslog sink to bind ${socketPath}`, 10000);
    } catch (e) {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      throw e;
    }
    const ready = /^READY (\d+)$/.exec(status);
    if (ready === null) {
      if (child.pid !== undefined && !exited) process.kill(child.pid, 'SIGKILL');
      throw new Error(`syslog sink could not bind ${socketPath}: ${status || err || 'it exited'}`);
    }
    return new SyslogSink(mode, socketPath, child, Number(ready[1]), tmpDir, datagrams);
  }

  /** Every datagram received so far, as sent. */
  raw(): readonly string[] {
    return this.datagrams;
  }

  /**
   * Every datagram received so far that parses as a syslog line. Parsed once
   * each: while the sink owns /dev/log, every process on the machine logs
   * into it (another test run's daemons, a benchmark), possibly a lot.
   */
  records(): readonly SyslogRecord[] {
    for (; this.parsedUpTo < this.datagrams.length; this.parsedUpTo++) {
      const r = parseSyslog(this.datagrams[this.parsedUpTo] ?? '');
      if (r !== null) this.parsed.push(r);
    }
    return this.parsed;
  }

  /** Waits for a record matching `pred` (already received or still to come) and returns the first one. */
  async waitFor(pred: (r: SyslogRecord) => boolean, what: string, timeoutMs = 10000): Promise<SyslogRecord> {
    let found: SyslogRecord | undefined;
    let next = 0;
    const look = (): boolean => {
      const all = this.records();
      for (; next < all.length && found === undefined; next++) {
        const r = all[next] as SyslogRecord;
        if (pred(r)) found = r;
      }
      return found !== undefined;
    };
    try {
      await until(look, `syslog record: ${what}`, timeoutMs);
    } catch (e) {
      throw new Error(`${(e as Error).message}; the last of ${this.datagrams.length} datagrams received:\n${this.datagrams.slice(-20).join('\n')}`);
    }
    return found as SyslogRecord;
  }

  /** Stops the sink (which removes its socket file) and cleans up. */
  async close(): Promise<void> {
    if (!this.exited) {
      this.child.stdin?.end();
      try {
        await until(() => this.exited, 'the syslog sink to exit', 5000);
      } catch {
        if (this.child.pid !== undefined) process.kill(this.child.pid, 'SIGKILL');
        await until(() => this.exited, 'the syslog sink to die', 5000);
      }
    }
    // If it could not remove its socket, do it here, but only if it is still ours.
    try {
      if (fs.statSync(this.socketPath).ino === this.inode) fs.unlinkSync(this.socketPath);
    } catch {
      // gone already
    }
    if (this.tmpDir !== null) fs.rmSync(this.tmpDir, { recursive: true, force: true });
    this.release();
    this.release = (): void => {};
  }
}

/** The machine-wide lock of the syslog tests: a directory made atomically, holding the owner's pid. */
export const SYSLOG_LOCK = '/tmp/tcpproxy-test-syslog.lock';

function lockOwner(): number | null {
  try {
    const pid = Number(fs.readFileSync(path.join(SYSLOG_LOCK, 'pid'), 'utf8'));
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** mtime of the lock directory (ms since the epoch), or now if it is gone. */
function lockAge(): number {
  try {
    return fs.statSync(SYSLOG_LOCK).mtimeMs;
  } catch {
    return Date.now();
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes SYSLOG_LOCK, waiting (polling, bounded) while another live process
 * holds it; a lock whose owner is gone is taken over. Returns the release.
 */
export async function takeSyslogLock(timeoutMs: number): Promise<() => void> {
  const mine = path.join(SYSLOG_LOCK, 'pid');
  const tryTake = (): boolean => {
    try {
      fs.mkdirSync(SYSLOG_LOCK, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = lockOwner();
      // No pid yet: its owner is between mkdir and write (or died there, if that was long ago).
      const stale = owner === null ? Date.now() - lockAge() > 10000 : !processExists(owner);
      if (stale) fs.rmSync(SYSLOG_LOCK, { recursive: true, force: true });
      return false;
    }
    fs.writeFileSync(mine, String(process.pid));
    return true;
  };
  await until(tryTake, () => `the syslog test lock ${SYSLOG_LOCK} (held by pid ${lockOwner() ?? '?'})`, timeoutMs);
  return () => {
    if (lockOwner() === process.pid) fs.rmSync(SYSLOG_LOCK, { recursive: true, force: true });
  };
}

// ------------------------------------------------------------------ daemons

/** Absolute path of a program found in the test's PATH. */
export function which(name: string): string {
  for (const dir of (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (dir === '') continue;
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // next
    }
  }
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    const file = path.join(dir, name);
    if (fs.existsSync(file)) return file;
  }
  throw new Error(`${name} not found in PATH`);
}

export interface DaemonOptions {
  /** tcpproxy's arguments; -D is added when missing. */
  readonly args: readonly string[];
  /** Exactly the environment tcpproxy starts with: nothing is merged in. */
  readonly env: Readonly<Record<string, string>>;
  /** Default: the repository root. */
  readonly cwd?: string;
  /** A bind-mount sink: tcpproxy runs under `unshare -m` with the sink mounted over /dev/log. */
  readonly syslog?: SyslogSink;
  /**
   * Start tcpproxy with this file open on fd INHERITED_FD, not close-on-exec,
   * as a careless parent (a shell redirection, a service manager) would leave
   * it. (Measured: Node 20 itself marks fds 3-16 close-on-exec at start, so
   * the fd is above those.)
   */
  readonly inheritFile?: string;
  /** Called with each chunk of tcpproxy's stderr as it arrives (and the process). */
  readonly onStderr?: (text: string, child: ChildProcess) => void;
  /** `listening on` lines to wait for; default 1. */
  readonly listeners?: number;
  readonly timeoutMs?: number;
}

export interface DaemonExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface Daemon {
  readonly child: ChildProcess;
  /** tcpproxy's (the master's) pid: also under unshare or sh, which exec it. */
  readonly pid: number;
  readonly addresses: ListenAddress[];
  readonly stderr: () => string;
  readonly exit: () => DaemonExit | null;
  /** Resolves at exit; SIGKILLs the group if that takes longer than `timeoutMs`. */
  wait(timeoutMs?: number): Promise<DaemonExit>;
  /** SIGTERM, then SIGKILL to the group after `graceMs`; resolves at exit. */
  stop(graceMs?: number): Promise<DaemonExit>;
}

const liveDaemons = new Set<ChildProcess>();

/** The descriptor of DaemonOptions.inheritFile in tcpproxy. */
export const INHERITED_FD = 20;

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // the group is gone
  }
}

/** SIGKILLs (by process group) every daemon started by startDaemon that is still running. */
export function killDaemons(): void {
  for (const c of liveDaemons) killGroup(c);
  liveDaemons.clear();
}

const LISTENING = /^tcpproxy: listening on (\S+)\s*$/gm;

/** Starts tcpproxy in the foreground and waits for its `listening on` lines. */
export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const args = opts.args.includes('-D') ? [...opts.args] : ['-D', ...opts.args];
  let command = process.execPath;
  let argv = [CLI, ...args];
  if (opts.syslog !== undefined) {
    if (opts.syslog.mode !== 'bind-mount') throw new Error('startDaemon: only a bind-mount sink needs a mount namespace');
    if (!fs.existsSync(DEV_LOG)) throw new Error(`startDaemon: ${DEV_LOG} must exist to be mounted over`);
    command = which('unshare');
    argv = [
      '-m',
      '--propagation',
      'private',
      '--',
      '/bin/sh',
      '-c',
      `${which('mount')} --bind "$0" ${DEV_LOG} && exec "$@"`,
      opts.syslog.socketPath,
      process.execPath,
      CLI,
      ...args,
    ];
  }
  const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'pipe', 'pipe'];
  let inherited: number | null = null;
  if (opts.inheritFile !== undefined) {
    inherited = fs.openSync(opts.inheritFile, 'r');
    while (stdio.length < INHERITED_FD) stdio.push('ignore');
    stdio.push(inherited);
  }
  let child: ChildProcess;
  try {
    child = spawn(command, argv, { cwd: opts.cwd ?? ROOT, env: { ...opts.env }, stdio, detached: true });
  } finally {
    if (inherited !== null) fs.closeSync(inherited);
  }
  liveDaemons.add(child);
  let err = '';
  let exit: DaemonExit | null = null;
  child.stdout?.resume();
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    err += s;
    opts.onStderr?.(s, child);
  });
  child.on('error', (e) => (err += `spawn failed: ${e.message}\n`));
  child.on('exit', () => killGroup(child));
  const exited = new Promise<DaemonExit>((resolve) => {
    child.on('close', (code, signal) => {
      liveDaemons.delete(child);
      exit = { code, signal };
      resolve(exit);
    });
  });
  const listeners = opts.listeners ?? 1;
  const listening = (): string[] => [...err.matchAll(LISTENING)].map((m) => m[1] ?? '');
  try {
    await until(() => listening().length >= listeners || exit !== null, `tcpproxy ${args.join(' ')} to listen`, opts.timeoutMs ?? 10000);
  } catch (e) {
    killGroup(child);
    throw new Error(`${(e as Error).message}; stderr so far:\n${err}`);
  }
  const ended = exit as DaemonExit | null;
  if (ended !== null && listening().length < listeners) throw new Error(`tcpproxy ${args.join(' ')} exited before listening (code ${ended.code}, signal ${ended.signal}):\n${err}`);
  if (child.pid === undefined) throw new Error('tcpproxy has no pid');
  return {
    child,
    pid: child.pid,
    addresses: listening().map(parseListenAddress),
    stderr: () => err,
    exit: () => exit,
    async wait(timeoutMs = 10000): Promise<DaemonExit> {
      const timer = setTimeout(() => killGroup(child), timeoutMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
    async stop(graceMs = 5000): Promise<DaemonExit> {
      if (exit !== null) return exit;
      child.kill('SIGTERM');
      const timer = setTimeout(() => killGroup(child), graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

// ---------------------------------------------------------------- log lines

export interface ReadyWorker {
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
}

/** The `worker uid U gid G ready, pid P` lines of tcpproxy's stderr, in order. */
export function readyWorkers(stderr: string): ReadyWorker[] {
  return [...stderr.matchAll(/^tcpproxy: worker uid (\d+) gid (\d+) ready, pid (\d+)$/gm)].map((m) => ({
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

/** tcpproxy's stderr lines (without the `tcpproxy: ` prefix). */
export function logLines(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('tcpproxy: '))
    .map((l) => l.slice('tcpproxy: '.length));
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

// --------------------------------------------------------------------- /proc

/** The fields of /proc/PID/status. */
export function procStatus(pid: number): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

export interface ProcIds {
  /** real, effective, saved, filesystem */
  readonly uid: number[];
  readonly gid: number[];
  readonly groups: number[];
}

function numbers(text: string | undefined): number[] {
  return (text ?? '').split(/\s+/).filter((w) => w !== '').map(Number);
}

/** The ids of a process from /proc/PID/status. */
export function procIds(pid: number): ProcIds {
  const s = procStatus(pid);
  return { uid: numbers(s.get('Uid')), gid: numbers(s.get('Gid')), groups: numbers(s.get('Groups')) };
}

/** argv of a process (empty for a zombie or a kernel thread). */
export function procArgv(pid: number): string[] {
  const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  const parts = raw.split('\0');
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

/** Pids of the live processes with `token` among their arguments (argv[1..]) and, if given, that argv[0] basename. */
export function findProcesses(token: string, argv0?: string): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    let argv: string[];
    try {
      argv = procArgv(pid);
    } catch {
      continue; // exited meanwhile
    }
    if (argv.length < 2 || !argv.slice(1).includes(token)) continue;
    if (argv0 !== undefined && path.basename(argv[0] ?? '') !== argv0) continue;
    out.push(pid);
  }
  return out;
}

/** Waits for exactly one process with `token` (and argv[0] basename `argv0`) and returns its pid. */
export async function waitProcess(token: string, argv0?: string, timeoutMs = 10000): Promise<number> {
  let pids: number[] = [];
  await until(() => (pids = findProcesses(token, argv0)).length === 1, `one process with argument ${token}`, timeoutMs);
  return pids[0] as number;
}

/**
 * Waits until `pid` is blocked in nanosleep (its wchan): a handler that
 * `exec sleep`s has then finished loading, so the descriptors the dynamic
 * loader opens for a moment are closed again.
 */
export async function waitAsleep(pid: number, timeoutMs = 10000): Promise<void> {
  const wchan = (): string => {
    try {
      return fs.readFileSync(`/proc/${pid}/wchan`, 'utf8');
    } catch {
      return '';
    }
  };
  await until(() => /nanosleep/.test(wchan()), () => `pid ${pid} asleep (wchan ${wchan() || '?'})`, timeoutMs);
}

/** SIGKILLs every process with `token` among its arguments (cleanup: by pid). */
export function killProcesses(token: string): void {
  for (const pid of findProcesses(token)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** The open descriptors of a process, as numbers, sorted. */
export function openFds(pid: number): number[] {
  return fs
    .readdirSync(`/proc/${pid}/fd`)
    .map(Number)
    .sort((a, b) => a - b);
}

/** readlink /proc/PID/fd/FD: `socket:[123]`, `pipe:[456]`, a path. */
export function fdTarget(pid: number, fd: number): string {
  return fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
}

/** The inode of `socket:[N]` / `pipe:[N]`, or null. */
export function inodeOf(target: string): { kind: 'socket' | 'pipe'; inode: number } | null {
  const m = /^(socket|pipe):\[(\d+)\]$/.exec(target);
  return m === null ? null : { kind: m[1] as 'socket' | 'pipe', inode: Number(m[2]) };
}

export interface TcpSocket {
  readonly inode: number;
  readonly localPort: number;
  readonly remotePort: number;
  /** Kernel state number (1 = ESTABLISHED). */
  readonly state: number;
}

/** Every TCP socket of /proc/net/tcp and /proc/net/tcp6. */
export function tcpSockets(): TcpSocket[] {
  const out: TcpSocket[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const local = f[1] ?? '';
      const remote = f[2] ?? '';
      out.push({
        localPort: parseInt(local.slice(local.lastIndexOf(':') + 1), 16),
        remotePort: parseInt(remote.slice(remote.lastIndexOf(':') + 1), 16),
        state: parseInt(f[3] ?? '0', 16),
        inode: Number(f[9]),
      });
    }
  }
  return out;
}

/** Inodes of the AF_UNIX sockets of /proc/net/unix. */
export function unixSocketInodes(): Set<number> {
  const out = new Set<number>();
  for (const line of fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 7) out.add(Number(f[6]));
  }
  return out;
}

/** True while the process exists (a zombie counts as gone). */
export function alive(pid: number): boolean {
  try {
    return procStatus(pid).get('State')?.startsWith('Z') !== true;
  } catch {
    return false;
  }
}

// ------------------------------------------------------------------ fixtures

export const HANDLERS_IN_TREE = path.join(ROOT, 'test', 'fixtures', 'handlers');

/** Why uid 65535 could not run the scripts in `dir`, or null. */
function unusableByOthers(dir: string): string | null {
  for (let d = dir; ; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o001) === 0) return `${d} is not searchable by others`;
    if (d === path.dirname(d)) break;
  }
  return null;
}

let handlersDir: string | null = null;

/**
 * The directory of the handler fixtures, every script made executable
 * (mode 0755). The tree itself when others may search every directory on the
 * way (the handlers run as 65535 and other unprivileged ids, and a shell
 * script must be readable to run); otherwise a copy in a fresh directory
 * under the system's temporary directory, removed by releaseHandlers().
 */
export function handlers(): string {
  if (handlersDir !== null) return handlersDir;
  for (const f of fs.readdirSync(HANDLERS_IN_TREE)) fs.chmodSync(path.join(HANDLERS_IN_TREE, f), 0o755);
  if (unusableByOthers(HANDLERS_IN_TREE) === null) {
    handlersDir = HANDLERS_IN_TREE;
    return handlersDir;
  }
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'tcpproxy-handlers-'));
  fs.chmodSync(copy, 0o755);
  for (const f of fs.readdirSync(HANDLERS_IN_TREE)) {
    fs.copyFileSync(path.join(HANDLERS_IN_TREE, f), path.join(copy, f));
    fs.chmodSync(path.join(copy, f), 0o755);
  }
  handlersDir = copy;
  const problem = unusableByOthers(copy);
  if (problem !== null) {
    releaseHandlers();
    throw new Error(`handler fixtures cannot be made usable by unprivileged ids: ${problem}`);
  }
  // A fallback only: jest may end its workers without an 'exit' event, so test files call releaseHandlers().
  process.once('exit', releaseHandlers);
  return copy;
}

/** Removes the copy of the handler fixtures, if handlers() made one (for afterAll). */
export function releaseHandlers(): void {
  if (handlersDir !== null && handlersDir !== HANDLERS_IN_TREE) fs.rmSync(handlersDir, { recursive: true, force: true });
  handlersDir = null;
}

/** Absolute path of a handler fixture. */
export function handler(name: string): string {
  return path.join(handlers(), name);
}

/** A number nobody else uses as an argument: e.g. `30.48213977` (a valid sleep(1) duration). */
export function uniqueSeconds(whole = 30): string {
  return `${whole}.${String(randomInt(1e7, 1e8))}`;
}

/** Writes a config file only its owner can write (tcpproxy refuses others' when root). */
export function writeConfig(dir: string, name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text, { mode: 0o600 });
  return file;
}

