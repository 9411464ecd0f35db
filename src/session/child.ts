/**
 * Starting a request handler or an access control program: the native
 * spawn primitive (clone with CLONE_VM | CLONE_VFORK, no fork of the Node
 * process), in the service's sandbox, wrapped for the session code.
 */
import * as net from 'node:net';
import { constants } from 'node:os';
import { SysError } from '../sys/errors';
import { native } from '../sys/native';
import type { Sandbox } from '../table/service';

export interface ChildExit {
  readonly code: number | null;
  /** The signal's name, e.g. `SIGKILL`. */
  readonly signal: string | null;
}

export interface Started {
  readonly pid: number;
  /** The child's stderr, read end of its pipe. */
  readonly stderr: net.Socket;
  /** Resolves once the child is reaped. */
  readonly exited: Promise<ChildExit>;
  /** Resolves once it is reaped and its stderr is at EOF (Node's 'close'). */
  readonly closed: Promise<ChildExit>;
}

const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name] as const));

function envArray(env: NodeJS.ProcessEnv): string[] {
  return Object.entries(env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`]));
}

/**
 * Starts argv with the client (or /dev/null, for null) on fds 0 and 1, in
 * its own session (no controlling terminal) and `sandbox`. Throws a
 * SysError (`spawn ENOENT`, ...) when the program cannot be run.
 */
export function startProgram(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  stdin: number | null,
  stdout: number | null,
  sandbox: Sandbox,
): Started {
  const name = argv[0] ?? '';
  let onExit: (e: ChildExit) => void = () => {};
  const exited = new Promise<ChildExit>((resolve) => (onExit = resolve));
  // argv[0] is an absolute path: table/programs.ts resolved it at start.
  const r = native().spawnChild(name, argv, envArray(env), stdin ?? -1, stdout ?? -1, sandbox, (x) => {
    if (x.error !== undefined) onExit({ code: null, signal: null });
    else onExit({ code: x.code ?? null, signal: x.signal === undefined ? null : (SIGNAL_NAMES.get(x.signal) ?? `signal ${x.signal}`) });
  });
  let stderr: net.Socket;
  try {
    stderr = new net.Socket({ fd: r.stderr, readable: true, writable: false });
  } catch (err) {
    // Started but not watchable: it must not keep the client, so it and its group go.
    try {
      process.kill(-r.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
    native().close(r.stderr);
    throw err;
  }
  const eof = new Promise<void>((resolve) => {
    stderr.once('close', () => resolve());
    stderr.once('error', () => stderr.destroy());
  });
  return { pid: r.pid, stderr, exited, closed: Promise.all([exited, eof]).then(([e]) => e) };
}

/** `spawn ENOENT` and the like, for an error thrown by startProgram. */
export function spawnFailure(err: unknown): string {
  if (err instanceof SysError) return `spawn ${err.code}`;
  const e = err as { code?: unknown; message?: unknown };
  return `spawn ${typeof e.code === 'string' ? e.code : String(e.message ?? err)}`;
}
