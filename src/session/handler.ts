/**
 * Request handlers and access control programs: their environment, and
 * running them with the client socket on their standard input/output.
 * Both run in the process of the service's identity (never root).
 */
import { socketFd } from '../forward/socket';
import type { Endpoints, HeldClient } from '../forward/types';
import { spawnFailure, startProgram, type Started } from './child';
import { splitCommand, type Sandbox } from '../table/service';
import { errorText } from '../sys/errors';

/** PATH of a handler started with `-y` (cleared environment). */
export const SAFE_PATH = '/usr/local/bin:/usr/bin:/bin';
/** Bytes of an ACP's stderr kept for the log. */
export const ACP_MESSAGE_MAX = 1024;

/** Variables Node puts into a forked worker's environment: never passed on. */
const NODE_INTERNAL = ['NODE_CHANNEL_FD', 'NODE_CHANNEL_SERIALIZATION_MODE', 'NODE_UNIQUE_ID'];

export interface EnvRequest {
  readonly prefix: string;
  readonly endpoints: Endpoints;
  readonly clientName: string;
  /** `-y`: start from an empty environment (plus PATH=SAFE_PATH). */
  readonly clearEnv: boolean;
  readonly base: NodeJS.ProcessEnv;
}

export function handlerEnv(r: EnvRequest): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = r.clearEnv ? { PATH: SAFE_PATH } : { ...r.base };
  for (const k of NODE_INTERNAL) delete env[k];
  env[`${r.prefix}PORT`] = String(r.endpoints.localPort);
  env[`${r.prefix}INTERFACE`] = r.endpoints.localAddress;
  env[`${r.prefix}CLIENT`] = r.endpoints.clientAddress;
  env[`${r.prefix}CLIENTNAME`] = r.clientName;
  return env;
}

/** The client's fd, for a child's stdio. */
function clientFd(client: HeldClient): number {
  return client.kind === 'fd' ? client.fd : socketFd(client.sock);
}

export interface AcpVerdict {
  readonly granted: boolean;
  /** `exit 0`, `exit 1`, `signal SIGKILL`, `timeout`, or `spawn ENOENT`. */
  readonly status: string;
  /** What the ACP wrote to stderr (bounded, control characters removed). */
  readonly message: string;
}

/**
 * Runs the access control program: stdin /dev/null, stdout the client,
 * stderr read for the log. Exit 0 grants; anything else, or running past
 * `timeoutMs`, denies.
 */
export function runAcp(
  command: string,
  client: HeldClient,
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
  sandbox: Sandbox,
  signal?: AbortSignal,
): Promise<AcpVerdict> {
  const argv = splitCommand(command);
  return new Promise((resolve) => {
    let child: Started;
    try {
      child = startProgram(argv, env, null, clientFd(client), sandbox);
    } catch (err) {
      resolve({ granted: false, status: spawnFailure(err), message: '' });
      return;
    }
    let timedOut = false;
    // Its own process group: a verdict past the deadline kills the ACP and
    // whatever it started, which could otherwise hold the client open.
    const killGroup = (): void => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    };
    const onAbort = (): void => {
      timedOut = true;
      killGroup();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    let message = '';
    child.stderr.on('data', (chunk: Buffer) => {
      if (message.length < ACP_MESSAGE_MAX) message += chunk.toString('utf8');
    });
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            timedOut = true;
            killGroup();
          }, timeoutMs)
        : null;
    const clean = (): string =>
      message
        .slice(0, ACP_MESSAGE_MAX)
        // eslint-disable-next-line no-control-regex
        .replace(/[\x00-\x1f\x7f]+/g, ' ')
        .trim();
    void child.closed.then(({ code, signal: sig }) => {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      const status = timedOut ? 'timeout' : sig !== null ? `signal ${sig}` : `exit ${code ?? '?'}`;
      resolve({ granted: !timedOut && code === 0, status, message: clean() });
    }).catch((err: unknown) => {
      // Denied, never an unhandled rejection in the worker.
      if (timer) clearTimeout(timer);
      killGroup();
      resolve({ granted: false, status: `failed: ${errorText(err)}`, message: '' });
    });
  });
}

export interface HandlerExit {
  readonly status: string;
  readonly pid: number | undefined;
}

/**
 * Starts the request handler with the client on fds 0 and 1 and its stderr
 * going to the log, line by line. The caller releases its own copy of the
 * client at once (`spawned`), so the handler alone holds the connection.
 * A handler still running after `timeoutSec` (`handler-timeout`; 0: no
 * bound) is killed with its whole process group.
 */
export function runHandler(
  argv: readonly string[],
  client: HeldClient,
  env: NodeJS.ProcessEnv,
  sandbox: Sandbox,
  signal: AbortSignal | undefined,
  log: { stderr: (line: string) => void; spawned: () => void },
  timeoutSec = 0,
): Promise<HandlerExit> {
  return new Promise((resolve) => {
    let child: Started;
    try {
      const fd = clientFd(client);
      child = startProgram(argv, env, fd, fd, sandbox);
    } catch (err) {
      log.spawned();
      resolve({ status: spawnFailure(err), pid: undefined });
      return;
    }
    log.spawned();
    let done = false;
    const onAbort = (): void => {
      // The daemon is stopping and the grace period is over: the handler and its group get SIGTERM.
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // Already gone.
      }
      if (!done) {
        done = true;
        resolve({ status: 'killed at shutdown', pid: child.pid });
      }
    };
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    let timedOut = false;
    const timer =
      timeoutSec > 0
        ? setTimeout(() => {
            timedOut = true;
            try {
              process.kill(-child.pid, 'SIGKILL');
            } catch {
              // Already gone.
            }
          }, timeoutSec * 1000)
        : null;
    let pending = '';
    child.stderr.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const l of lines) log.stderr(l);
      if (pending.length > 4096) {
        log.stderr(pending);
        pending = '';
      }
    });
    void child.closed.then(({ code, signal: sig }) => {
      signal?.removeEventListener('abort', onAbort);
      if (timer) clearTimeout(timer);
      if (pending !== '') log.stderr(pending);
      if (done) return;
      done = true;
      const status = timedOut ? `killed after ${timeoutSec} s (handler-timeout)` : sig !== null ? `signal ${sig}` : `exit ${code ?? '?'}`;
      resolve({ status, pid: child.pid });
    }).catch((err: unknown) => {
      if (done) return;
      done = true;
      resolve({ status: `failed: ${errorText(err)}`, pid: child.pid });
    });
  });
}
