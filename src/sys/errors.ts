import { constants } from 'node:os';
import { getSystemErrorName } from 'node:util';

/** errno number -> E-name, from os.constants.errno; of two aliases the first listed (EAGAIN, ENOTSUP). */
const ERRNO_NAMES: ReadonlyMap<number, string> = (() => {
  const names = new Map<number, string>();
  for (const [name, n] of Object.entries(constants.errno)) if (!names.has(n)) names.set(n, name);
  return names;
})();

/**
 * The E-name of an errno (given either sign): Node's (libuv's) name where it
 * has one, else the one os.constants.errno lists (getSystemErrorName says
 * `Unknown system error -8` for ENOEXEC, ECHILD, ESTALE and others), and
 * Node's text only for a number no table names.
 */
export function errnoName(errnum: number): string {
  const n = Math.abs(errnum);
  if (!Number.isSafeInteger(n) || n === 0) return `Unknown system error ${errnum}`;
  const node = getSystemErrorName(-n);
  if (/^E[A-Z0-9]+$/.test(node)) return node;
  return ERRNO_NAMES.get(n) ?? node;
}

/**
 * A failed system call. Built by the native addon (which never writes message
 * text) and by TypeScript code wrapping Node errors. The message has Node's
 * shape: `syscall CODE [detail]`.
 */
export class SysError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  constructor(syscall: string, errnum: number, detail?: string) {
    const code = errnoName(errnum);
    super(detail === undefined ? `${syscall} ${code}` : `${syscall} ${code} ${detail}`);
    this.name = 'SysError';
    this.syscall = syscall;
    this.code = code;
    this.errno = errnum > 0 ? -errnum : errnum;
  }
}

/**
 * A Node error (`ErrnoException`: syscall, code, errno) as a SysError; an
 * error without an errno is kept as EIO under `syscall`. Duck-typed: under
 * jest, Node's own errors come from another realm and fail `instanceof`.
 */
export function sysErrorOf(err: unknown, syscall: string): SysError {
  if (err instanceof SysError) return err;
  const e = (typeof err === 'object' && err !== null ? err : {}) as { syscall?: unknown; errno?: unknown; code?: unknown };
  const call = typeof e.syscall === 'string' ? e.syscall : syscall;
  const known = typeof e.code === 'string' ? (constants.errno as Record<string, number | undefined>)[e.code] : undefined;
  const errno = typeof e.errno === 'number' && e.errno !== 0 ? e.errno : (known ?? constants.errno.EIO);
  return new SysError(call, errno);
}

/** A located configuration error: printed as `tcpproxy:FILE:LINE: message`. */
export interface ConfigError {
  readonly file: string;
  readonly line: number;
  readonly message: string;
}

export function formatConfigError(e: ConfigError): string {
  return e.line > 0 ? `tcpproxy:${e.file}:${e.line}: ${e.message}` : `tcpproxy:${e.file}: ${e.message}`;
}

/** A failure at start (bind, pidfile, unreadable config): message, exit 1 or 2. */
export class StartError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'StartError';
    this.exitCode = exitCode;
  }
}

/** The short text of an error for a log line: Node's `syscall CODE address:port` where available. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Which check of a privilege drop failed (see PrivilegeCheckError). */
export type PrivilegeCheck = 'uids' | 'gids' | 'groups' | 'regain-uid' | 'regain-gid' | 'dumpable';

/**
 * Every call of a privilege drop succeeded, but the check after it did not:
 * the ids are not those asked for, groups remain, or root can be regained.
 * Built by the native addon with what it observed (no message text there).
 */
export class PrivilegeCheckError extends Error {
  readonly check: PrivilegeCheck;
  readonly observed: readonly number[];
  constructor(check: PrivilegeCheck, observed: readonly number[] = []) {
    super(privilegeCheckText(check, observed));
    this.name = 'PrivilegeCheckError';
    this.check = check;
    this.observed = [...observed];
  }
}

function privilegeCheckText(check: PrivilegeCheck, o: readonly number[]): string {
  switch (check) {
    case 'uids':
      return `after setresuid the user ids are ${o.join('/')} (real/effective/saved)`;
    case 'gids':
      return `after setresgid the group ids are ${o.join('/')} (real/effective/saved)`;
    case 'groups':
      return `after setgroups(0) ${o[0] ?? '?'} supplementary group(s) remain`;
    case 'regain-uid':
      return 'root can be regained: setresuid(0, 0, 0) succeeded';
    case 'regain-gid':
      return 'group root can be regained: setresgid(0, 0, 0) succeeded';
    case 'dumpable':
      return `after prctl(PR_SET_DUMPABLE, 0) the process is still dumpable (${o[0] ?? '?'})`;
  }
}
