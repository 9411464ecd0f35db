import { getSystemErrorName } from 'node:util';

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
    const code = errnum > 0 ? getSystemErrorName(-errnum) : getSystemErrorName(errnum);
    super(detail === undefined ? `${syscall} ${code}` : `${syscall} ${code} ${detail}`);
    this.name = 'SysError';
    this.syscall = syscall;
    this.code = code;
    this.errno = errnum > 0 ? -errnum : errnum;
  }
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
