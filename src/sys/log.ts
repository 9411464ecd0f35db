/**
 * Logging: syslog(3) through the addon (facility daemon, LOG_PID), and in the
 * foreground the same lines on stderr as `TIME tcpproxy: message`, TIME in
 * ISO 8601 (UTC, milliseconds), left out when stderr is the journal, which
 * stamps each line itself. In inetd mode stderr is the client socket, so it
 * is never written there.
 */
import * as fs from 'node:fs';
import { native } from './native';
import { escapeControlsHex } from './text';

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

/**
 * A line as it may be logged: control characters (from a handler's stderr,
 * an ACP's message, a file name), C0, DEL and C1 alike, become `\xNN` (the
 * Unicode line separators `\uNNNN`), so nothing logged can forge a line,
 * move a terminal's cursor or hide text; a backslash stays.
 */
export function escapeControls(line: string): string {
  return escapeControlsHex(line);
}

/**
 * True when fd 2 is the journal's stream: systemd names it in JOURNAL_STREAM
 * (`DEVICE:INODE`), and a program that passes its stderr on keeps the
 * variable but not always the stream, hence the comparison.
 */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env): boolean {
  const m = /^(\d+):(\d+)$/.exec(env['JOURNAL_STREAM'] ?? '');
  if (m === null) return false;
  try {
    const st = fs.fstatSync(2, { bigint: true });
    return st.dev === BigInt(m[1] ?? '') && st.ino === BigInt(m[2] ?? '');
  } catch {
    return false;
  }
}

/**
 * A message as syslog gets it and as stderr shows it. A message that is
 * itself in the `tcpproxy:FILE:LINE: text` form (a config error on reload)
 * keeps one `tcpproxy`: syslog's ident already says it.
 */
function forms(message: string): { syslog: string; stderr: string } {
  if (message.startsWith('tcpproxy:')) return { syslog: message.slice('tcpproxy:'.length).trimStart(), stderr: message };
  return { syslog: message, stderr: `tcpproxy: ${message}` };
}

export function createLogger(opts: LogOptions): Logger {
  const addon = opts.syslog ? native() : null;
  addon?.openLog(opts.ident, LOG_DAEMON);
  const stamped = opts.stderr && !stderrIsJournal();
  const prefix = (): string => (stamped ? `${new Date().toISOString()} ` : '');
  const emit = (priority: number, raw: string): void => {
    const f = forms(escapeControls(raw));
    addon?.syslog(priority, f.syslog);
    if (opts.stderr) process.stderr.write(`${prefix()}${f.stderr}\n`);
  };
  return {
    info: (m) => emit(LOG_INFO, m),
    warn: (m) => emit(LOG_WARNING, m),
    error: (m) => emit(LOG_ERR, m),
    many: (lines) => {
      let text = '';
      const p = prefix();
      for (const l of lines) {
        const f = forms(escapeControls(l.slice(1)));
        addon?.syslog(Number(l[0]), f.syslog);
        if (opts.stderr) text += `${p}${f.stderr}\n`;
      }
      if (text !== '') process.stderr.write(text);
    },
  };
}
