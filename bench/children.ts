/**
 * Child processes of the benchmark: every one is started pinned to a CPU
 * (`taskset -c CPU prog ...`, which execs the program under the same pid),
 * recorded, and killed by pid (its whole process tree: test/helpers/kill)
 * when done or when the benchmark ends, whatever way it ends.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { killTree as killTreeNow, stopTree } from '../test/helpers/kill';

const running = new Set<ChildProcess>();

export function pinned(cpu: number, cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn('taskset', ['-c', String(cpu), cmd, ...args], opts);
  running.add(child);
  child.on('exit', () => running.delete(child));
  child.on('error', () => running.delete(child));
  return child;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Stops a child and everything below it: SIGTERM to the root, up to
 * `graceMs` for it to go, then SIGKILL to what is left of the tree.
 */
export async function killTree(child: ChildProcess, graceMs = 2000): Promise<void> {
  await stopTree(child, graceMs);
  running.delete(child);
}

/** Synchronous last resort (exit handlers): SIGKILL to every tree still running. */
export function killAllNow(): void {
  for (const child of running) if (child.pid !== undefined) killTreeNow(child.pid);
  running.clear();
}

export async function killAll(): Promise<void> {
  await Promise.all([...running].map((c) => killTree(c, 1000)));
}

/** The next IPC message of `type` from a child, or a rejection after `timeoutMs` or on exit. */
export function nextMessage<T extends { type: string }>(child: ChildProcess, type: T['type'], timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      child.off('message', onMsg);
      child.off('exit', onExit);
    };
    const onMsg = (m: T): void => {
      if (m.type !== type) return;
      done();
      resolve(m);
    };
    const onExit = (code: number | null, sig: string | null): void => {
      done();
      reject(new Error(`child ${child.pid ?? '?'} exited (${sig ?? code ?? '?'}) while waiting for ${type}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${type} from child ${child.pid ?? '?'}`));
    }, timeoutMs);
    child.on('message', onMsg);
    child.on('exit', onExit);
  });
}

/** Runs a pinned command to its end; stdout as text. Killed (tree) after `timeoutMs`. */
export function runPinned(
  cpu: number,
  cmd: string,
  args: readonly string[],
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = pinned(cpu, cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      void killTree(child, 500);
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: null, stdout, stderr: stderr + err.message, timedOut });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}
