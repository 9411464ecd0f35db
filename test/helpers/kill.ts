/**
 * The one process-tree killer of the tests and bench/: a process, the
 * process group it leads (if it leads one: a detached child, a daemon that
 * called setsid) and every descendant, each named by pid and start time so
 * that a pid reused meanwhile is never hit. Jest-free (bench/ imports it).
 */
import type { ChildProcess } from 'node:child_process';
import { findProcesses, descendants, readStat } from './proc';
import { until } from './until';

/** A process as of a moment: its pid and start time. */
export interface ProcRef {
  readonly pid: number;
  readonly starttime: number;
}

/** Sends `sig` to each pid; those already gone are skipped. */
export function signalPids(pids: readonly number[], sig: NodeJS.Signals = 'SIGKILL'): void {
  for (const p of pids) {
    try {
      process.kill(p, sig);
    } catch {
      // ESRCH: already gone
    }
  }
}

/** `pid` and its descendants as they are now (those already gone left out). */
export function snapshotTree(pid: number): ProcRef[] {
  return [pid, ...descendants(pid)].flatMap((p) => {
    const st = readStat(p);
    return st === null ? [] : [{ pid: p, starttime: st.starttime }];
  });
}

/** SIGKILLs each process of `refs` that is still the one it was (same start time) and not yet reaped. */
export function killRefs(refs: readonly ProcRef[]): void {
  signalPids(
    refs.filter((r) => {
      const st = readStat(r.pid);
      return st !== null && st.starttime === r.starttime && st.state !== 'Z';
    }).map((r) => r.pid),
  );
}

/**
 * SIGKILLs `pid`, the process group it leads and every descendant (read
 * first, so that none is reparented away between the kills). The group
 * catches what the tree no longer shows: a worker whose master has already
 * exited. Plus `also`: processes of the tree recorded earlier (by
 * snapshotTree), killed if they still run.
 */
export function killTree(pid: number, also: readonly ProcRef[] = []): void {
  const tree = snapshotTree(pid);
  killGroup(pid);
  killRefs([...tree, ...also]);
}

/** SIGKILLs the process group `pgid` (nothing when there is none: `pgid` leads no group, or it is gone). */
export function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // ESRCH
  }
}

/**
 * Stops a child and everything below it: SIGTERM to the child, up to
 * `graceMs` for it to exit, then killTree (with the tree as it was before
 * the SIGTERM: once the child has exited its children belong to init).
 */
export async function stopTree(child: ChildProcess, graceMs = 5000): Promise<void> {
  const root = child.pid;
  if (root === undefined) return;
  const before = snapshotTree(root);
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  if (running()) {
    child.kill('SIGTERM');
    await until(() => !running(), 'the child to exit', graceMs).catch(() => undefined);
  }
  killTree(root, before);
}

/** SIGKILLs every process with `token` among its arguments (cleanup: by pid). */
export function killProcesses(token: string): void {
  signalPids(findProcesses(token));
}
