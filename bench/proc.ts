/**
 * Reading the cost of a process tree from /proc: CPU time (utime + stime of
 * every live process in the tree, plus what the root has reaped from
 * children that ended: cutime + cstime) and resident memory (VmRSS summed).
 * The tree is found by scanning /proc/[0-9]*\/stat for parent pids, so it
 * also sees children a non-main thread forked and socat's per-connection
 * processes.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

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

export interface Stat {
  readonly pid: number;
  readonly ppid: number;
  readonly state: string;
  readonly utime: number;
  readonly stime: number;
  readonly cutime: number;
  readonly cstime: number;
}

export function readStat(pid: number): Stat | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  // comm may hold spaces and parentheses: the fields start after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const n = (i: number): number => Number(f[i] ?? 0);
  return { pid, state: f[0] ?? '?', ppid: n(1), utime: n(11), stime: n(12), cutime: n(13), cstime: n(14) };
}

/** Every process: pid → parent pid. */
function parentMap(): Map<number, number[]> {
  const children = new Map<number, number[]>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (!st) continue;
    const list = children.get(st.ppid);
    if (list) list.push(st.pid);
    else children.set(st.ppid, [st.pid]);
  }
  return children;
}

/** The root and all its live descendants (zombies excluded). */
export function processTree(root: number): number[] {
  const children = parentMap();
  const out: number[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const pid = todo.pop() as number;
    const st = readStat(pid);
    if (!st || st.state === 'Z') continue;
    out.push(pid);
    for (const c of children.get(pid) ?? []) todo.push(c);
  }
  return out;
}

/** CPU seconds used by the tree so far, including children the root has reaped. */
export function treeCpuSeconds(root: number): number {
  let ticks = 0;
  for (const pid of processTree(root)) {
    const st = readStat(pid);
    if (!st) continue;
    ticks += st.utime + st.stime;
    if (pid === root) ticks += st.cutime + st.cstime;
  }
  return ticks / clockTicks();
}

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
 * the processes, e.g. socat's forks, count once per process), the same as PSS
 * (shared pages split), and how many processes it has.
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

export function alive(pid: number): boolean {
  const st = readStat(pid);
  return st !== null && st.state !== 'Z';
}

export function loadAverage(): string {
  try {
    return fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return '?';
  }
}

/** Is something listening on port (any address, IPv4 or IPv6)? From /proc/net/tcp*, without connecting. */
export function isListening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(table, 'latin1');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f[3] === '0A' && f[1]?.endsWith(`:${hex}`)) return true;
    }
  }
  return false;
}
