/**
 * The kernel's view, read from /proc (Linux): processes (stat, status, argv,
 * the process tree, memory and CPU time), their descriptors, and the TCP and
 * AF_UNIX socket tables. The one place tests and bench/ read /proc; nothing
 * here uses jest, so bench/ (built by tsconfig.build.json) imports it too.
 * Readers of a process that may be gone return null, '' or an empty set
 * where noted; the others throw.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { until } from './until';

// ------------------------------------------------------------- /proc/PID/stat

/** The fields of /proc/PID/stat a test or the benchmark reads (times in clock ticks). */
export interface Stat {
  readonly pid: number;
  /** R, S, D, Z, ... */
  readonly state: string;
  readonly ppid: number;
  readonly pgrp: number;
  readonly session: number;
  readonly ttyNr: number;
  readonly utime: number;
  readonly stime: number;
  readonly cutime: number;
  readonly cstime: number;
  /** utime + stime. */
  readonly cpuTicks: number;
  /** Start time after boot: with the pid, names a process even when pids are reused. */
  readonly starttime: number;
}

/** /proc/PID/stat, or null when the process is gone. */
export function readStat(pid: number | 'self'): Stat | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  return parseStat(text);
}

/** The text of a /proc/PID/stat (read by the test, or printed by a handler that ran `cat /proc/self/stat`). */
export function parseStat(text: string): Stat {
  // "pid (comm) state ppid ...": comm may hold blanks and parentheses, so the
  // fields start after the last ')'; f[i] is field i + 3 of proc(5).
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const n = (i: number): number => Number(f[i] ?? 0);
  return {
    pid: Number(text.slice(0, text.indexOf(' '))),
    state: f[0] ?? '?',
    ppid: n(1),
    pgrp: n(2),
    session: n(3),
    ttyNr: n(4),
    utime: n(11),
    stime: n(12),
    cutime: n(13),
    cstime: n(14),
    cpuTicks: n(11) + n(12),
    starttime: n(19),
  };
}

/**
 * The text of a /proc/PID/limits (as a handler printed it): limit name
 * (`Max open files`) → soft and hard limit as written (`64`, `unlimited`).
 */
export function parseLimits(text: string): Map<string, { soft: string; hard: string }> {
  const out = new Map<string, { soft: string; hard: string }>();
  for (const line of text.split('\n').slice(1)) {
    const m = /^(Max [a-z ]+?)\s{2,}(\S+)\s+(\S+)/.exec(line);
    if (m !== null) out.set(m[1] ?? '', { soft: m[2] ?? '', hard: m[3] ?? '' });
  }
  return out;
}

/** The options of the mount that holds `file` (the longest mount point above it in /proc/self/mountinfo), e.g. `rw,nosuid,nodev`. */
export function mountOptions(file: string): string[] {
  const real = fs.realpathSync(file);
  let best = '';
  let options: string[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ...; blanks in paths are written \040.
    const f = line.split(' ');
    const point = (f[4] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    const inside = point === '/' || real === point || real.startsWith(`${point}/`);
    if (point !== '' && inside && point.length >= best.length) {
      best = point;
      options = (f[5] ?? '').split(',');
    }
  }
  return options;
}

/** The pids of /proc, in directory order. */
export function allPids(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number);
}

/** The stat of every process (those that exit meanwhile are left out). */
export function allStats(): Stat[] {
  return allPids().flatMap((pid) => readStat(pid) ?? []);
}

/** True while the process exists (a zombie counts as gone). */
export function alive(pid: number): boolean {
  const st = readStat(pid);
  return st !== null && st.state !== 'Z';
}

/** The parent pid of `pid`, or null when it is gone. */
export function parentOf(pid: number): number | null {
  return readStat(pid)?.ppid ?? null;
}

/** The pids below `pid` in the process tree (breadth first; zombies included). */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const st of allStats()) {
    const list = children.get(st.ppid) ?? [];
    list.push(st.pid);
    children.set(st.ppid, list);
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

/** The root and all its live descendants (zombies excluded). */
export function processTree(root: number): number[] {
  return [root, ...descendants(root)].filter(alive);
}

/** Zombie children of any of `parents`. */
export function zombiesOf(parents: readonly number[]): number[] {
  return allStats()
    .filter((s) => s.state === 'Z' && parents.includes(s.ppid))
    .map((s) => s.pid);
}

// ------------------------------------------------------ status, argv, comm

/** The fields of /proc/PID/status (or of a thread: `PID/task/TID`). */
export function procStatus(pid: number | string): Map<string, string> {
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

/** The ids of a process (or of a thread: `PID/task/TID`) from its status. */
export function procIds(pid: number | string): ProcIds {
  const s = procStatus(pid);
  return { uid: numbers(s.get('Uid')), gid: numbers(s.get('Gid')), groups: numbers(s.get('Groups')) };
}

/** The ids of every thread of `pid`, each named `PID/TID`. */
export function threadIds(pid: number): (ProcIds & { readonly task: string })[] {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => ({ task: `${pid}/${tid}`, ...procIds(`${pid}/task/${tid}`) }));
}

/** argv of a process (empty for a zombie or a kernel thread). */
export function procArgv(pid: number): string[] {
  const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  const parts = raw.split('\0');
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

/** The command line of a process, arguments joined by blanks ('' once it is gone). */
export function cmdline(pid: number): string {
  try {
    return procArgv(pid).join(' ').trim();
  } catch {
    return '';
  }
}

/** The command name of a process ('?' once it is gone). */
export function comm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/** Pids of the live processes with `token` among their arguments (argv[1..]) and, if given, that argv[0] basename. */
export function findProcesses(token: string, argv0?: string): number[] {
  const out: number[] = [];
  for (const pid of allPids()) {
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

/**
 * Pids of the live tcpproxy processes (their process title starts with
 * `tcpproxy: `, or `token` is among their arguments, for one that has not
 * set its title yet) whose working directory is `cwd`.
 */
export function tcpproxyProcessesIn(cwd: string, token: string): number[] {
  const out = new Set(findProcesses(token));
  for (const pid of allPids()) {
    if (pid === process.pid) continue;
    try {
      if (cmdline(pid).startsWith('tcpproxy: ') && fs.readlinkSync(`/proc/${pid}/cwd`) === cwd) out.add(pid);
    } catch {
      // exited meanwhile
    }
  }
  return [...out];
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

// ------------------------------------------------------------ memory, CPU

let hz: number | undefined;

/** Clock ticks per second (the unit of /proc/PID/stat times). */
export function clockTicks(): number {
  if (hz === undefined) {
    try {
      hz = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      hz = 100;
    }
  }
  return hz;
}

/**
 * CPU seconds used by the tree so far: every process in it (zombies too,
 * until they are reaped) plus the children that any of them has reaped
 * (`cutime + cstime`: a handler reaped by a tcpproxy worker, a service by
 * inetd, a fork by socat). A process reaped by its parent in the tree moves
 * from its own times into the parent's cutime/cstime, so it counts once.
 */
export function treeCpuSeconds(root: number): number {
  let ticks = 0;
  for (const pid of [root, ...descendants(root)]) {
    const st = readStat(pid);
    if (!st) continue;
    ticks += st.cpuTicks + st.cutime + st.cstime;
  }
  return ticks / clockTicks();
}

/** VmRSS of a process, KiB (0 once it is gone). */
export function vmRssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Proportional set size (shared pages divided among their users), KiB. */
export function pssKiB(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/**
 * Resident memory of the whole tree, KiB (VmRSS summed: pages shared between
 * the processes count once per process), the same as PSS (shared pages
 * split), and how many processes it has.
 */
export function treeRss(root: number): { kib: number; pssKib: number; procs: number } {
  const pids = processTree(root);
  let kib = 0;
  let pssKib = 0;
  for (const pid of pids) {
    kib += vmRssKiB(pid);
    pssKib += pssKiB(pid);
  }
  return { kib, pssKib, procs: pids.length };
}

export function loadAverage(): string {
  try {
    return fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return '?';
  }
}

// ------------------------------------------------------------- descriptors

/** The open descriptors of a process, as numbers, sorted. */
export function openFds(pid: number): number[] {
  return fs
    .readdirSync(`/proc/${pid}/fd`)
    .map(Number)
    .sort((a, b) => a - b);
}

/** readlink /proc/PID/fd/FD: `socket:[123]`, `pipe:[456]`, a path. */
export function fdTarget(pid: number | 'self', fd: number | string): string {
  return fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
}

/** The targets of every open descriptor (those closed meanwhile left out; throws when the process is gone). */
export function fdTargets(pid: number | 'self'): string[] {
  return fs.readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
    try {
      return [fdTarget(pid, fd)];
    } catch {
      return []; // closed meanwhile (for 'self': the fd of the readdir itself)
    }
  });
}

/** The inode of `socket:[N]` / `pipe:[N]`, or null. */
export function inodeOf(target: string): { kind: 'socket' | 'pipe'; inode: number } | null {
  const m = /^(socket|pipe):\[(\d+)\]$/.exec(target);
  return m === null ? null : { kind: m[1] as 'socket' | 'pipe', inode: Number(m[2]) };
}

/** The socket inodes among the open fds of `pid` (empty when it is gone). */
export function socketInodesOf(pid: number): Set<number> {
  const out = new Set<number>();
  let targets: string[];
  try {
    targets = fdTargets(pid);
  } catch {
    return out;
  }
  for (const t of targets) {
    const i = inodeOf(t);
    if (i?.kind === 'socket') out.add(i.inode);
  }
  return out;
}

/**
 * The open descriptors of `pid` by kind: `tcp` (a TCP socket), `socket` (any
 * other: an IPC channel, syslog's), `pipe`, else the link target itself
 * (`anon_inode:[eventpoll]`, a path...). Throws when the process is gone.
 */
export function fdKinds(pid: number, tcp: ReadonlySet<number> = tcpInodes()): Map<string, number> {
  const out = new Map<string, number>();
  for (const target of fdTargets(pid)) {
    const i = inodeOf(target);
    const kind = i === null ? target : i.kind === 'socket' && tcp.has(i.inode) ? 'tcp' : i.kind;
    out.set(kind, (out.get(kind) ?? 0) + 1);
  }
  return out;
}

/**
 * True when `now` is back at `base` (both of fdKinds): every kind of
 * descriptor exactly, except
 * - `socket` (non-TCP) may differ by one: syslog(3)'s connection to /dev/log,
 *   which glibc opens and closes as /dev/log comes and goes (other test files
 *   put a sink there);
 * - `pipe` may exceed the baseline by up to `extraPipes` (the pump's pool).
 */
export function backToBase(base: Map<string, number>, now: Map<string, number>, extraPipes: number): boolean {
  for (const k of new Set([...base.keys(), ...now.keys()])) {
    const [b, n] = [base.get(k) ?? 0, now.get(k) ?? 0];
    if (k === 'socket' ? Math.abs(n - b) > 1 : k === 'pipe' ? n < b || n - b > extraPipes : n !== b) return false;
  }
  return true;
}

/** fdKinds as text, kinds sorted: `{"pipe":2,"socket":1,"tcp":3}`. */
export function showKinds(kinds: Map<string, number>): string {
  return JSON.stringify(Object.fromEntries([...kinds].sort()));
}

/** How many of `pid`'s descriptors are TCP sockets (throws when it is gone). */
export function tcpFdCount(pid: number): number {
  return fdKinds(pid).get('tcp') ?? 0;
}

/** inode → the pids holding it, over every process. */
export function holders(inodes: ReadonlySet<number>): Map<number, Set<number>> {
  const out = new Map<number, Set<number>>();
  for (const pid of allPids()) {
    for (const inode of socketInodesOf(pid)) {
      if (!inodes.has(inode)) continue;
      const set = out.get(inode) ?? new Set<number>();
      set.add(pid);
      out.set(inode, set);
    }
  }
  return out;
}

// ----------------------------------------------------------------- sockets

/** Kernel TCP states (include/net/tcp_states.h). */
export const TCP_ESTABLISHED = 1;
export const TCP_LISTEN = 10;

export interface TcpSocket {
  readonly inode: number;
  /** /proc/net/tcp's hex form, e.g. `0100007F:1F90` (see procAddress). */
  readonly local: string;
  readonly remote: string;
  readonly localPort: number;
  readonly remotePort: number;
  /** Kernel state number (1 = ESTABLISHED, 10 = LISTEN). */
  readonly state: number;
  /** Bytes received and not yet read (`rx_queue`; for a LISTEN socket, its accept queue's length). */
  readonly rxQueue: number;
  /** The pending timer (`tr`: 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero-window probe) and when it fires, in clock ticks. */
  readonly timer: number;
  readonly timerTicks: number;
}

/** The lines of a /proc/net table without its header; none when it cannot be read (no IPv6, say). */
function netTable(file: string): string[] {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(1);
  } catch {
    return [];
  }
}

/** Every TCP socket of /proc/net/tcp and /proc/net/tcp6. */
export function tcpSockets(): TcpSocket[] {
  const out: TcpSocket[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    for (const line of netTable(file)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const local = f[1] ?? '';
      const remote = f[2] ?? '';
      out.push({
        local,
        remote,
        localPort: parseInt(local.slice(local.lastIndexOf(':') + 1), 16),
        remotePort: parseInt(remote.slice(remote.lastIndexOf(':') + 1), 16),
        state: parseInt(f[3] ?? '0', 16),
        rxQueue: parseInt((f[4] ?? '0:0').split(':')[1] ?? '0', 16),
        timer: parseInt((f[5] ?? '0:0').split(':')[0] ?? '0', 16),
        timerTicks: parseInt((f[5] ?? '0:0').split(':')[1] ?? '0', 16),
        inode: Number(f[9]),
      });
    }
  }
  return out;
}

/** Inodes of every TCP socket (IPv4 and IPv6) the kernel knows. */
export function tcpInodes(): Set<number> {
  return new Set(tcpSockets().map((s) => s.inode));
}

/** /proc/net/tcp's hex form of an IPv4 address (host byte order) and port. */
export function procAddress(host: string, port: number): string {
  const p = port.toString(16).toUpperCase().padStart(4, '0');
  if (!net.isIPv4(host)) throw new Error(`procAddress: only IPv4 literals are supported, not ${host}`);
  const hex = host
    .split('.')
    .map(Number)
    .reverse()
    .map((b) => b.toString(16).toUpperCase().padStart(2, '0'))
    .join('');
  return `${hex}:${p}`;
}

/**
 * Which of `pids` hold the accepted end of the IPv4 connection from
 * `remote` (the client's address and port) to local port `localPort`:
 * which worker a connection went to.
 */
export function holdersOfConnection(pids: readonly number[], localPort: number, remote: { readonly host: string; readonly port: number }): number[] {
  const want = procAddress(remote.host, remote.port);
  const inodes = new Set(tcpSockets().filter((s) => s.localPort === localPort && s.remote === want).map((s) => s.inode));
  return pids.filter((pid) => [...socketInodesOf(pid)].some((i) => inodes.has(i)));
}

/**
 * The server's end of the IPv4 connection from `remote` to local port
 * `localPort`, or null when there is none. Its inode is 0 while it waits in
 * the listen queue: a socket gets an inode (a file) only when a process
 * accepts it.
 */
export function serverEnd(localPort: number, remote: { readonly host: string; readonly port: number }): TcpSocket | null {
  const want = procAddress(remote.host, remote.port);
  return tcpSockets().find((s) => s.localPort === localPort && s.remote === want && s.state !== TCP_LISTEN) ?? null;
}

/** Inodes of the TCP sockets in LISTEN state on exactly host:port (IPv4). */
export function listeningInodes(host: string, port: number): number[] {
  const want = procAddress(host, port);
  return tcpSockets()
    .filter((s) => s.local === want && s.state === TCP_LISTEN)
    .map((s) => s.inode);
}

/** True when `pid` holds a listening socket on host:port. */
export function listensOn(pid: number, host: string, port: number): boolean {
  const mine = socketInodesOf(pid);
  return listeningInodes(host, port).some((i) => mine.has(i));
}

/** Is something listening on `port` (any address, IPv4 or IPv6)? Without connecting. */
export function isListening(port: number): boolean {
  return tcpSockets().some((s) => s.state === TCP_LISTEN && s.localPort === port);
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

/** What the kernel says about a socket inode: its /proc/net line (tcp, tcp6, unix, udp, netlink), for failure messages. */
export function describeSocket(inode: number): string {
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6', '/proc/net/unix', '/proc/net/udp', '/proc/net/netlink']) {
    for (const line of netTable(file)) {
      if (line.trim().split(/\s+/).includes(String(inode))) return `${file}: ${line.trim()}`;
    }
  }
  return `inode ${inode}: not in /proc/net`;
}

/** Processes stopProcess stopped and resumeProcess has not resumed yet. */
const stoppedPids: number[] = [];

/** SIGSTOPs `pid` and waits until it is stopped (state T); resumeStopped (a cleanup) resumes it if the test does not. */
export async function stopProcess(pid: number): Promise<void> {
  stoppedPids.push(pid);
  process.kill(pid, 'SIGSTOP');
  await until(() => readStat(pid)?.state === 'T', `process ${pid} to stop`, 5000);
}

export function resumeProcess(pid: number): void {
  process.kill(pid, 'SIGCONT');
  stoppedPids.splice(stoppedPids.indexOf(pid), 1);
}

/** SIGCONTs every process a test stopped and did not resume (it failed meanwhile), so it can be stopped cleanly. */
export function resumeStopped(): void {
  for (const pid of stoppedPids.splice(0)) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone
    }
  }
}
