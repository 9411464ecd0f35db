/**
 * Logging: syslog(3) through the addon (facility daemon, LOG_PID), and in the
 * foreground the same lines on stderr as `tcpproxy: message`. In inetd mode
 * stderr is the client socket, so it is never written there.
 */
import { native } from './native';

const LOG_DAEMON = 3 << 3;
const LOG_ERR = 3;
const LOG_WARNING = 4;
const LOG_INFO = 6;

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  /** Several lines at once, each starting with its syslog priority digit (the native fast path's batches). */
  many(lines: readonly string[]): void;
}

export interface LogOptions {
  /** syslog ident (`-l` / `logname`). */
  readonly ident: string;
  /** Also write every line to stderr. */
  readonly stderr: boolean;
  /** Write to syslog (off only in tests of the parser-level paths). */
  readonly syslog: boolean;
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\x00-\x1f\x7f]/g;

/**
 * A line as it may be logged: control characters (from a handler's stderr,
 * an ACP's message, a file name) become `\xNN`, so nothing logged can
 * forge a line, move a terminal's cursor or hide text; a backslash stays.
 */
export function escapeControls(line: string): string {
  if (!CONTROL.test(line)) return line;
  return line.replace(CONTROLS, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export function createLogger(opts: LogOptions): Logger {
  const addon = opts.syslog ? native() : null;
  addon?.openLog(opts.ident, LOG_DAEMON);
  const emit = (priority: number, raw: string): void => {
    const message = escapeControls(raw);
    addon?.syslog(priority, message);
    if (opts.stderr) process.stderr.write(`tcpproxy: ${message}\n`);
  };
  return {
    info: (m) => emit(LOG_INFO, m),
    warn: (m) => emit(LOG_WARNING, m),
    error: (m) => emit(LOG_ERR, m),
    many: (lines) => {
      let text = '';
      for (const l of lines) {
        const message = escapeControls(l.slice(1));
        addon?.syslog(Number(l[0]), message);
        if (opts.stderr) text += `tcpproxy: ${message}\n`;
      }
      if (text !== '') process.stderr.write(text);
    },
  };
}
