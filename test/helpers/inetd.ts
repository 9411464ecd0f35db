/**
 * inetd mode and socket activation from the outside: the built CLI started
 * the way a super-server starts it. A real openbsd-inetd (foreground, private
 * inetd.conf), systemd-socket-activate, a python3 launcher that passes
 * listening sockets as fds 3.. (LISTEN_FDS/LISTEN_PID), and a direct spawn
 * with an accepted socket on fds 0, 1 and 2.
 *
 * Readiness is read from the kernel (/proc/net/tcp: a LISTEN socket on the
 * address whose inode is an open fd of the expected process), never probed
 * with a connection (that would start a service) nor with a bind (that could
 * steal the port from the daemon). Every process is started in its own
 * process group and tracked; killDaemons() ends the ones still running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { usableFixtures } from './fixtures';
import { Client } from './client';
import { CLI, ROOT } from './proxy';
import { freePort } from './servers';
import { until } from './until';

export { CLI, ROOT };

export const INETD = '/usr/sbin/inetd';
export const SOCKET_ACTIVATE = '/usr/bin/systemd-socket-activate';
/** Handler and ACP scripts; they run as the service ids (65535/65534): see usableFixtures. */
export function fixture(name: string): string {
  return path.join(usableFixtures('inetd'), name);
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

export function executable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** `n` different ports, each free on 127.0.0.1 a moment ago (for configs that need literal ports). */
export async function freePorts(n: number): Promise<number[]> {
  const out = new Set<number>();
  for (let tries = 0; out.size < n; tries++) {
    if (tries > 10 * n) throw new Error(`no ${n} distinct free ports`);
    out.add(await freePort());
  }
  return [...out];
}

// ---------------------------------------------------------------------------
// The kernel's view of sockets and processes

/** /proc/net/tcp's hex form of an address (host byte order per 32-bit word) and port. */
function procAddress(host: string, port: number): string {
  const p = port.toString(16).toUpperCase().padStart(4, '0');
  if (net.isIPv4(host)) {
    const bytes = host.split('.').map(Number);
    const hex = bytes
      .reverse()
      .map((b) => b.toString(16).toUpperCase().padStart(2, '0'))
      .join('');
    return `${hex}:${p}`;
  }
  throw new Error(`procAddress: only IPv4 literals are supported, not ${host}`);
}

/** Inodes of the TCP sockets in LISTEN state on exactly host:port. */
export function listeningInodes(host: string, port: number): string[] {
  const want = procAddress(host, port);
  const out: string[] = [];
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    if (f[1] === want && f[3] === '0A' && f[9] !== undefined) out.push(f[9]);
  }
  return out;
}

/** The socket inodes among the open fds of `pid` (empty when it is gone). */
export function socketInodesOf(pid: number): Set<string> {
  const out = new Set<string>();
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m?.[1] !== undefined) out.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** The parent pid of `pid`, or null when it is gone. */
export function parentOf(pid: number): number | null {
  try {
    const m = /^PPid:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] === undefined ? null : Number(m[1]);
  } catch {
    return null;
  }
}

/** True when `pid` holds a listening socket on host:port. */
export function listensOn(pid: number, host: string, port: number): boolean {
  const mine = socketInodesOf(pid);
  return listeningInodes(host, port).some((i) => mine.has(i));
}

// ---------------------------------------------------------------------------
// Processes

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface Daemon {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly argv: readonly string[];
  readonly stdout: () => string;
  readonly stderr: () => string;
  /** Null while running. */
  readonly exit: () => Exit | null;
  readonly exited: Promise<Exit>;
  /** SIGTERM to the pid, SIGKILL to its process group after `graceMs`; resolves at exit. */
  stop(graceMs?: number): Promise<Exit>;
}

const live = new Set<Daemon>();
const kills = new WeakMap<Daemon, () => void>();

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: nothing left in the group
  }
}

export interface StartOptions {
  /** The whole environment of the process (default: this process's). */
  readonly env?: NodeJS.ProcessEnv;
  /** stdio of the child; default ignore, pipe, pipe. */
  readonly stdio?: readonly ('ignore' | 'pipe' | net.Socket)[];
  /**
   * Called before it is killed (stop, killDaemons), for processes it started
   * outside its group (inetd puts each service in a session of its own).
   */
  readonly beforeKill?: (pid: number) => void;
}

/** Stops waiting for an exit after `ms` (a process that escaped every kill must not hang the suite). */
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

const STILL_RUNNING: Exit = { code: null, signal: null };

/** Starts `argv` in its own process group, recording its output and exit. */
export function startDaemon(argv: readonly string[], opts: StartOptions = {}): Daemon {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error('startDaemon: empty argv');
  const child = spawn(file, args, {
    cwd: ROOT,
    env: opts.env ?? process.env,
    stdio: (opts.stdio ?? ['ignore', 'pipe', 'pipe']) as ('ignore' | 'pipe' | net.Socket)[],
    detached: true,
  });
  if (child.pid === undefined) throw new Error(`cannot start ${argv.join(' ')}`);
  const pid = child.pid;
  let out = '';
  let err = '';
  let exit: Exit | null = null;
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (err += s));
  child.on('error', (e) => (err += `spawn failed: ${e.message}\n`));
  const exited = new Promise<Exit>((resolve) => {
    // Anything left in its group once it has exited is killed: nothing outlives what a test started.
    child.on('exit', () => killGroup(pid, 'SIGKILL'));
    // 'close': exited and its stdout/stderr drained, so what it printed is all there.
    child.on('close', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
  });
  const daemon: Daemon = {
    child,
    pid,
    argv,
    stdout: () => out,
    stderr: () => err,
    exit: () => exit,
    exited,
    async stop(graceMs = 3000): Promise<Exit> {
      opts.beforeKill?.(pid);
      if (exit === null) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          // already gone
        }
      }
      const timer = setTimeout(() => killGroup(pid, 'SIGKILL'), graceMs);
      try {
        return await bounded(exited, graceMs + 5000, STILL_RUNNING);
      } finally {
        clearTimeout(timer);
        // Whatever it started in its group (sessions still running) goes with it.
        killGroup(pid, 'SIGKILL');
        live.delete(daemon);
      }
    },
  };
  live.add(daemon);
  kills.set(daemon, () => opts.beforeKill?.(pid));
  void exited.then(() => live.delete(daemon));
  return daemon;
}

/** Stops every process started through this module that is still running (and its group). */
export async function killDaemons(): Promise<void> {
  const running = [...live];
  live.clear();
  for (const d of running) {
    kills.get(d)?.();
    killGroup(d.pid, 'SIGKILL');
  }
  await Promise.all(running.map((d) => bounded(d.exited, 5000, STILL_RUNNING)));
}

/** Resolves once `daemon` listens on every address; fails with its output if it exits or the deadline passes. */
export async function waitListening(
  daemon: Daemon,
  addrs: readonly { host: string; port: number }[],
  timeoutMs = 10000,
): Promise<void> {
  const what = (): string =>
    `${daemon.argv.join(' ')} to listen on ${addrs.map((a) => `${a.host}:${a.port}`).join(', ')}; ` +
    `exit ${JSON.stringify(daemon.exit())}; stderr:\n${daemon.stderr()}`;
  await until(() => daemon.exit() !== null || addrs.every((a) => listensOn(daemon.pid, a.host, a.port)), what, timeoutMs);
  if (daemon.exit() !== null) throw new Error(`exited before listening: ${what()}`);
}

// ---------------------------------------------------------------------------
// openbsd-inetd

export interface InetdService {
  readonly host: string;
  readonly port: number;
  /** Program and its argv (argv[0] included), as inetd.conf fields. */
  readonly program: string;
  readonly argv: readonly string[];
  /** inetd.conf's user[.group] field; default root. */
  readonly user?: string;
}

/** `HOST:PORT stream tcp nowait USER PROGRAM ARGV...` */
export function inetdLine(s: InetdService): string {
  return [`${s.host}:${s.port}`, 'stream', 'tcp', 'nowait', s.user ?? 'root', s.program, ...s.argv].join(' ');
}

/** An inetd.conf line that starts tcpproxy (as root) with `args`; `env` through /usr/bin/env, which execs in place. */
export function tcpproxyService(
  host: string,
  port: number,
  args: readonly string[],
  env: Record<string, string> = {},
): InetdService {
  const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  if (vars.length === 0) return { host, port, program: process.execPath, argv: ['node', CLI, ...args] };
  return { host, port, program: '/usr/bin/env', argv: ['env', ...vars, process.execPath, CLI, ...args] };
}

export interface Inetd extends Daemon {
  readonly conf: string;
  /** Pids of the services it started (its `PID execv PROGRAM` debug lines), in order. */
  readonly started: () => number[];
  /**
   * What it reaped, by pid (its `PID reaped, status HEX` debug lines, a wait
   * status in hex): the exit code, or `signal N`.
   */
  readonly reaped: () => Map<number, number | string>;
}

/** Writes `conf` (in `dir`) and runs `inetd -d conf` until every service's address is listening. */
export async function startInetd(dir: string, services: readonly InetdService[], env?: NodeJS.ProcessEnv): Promise<Inetd> {
  const conf = path.join(dir, `inetd-${Date.now()}-${Math.random().toString(16).slice(2)}.conf`);
  fs.writeFileSync(conf, services.map(inetdLine).join('\n') + '\n', { mode: 0o600 });
  const started = (): number[] => [...d.stderr().matchAll(/^(\d+) execv /gm)].map((m) => Number(m[1]));
  // Each service runs in a session of its own (inetd calls setsid): kill those still
  // running, while inetd is still their parent (so a reused pid is never hit).
  const beforeKill = (inetdPid: number): void => {
    for (const pid of started()) if (parentOf(pid) === inetdPid) killGroup(pid, 'SIGKILL');
  };
  const d = startDaemon([INETD, '-d', conf], { ...(env === undefined ? {} : { env }), beforeKill });
  const inetd: Inetd = Object.assign(d, {
    conf,
    started,
    reaped: () =>
      new Map(
        [...d.stderr().matchAll(/^(\d+) reaped, status (?:0x)?([0-9a-fA-F]+)$/gm)].map((m): [number, number | string] => {
          const status = Number.parseInt(m[2] ?? '', 16);
          return [Number(m[1]), (status & 0x7f) === 0 ? (status >> 8) & 0xff : `signal ${status & 0x7f}`];
        }),
      ),
  });
  try {
    await waitListening(inetd, services);
  } catch (e) {
    await inetd.stop();
    throw e;
  }
  return inetd;
}

// ---------------------------------------------------------------------------
// Direct spawn: what inetd does, without inetd

export interface Served {
  /** The test's end of the connection. */
  readonly client: Client;
  /** tcpproxy, started with the accepted socket on fds 0, 1 and 2. */
  readonly proxy: Daemon;
  /** The port tcpproxy's socket is on (the listener the test accepted it from). */
  readonly port: number;
}

/**
 * Accepts one connection on 127.0.0.1 (an ephemeral port unless `port`) and
 * starts `tcpproxy ...args` with the accepted socket on fds 0, 1 and 2, as
 * inetd's `nowait` does. The test's own copy of the socket is closed at once,
 * so tcpproxy alone holds the connection.
 */
export async function serveOneConnection(
  args: readonly string[],
  opts: { readonly env?: NodeJS.ProcessEnv; readonly port?: number; readonly host?: string } = {},
): Promise<Served> {
  const host = opts.host ?? '127.0.0.1';
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: opts.port ?? 0, exclusive: true }, () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  try {
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const client = await Client.connect(host, port);
    const sock = await accepted;
    const proxy = startDaemon([process.execPath, CLI, ...args], {
      ...(opts.env === undefined ? {} : { env: opts.env }),
      stdio: [sock, sock, sock],
    });
    sock.destroy();
    return { client, proxy, port };
  } finally {
    server.close();
  }
}

// ---------------------------------------------------------------------------
// Socket activation (Accept=no): listening sockets as fds 3.., LISTEN_FDS, LISTEN_PID

/**
 * python3 program: binds and listens on each HOST:PORT of argv[1] (comma
 * separated), puts the sockets on fds 3, 4, ... (inheritable), sets
 * LISTEN_FDS and LISTEN_PID (its own pid, kept by execv; `pidOffset` makes
 * it wrong on purpose) and execs argv[2...].
 */
const LAUNCHER = `
import os, socket, sys
addrs = sys.argv[1].split(',')
offset = int(os.environ.pop('LAUNCHER_PID_OFFSET', '0'))
high = []
for a in addrs:
    host, port = a.rsplit(':', 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(64)
    high.append(os.dup2(s.fileno(), 100 + len(high)))
    s.close()
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i, inheritable=True)
    os.close(fd)
os.environ['LISTEN_FDS'] = str(len(high))
os.environ['LISTEN_PID'] = str(os.getpid() + offset)
os.environ.pop('LISTEN_FDNAMES', None)
sys.stderr.write('launcher: pid %d, %d socket(s)\\n' % (os.getpid(), len(high)))
sys.stderr.flush()
os.execv(sys.argv[2], sys.argv[2:])
`;

/** Starts `tcpproxy ...args` through the python3 launcher with listening sockets on `addrs` as fds 3... */
export function launchWithSockets(
  addrs: readonly { host: string; port: number }[],
  args: readonly string[],
  opts: { readonly env?: NodeJS.ProcessEnv; readonly pidOffset?: number } = {},
): Daemon {
  const python = onPath('python3');
  if (python === null) throw new Error('python3 is not on PATH: the socket activation launcher needs it');
  const env = { ...(opts.env ?? process.env), LAUNCHER_PID_OFFSET: String(opts.pidOffset ?? 0) };
  return startDaemon(
    [python, '-c', LAUNCHER, addrs.map((a) => `${a.host}:${a.port}`).join(','), process.execPath, CLI, ...args],
    { env },
  );
}

// ---------------------------------------------------------------------------
// Client side

/** Waits until the connection has closed (EOF, reset or close), bounded. */
export async function waitEnd(c: Client, timeoutMs = 10000): Promise<void> {
  await until(() => c.ended || c.closed, () => `the connection to end (have ${c.received} bytes)`, timeoutMs);
}

/** What test/fixtures/inetd/whoami.sh printed: its `key value` lines (value trimmed, possibly empty). */
export interface Whoami {
  readonly pid: number;
  readonly ppid: number;
  readonly uid: number;
  readonly gid: number;
  /** Supplementary groups (the Groups line of /proc/PID/status), blank separated; '' for none. */
  readonly groups: string;
  /** Which of its fds are TCP sockets (inode in /proc/net/tcp{,6}), ascending, blank separated. */
  readonly tcpFds: string;
  /** Its LISTEN_* variables, `K=V` blank separated; '' for none. */
  readonly listenEnv: string;
}

export function parseWhoami(text: string): Whoami {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^(\w+)(?: (.*))?$/.exec(line);
    if (m?.[1] !== undefined) fields.set(m[1], (m[2] ?? '').trim());
  }
  if (!fields.has('end')) throw new Error(`incomplete output from whoami.sh:\n${text}`);
  const num = (k: string): number => Number(fields.get(k) ?? 'NaN');
  return {
    pid: num('pid'),
    ppid: num('ppid'),
    uid: num('uid'),
    gid: num('gid'),
    groups: fields.get('groups') ?? '?',
    tcpFds: fields.get('tcp_fds') ?? '?',
    listenEnv: fields.get('listen_env') ?? '?',
  };
}
