/**
 * What the interop suites (test/interop) share: the two ways a forwarding
 * connection is served (the native fast path and the session code), tcpproxy
 * started with a generated config, its accept line, and failure messages
 * that carry the logs of every process in the chain.
 */
import * as dns from 'node:dns';
import * as net from 'node:net';
import * as os from 'node:os';
import { type Daemon, re, startDaemon } from './daemon';
import { type Endpoint, formatEndpoint } from './proxy-header';
import { IN_CI } from './root';
import type { TempDir } from './setup';

/** How tcpproxy serves a forwarding service: the engine and how the server is written. */
export interface ForwardPath {
  readonly name: string;
  readonly engine: 'splice' | 'js';
  /** The server word for an upstream on `host` (an IP literal) and `port`. */
  server(host: string, port: number): string;
}

/** `127.0.0.1:80`, `[::1]:80`. */
export function literal(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * The native fast path (a forwarding service to IP literals under the default
 * splice engine, src/forward/fast.ts) and the session code (the js engine).
 */
export const FORWARD_PATHS: readonly ForwardPath[] = [
  { name: 'native fast path (splice, IP literals)', engine: 'splice', server: literal },
  { name: 'session code (js engine)', engine: 'js', server: literal },
];

/**
 * The session code under the splice engine: a host name (resolved for each
 * connection) instead of 127.0.0.1. Only for upstreams on 127.0.0.1: where
 * `localhost` also names ::1, that address is refused first and the next one
 * tried, within the same server.
 */
export const HOST_NAME_PATH: ForwardPath = {
  name: 'session code (host name localhost, splice)',
  engine: 'splice',
  server: (host, port) => {
    if (host !== '127.0.0.1') throw new Error(`HOST_NAME_PATH: only for 127.0.0.1, not ${host}`);
    return `localhost:${port}`;
  },
};

/** FORWARD_PATHS and HOST_NAME_PATH: for upstreams on 127.0.0.1. */
export const IPV4_PATHS: readonly ForwardPath[] = [...FORWARD_PATHS, HOST_NAME_PATH];

/** tcpproxy's environment in these suites: the test's, with the engine. */
export function engineEnv(engine: 'splice' | 'js'): NodeJS.ProcessEnv {
  return { ...process.env, TCPPROXY_ENGINE: engine };
}

/** Starts `tcpproxy -D -f CONF` (CONF: `lines`, in `tmp`) under `engine`; `listeners` listening lines. */
export async function startTcpproxy(tmp: TempDir, lines: readonly string[], engine: 'splice' | 'js', listeners = 1): Promise<Daemon> {
  const conf = tmp.config(lines);
  return startDaemon({ args: ['-f', conf], env: engineEnv(engine), listeners });
}

/**
 * The accept line of a connection: `connection N: client CLIENT [via PEER] on LOCAL: TARGET, uid U gid G`,
 * N captured. `peer`: a RegExp source for the real peer (the header's sender), or null for a
 * connection whose client is its peer.
 */
export function acceptLine(client: Endpoint, peer: string | null, local: Endpoint, target: string): RegExp {
  const via = peer === null ? '' : ` via ${peer}`;
  return new RegExp(`^connection (\\d+): client ${re(formatEndpoint(client))}${via} on ${re(formatEndpoint(local))}: ${re(target)}, uid \\d+ gid \\d+$`);
}

/** A RegExp source for `host:ANYPORT` as tcpproxy writes it (`[::1]:N` for IPv6). */
export function anyPort(host: string): string {
  return `${re(net.isIPv6(host) ? `[${host}]` : host)}:\\d+`;
}

/** Something whose output explains a failure. */
export interface Explains {
  readonly argv: readonly string[];
  stderr(): string;
}

/** Runs `body`; a failure gets the stderr of each of `procs` appended (their logs: tcpproxy's, HAProxy's, nginx's). */
export async function explained(procs: () => readonly (Explains | null | undefined)[], body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (err instanceof Error) {
      for (const p of procs()) {
        if (p) err.message += `\n--- ${p.argv.join(' ')}: stderr ---\n${p.stderr()}`;
      }
    }
    throw err;
  }
}

/** What getnameinfo gives for `address` (PROXY_CLIENTNAME): the name lower-cased, else the address. */
export function nameOf(address: string): Promise<string> {
  return new Promise((resolve) => dns.lookupService(address, 0, (err, host) => resolve(err || !host ? address : host.toLowerCase())));
}

/** The PROXY_ variables of `env` output (an exec handler /usr/bin/env). */
export function proxyVars(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^(PROXY_[A-Z]+)=(.*)$/.exec(line);
    if (m?.[1] !== undefined) out[m[1]] = m[2] ?? '';
  }
  return out;
}

/**
 * True when the IPv6 cases run: the loopback has ::1, or CI is set (there
 * they never skip: without ::1 they fail). Elsewhere a file without ::1
 * leaves them out and says so.
 */
export function ipv6Cases(file: string): boolean {
  const has = Object.values(os.networkInterfaces()).some((list) => list?.some((i) => i.address === '::1'));
  // eslint-disable-next-line no-console -- says out loud why the IPv6 cases are missing
  if (!has && !IN_CI) console.warn(`${file}: no ::1 on this host (and CI is not set): IPv6 cases left out`);
  return has || IN_CI;
}
