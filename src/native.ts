/**
 * The only module that loads the C++ addon. It checks the ABI version and
 * gives the rest of the code a typed interface. A missing addon is not an
 * error here: callers ask `loadNative()` and decide (the JS engine is the
 * fallback, announced loudly by the caller).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SysError } from './errors';

export type PumpEnd = 'eof' | 'idle-timeout' | 'reset' | 'error' | 'aborted';

/** Completion record of one forwarded connection. */
export interface PumpResult {
  readonly end: PumpEnd;
  /** Bytes moved client → server. */
  readonly bytesUp: number;
  /** Bytes moved server → client. */
  readonly bytesDown: number;
  readonly durationMs: number;
  /** Which path moved the bytes: `splice` (kernel pipes) or `copy` (read/write fallback). */
  readonly path: 'splice' | 'copy';
  /** For `reset` and `error`: the failed call. */
  readonly error?: SysError;
  /** For `reset` and `error`: the side it happened on. */
  readonly side?: 'client' | 'server';
}

export interface PumpRequest {
  /** Client socket fd, owned by the pump from now on (closed by it). */
  readonly client: number;
  /** Upstream socket fd, owned by the pump from now on. */
  readonly server: number;
  /** Idle timeout in ms; 0 = none. Reset by every byte moved either way. */
  readonly idleMs: number;
  /** Use the read/write path from the start (tests, transcripts). */
  readonly copy?: boolean;
}

export interface PumpHandle {
  /** Abort the session: both sockets are reset and closed; `done` runs with `aborted`. */
  abort(): void;
}

export interface SockAddress {
  readonly address: string;
  readonly port: number;
}

export interface SockName {
  readonly local: SockAddress;
  readonly peer: SockAddress | null;
  readonly stream: boolean;
  readonly listening: boolean;
}

export interface Addon {
  readonly abiVersion: number;
  init(sysError: typeof SysError): void;
  dupCloexec(fd: number): number;
  close(fd: number): void;
  /** Sets O_NONBLOCK (a child with the socket on its stdio cleared it). */
  setNonblock(fd: number): void;
  /** Marks every fd >= first close-on-exec. */
  cloexecFrom(first: number): void;
  /** dup2(fd, target) for target 0, 1 or 2. */
  dupOnto(fd: number, target: number): void;
  /** Local and peer address of an IP socket; null when fd is not one. */
  sockName(fd: number): SockName | null;
  /** setgroups(0), setresgid, setresuid; throws unless root can no longer be regained. */
  dropPrivileges(uid: number, gid: number): void;
  /** Replaces the process: stdio kept (O_NONBLOCK cleared), other fds closed, signals reset. Returns only by throwing. */
  execve(file: string, argv: readonly string[], env: readonly string[]): never;
  openLog(ident: string, facility: number): void;
  syslog(priority: number, line: string): void;
  pump?(req: PumpRequest, done: (r: PumpResult) => void): PumpHandle;
  /** Live sessions, pipes in use and idle in the pool, poll wake-ups: for tests and diagnostics. */
  pumpStats?(): { sessions: number; pipesBusy: number; pipesIdle: number; wakeups: number };
}

const ABI_VERSION = 1;

let cached: { addon: Addon | null; reason: string } | undefined;

function addonPath(): string {
  const kind = process.env['TCPPROXY_DEBUG_NATIVE'] === '1' ? 'Debug' : 'Release';
  // src/native.ts (ts-jest) sits one level below the package root, dist/src/native.js two.
  const roots = [path.join(__dirname, '..'), path.join(__dirname, '..', '..')];
  const files = roots.map((r) => path.join(r, 'build', kind, 'tcpproxy.node'));
  return files.find((f) => fs.existsSync(f)) ?? (files[0] as string);
}

/** The addon, or null with the reason it could not be loaded. */
export function loadNative(): { addon: Addon | null; reason: string } {
  if (cached) return cached;
  const file = addonPath();
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const addon = require(file) as Addon;
    if (addon.abiVersion !== ABI_VERSION) {
      cached = {
        addon: null,
        reason: `native addon is stale (abi ${addon.abiVersion}, expected ${ABI_VERSION}): run "npm rebuild"`,
      };
    } else {
      addon.init(SysError);
      cached = { addon, reason: '' };
    }
  } catch (err) {
    cached = { addon: null, reason: `native addon not loaded (${file}): ${(err as Error).message.split('\n')[0]}` };
  }
  return cached;
}
