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
 * process group, through helpers/daemon launch(): killLaunched() ends the
 * ones still running.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Client } from './client';
import { CLI, launch, onPath, tcpproxyArgv, type DaemonOptions, type LaunchOptions, type Launched } from './daemon';
import { killGroup } from './kill';
import { listensOn, parentOf } from './proc';
import { until } from './until';

export const INETD = '/usr/sbin/inetd';
export const SOCKET_ACTIVATE = '/usr/bin/systemd-socket-activate';

export function executable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Starts `argv` in a process group of its own (helpers/daemon launch, detached). */
export function startInGroup(argv: readonly string[], opts: Omit<LaunchOptions, 'detached'> = {}): Launched {
  return launch(argv, { ...opts, detached: true });
}

/** Resolves once `daemon` listens on every address; fails with its output if it exits or the deadline passes. */
export async function waitListening(
  daemon: Launched,
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

export interface Inetd extends Launched {
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
    for (const pid of started()) if (parentOf(pid) === inetdPid) killGroup(pid);
  };
  const d = startInGroup([INETD, '-d', conf], { ...(env === undefined ? {} : { env }), beforeKill });
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
  readonly proxy: Launched;
  /** The port tcpproxy's socket is on (the listener the test accepted it from). */
  readonly port: number;
}

/**
 * Accepts one connection on 127.0.0.1 (an ephemeral port unless `port`) and
 * starts `tcpproxy ...args` with the accepted socket on fds 0, 1 and 2, as
 * inetd's `nowait` does. The test's own copy of the socket is closed at once,
 * so tcpproxy alone holds the connection. With `syslog` (a bind-mount
 * sink of helpers/syslog), tcpproxy runs under `unshare -m` with it mounted
 * over /dev/log, as startDaemon does; `localAddress` is the client's source.
 */
export async function serveOneConnection(
  args: readonly string[],
  opts: {
    readonly env?: NodeJS.ProcessEnv;
    readonly port?: number;
    readonly host?: string;
    readonly localAddress?: string;
    readonly syslog?: DaemonOptions['syslog'];
    /** Programs in front of node (DaemonOptions.wrapper). */
    readonly wrapper?: readonly string[];
  } = {},
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
    const client = await Client.connect(host, port, opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {});
    const sock = await accepted;
    const argv = [...(opts.wrapper ?? []), ...(opts.syslog === undefined ? [process.execPath, CLI, ...args] : tcpproxyArgv(args, opts.syslog))];
    const proxy = startInGroup(argv, {
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
): Launched {
  const python = onPath('python3');
  if (python === null) throw new Error('python3 is not on PATH: the socket activation launcher needs it');
  const env = { ...(opts.env ?? process.env), LAUNCHER_PID_OFFSET: String(opts.pidOffset ?? 0) };
  return startInGroup(
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
