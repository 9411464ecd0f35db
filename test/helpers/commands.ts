/**
 * Commands run to their exit with a deadline, and children a test spawns
 * itself: each is tracked until it exits, and killStarted() (part of
 * helpers/setup cleanUpAfterEach) SIGKILLs what still runs, with its
 * descendants.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { descendants } from './proxy';

const started = new Set<ChildProcess>();

/** SIGKILLs `pid` and every descendant of it (those already gone are skipped). */
export function killTree(pid: number): void {
  for (const p of [pid, ...descendants(pid)]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** Tracks `child` until it exits: killStarted() kills it (and its descendants) if it still runs. */
export function killLater<C extends ChildProcess>(child: C): C {
  started.add(child);
  child.once('exit', () => started.delete(child));
  return child;
}

/** SIGKILLs every tracked child still running, with its descendants, and forgets them all. */
export function killStarted(): void {
  for (const c of started) if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) killTree(c.pid);
  started.clear();
}

export interface RunOptions {
  readonly cwd: string;
  /** The environment; the test's own when not given. */
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs: number;
  /** Run as this user and group (spawn's uid/gid; root only). */
  readonly uid?: number;
  readonly gid?: number;
  /** stdout and stderr as one text, in the order they came, in `stdout` (`stderr` stays ''). */
  readonly together?: boolean;
}

export interface Ran {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  /** With a note of a failed spawn or of the kill at the deadline. */
  readonly stderr: string;
}

/**
 * Runs `cmd args` in `cwd` to its exit, stdin /dev/null; at the deadline it
 * is killed with its descendants (`[killed after N ms]` added to stderr).
 * Tracked like killLater() children.
 */
export function runToExit(cmd: string, args: readonly string[], opts: RunOptions): Promise<Ran> {
  const child = killLater(
    spawn(cmd, args, {
      cwd: opts.cwd,
      ...(opts.env !== undefined ? { env: opts.env } : {}),
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  let stdout = '';
  let stderr = '';
  const err = (s: string): void => {
    if (opts.together === true) stdout += s;
    else stderr += s;
  };
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', err);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      if (child.pid !== undefined) killTree(child.pid);
      err(`\n[killed after ${opts.timeoutMs} ms]`);
    }, opts.timeoutMs);
    child.on('error', (e) => err(`spawn failed: ${e.message}\n`));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
