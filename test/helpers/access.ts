/**
 * The client's view of access lists and limits (issue 12, test/access): the
 * CLIENT text of tcpproxy's refusal lines, how a connection ended, one
 * payload through an echo upstream, and the refusal and summary lines of a
 * service in a proxy's log.
 */
import type { Client } from './client';
import { logLines, re, waitLog } from './daemon';
import { type Digest } from './servers';
import { until } from './until';

/**
 * CLIENT as tcpproxy writes it in a refusal line, from the client's own end:
 * `127.0.0.5:41000`, `[::1]:41000`. (A client that reached a dual-stack
 * listener over IPv4 has an IPv4 socket, so its text is the IPv4 one, as
 * the spec wants for an IPv4-mapped peer.)
 */
export function clientText(c: Client): string {
  const host = c.local.address;
  return `${host.includes(':') ? `[${host}]` : host}:${c.local.port}`;
}

/** `service KEY: refused CLIENT: RULE`. */
export function refusalLine(key: string, c: Client, rule: string): string {
  return `service ${key}: refused ${clientText(c)}: ${rule}`;
}

/** How a closed connection ended: `eof` (a clean FIN), an error code (`ECONNRESET`), or `closed`. */
export function howEnded(c: Client): string {
  if (c.error !== null) return c.error.code ?? c.error.message;
  return c.ended ? 'eof' : c.closed ? 'closed' : 'open';
}

/** Sends `data`, ends our side, waits for the end of what comes back and returns its digest. */
export async function echoThrough(c: Client, data: Buffer, timeoutMs = 10000): Promise<Digest> {
  c.socket.end(data);
  await until(() => c.ended || c.closed, () => `the echo of ${data.length} bytes and EOF (have ${c.received})`, timeoutMs);
  if (c.error !== null) throw new Error(`the echo ended with ${howEnded(c)} after ${c.received} bytes`);
  return c.digest();
}

/** Waits for exactly `line` in the log of `stderr`. */
export async function waitLine(stderr: () => string, line: string, timeoutMs = 10000): Promise<void> {
  await waitLog(stderr, new RegExp(`^${re(line)}$`), timeoutMs);
}

/** The log lines of `stderr` that mention `c` (its CLIENT text): a refused client has its refusal line only. */
export function linesAbout(stderr: string, c: Client): string[] {
  const me = clientText(c);
  return logLines(stderr).filter((l) => l.includes(`${me} `) || l.includes(`${me}:`) || l.endsWith(me));
}

/** The refusal lines of service `key` and the numbers of its `N more refused` summaries, in order. */
export function refusals(stderr: string, key: string): { lines: string[]; summaries: number[] } {
  const lines: string[] = [];
  const summaries: number[] = [];
  const summary = new RegExp(`^service ${re(key)}: (\\d+) more refused$`);
  for (const l of logLines(stderr)) {
    if (l.startsWith(`service ${key}: refused `)) lines.push(l);
    const m = summary.exec(l);
    if (m !== null) summaries.push(Number(m[1]));
  }
  return { lines, summaries };
}
