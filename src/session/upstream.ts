/**
 * Connecting to the upstream server: the name is resolved for each
 * connection and every address is tried in turn, all within one bound
 * (10 s, as the original's alarm). The socket is handed back paused, before
 * libuv has read a byte, so either engine can take it over.
 */
import type * as Dns from 'node:dns';
import * as net from 'node:net';
import { clientKey } from '../table/access';
import { formatHostPort, type ServerAddress } from '../table/address';
import { formatServer, type Balance } from '../table/service';

export const CONNECT_TIMEOUT_MS = 10_000;

export class UpstreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UpstreamError';
  }
}

async function resolve(host: string): Promise<string[]> {
  if (net.isIP(host)) return [host];
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- node:dns only for a host name (inetd mode starts a process per connection)
  const addrs = await (require('node:dns') as typeof Dns).promises.lookup(host, { all: true, verbatim: true });
  return addrs.map((a) => a.address);
}

function connectOne(address: string, port: number, deadline: number, localAddress: string | null): Promise<net.Socket> {
  return new Promise((resolveConn, reject) => {
    const sock = net.connect({ host: address, port, allowHalfOpen: true, ...(localAddress === null ? {} : { localAddress }) });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new UpstreamError(`connect ${formatHostPort(address, port)}: timed out`));
    }, Math.max(0, deadline - Date.now()));
    sock.once('connect', () => {
      // Pause before Node's first read (afterConnect reads only when not paused).
      sock.pause();
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolveConn(sock);
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    });
  });
}

/**
 * Connects to `host:port`, trying each address of the name. Rejects with the
 * last error (Node's `connect ECONNREFUSED 127.0.0.1:25` text) or a timeout.
 */
export async function connectUpstream(
  host: string,
  port: number,
  timeoutMs = CONNECT_TIMEOUT_MS,
  localAddress: string | null = null,
): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  let addresses: string[];
  let timer: NodeJS.Timeout | undefined;
  try {
    // The lookup counts against the same bound: a resolver that hangs must not hold the client.
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new UpstreamError(`resolve ${host}: timed out`)), timeoutMs);
    });
    addresses = await Promise.race([resolve(host), timeout]);
  } catch (err) {
    if (err instanceof UpstreamError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new UpstreamError(`resolve ${host}: ${code}`);
  } finally {
    clearTimeout(timer);
  }
  let last: unknown = new UpstreamError(`connect ${host}: timed out`);
  if (addresses.length === 0) last = new UpstreamError(`resolve ${host}: no address`);
  for (const address of addresses) {
    if (Date.now() >= deadline) break;
    try {
      return await connectOne(address, port, deadline, localAddress);
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

/** What a connection needs to reach a group of servers. */
export interface UpstreamGroup {
  /** The service's listen key: the group's health and rotation are kept under it. */
  readonly key: string;
  readonly servers: readonly ServerAddress[];
  readonly balance: Balance;
  /** Bind each attempt to this local address; null: the kernel's choice. */
  readonly source: string | null;
  /** The port for a server written without one: the one the client connected to. */
  readonly defaultPort: number;
}

/** A server of a group that failed is tried after the others this long. */
export const DOWN_MS = 10_000;

/** The passive health of the servers, in this process: `${key} ${server}` → down until. */
const health = new Map<string, { until: number }>();
/** roundrobin: where each service's next connection starts. */
const rotation = new Map<string, number>();

/** FNV-1a with a final mix (FNV's low bits alone spread badly), as native/serve.cc's SourceHash. */
function sourceHash(bytes: Uint8Array): number {
  let h = 2166136261;
  for (const b of bytes) h = Math.imul(h ^ b, 16777619) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  h = Math.imul(h, 0x45d9f3b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * The order a connection tries the servers in (as native/serve.cc's Order):
 * `balance` picks the first, the rest follow in list order, and servers
 * marked down go after the others.
 */
export function groupOrder(g: UpstreamGroup, clientAddress: string, now = Date.now()): number[] {
  const n = g.servers.length;
  let first = 0;
  if (g.balance === 'roundrobin') {
    first = (rotation.get(g.key) ?? 0) % n;
    rotation.set(g.key, first + 1);
  } else if (g.balance === 'source') {
    const key = clientKey(clientAddress);
    first = key === null ? 0 : sourceHash(key) % n;
  }
  const up: number[] = [];
  const down: number[] = [];
  for (let i = 0; i < n; i++) {
    const k = (first + i) % n;
    const h = health.get(healthKey(g, k));
    (h !== undefined && now < h.until ? down : up).push(k);
  }
  return [...up, ...down];
}

function healthKey(g: Pick<UpstreamGroup, 'key' | 'servers'>, i: number): string {
  const s = g.servers[i];
  return `${g.key} ${s === undefined ? '' : formatServer(s)}`;
}

/** The places of the group's servers this process has marked down (the status socket). */
export function downServers(g: Pick<UpstreamGroup, 'key' | 'servers'>, now = Date.now()): number[] {
  const out: number[] = [];
  for (let i = 0; i < g.servers.length; i++) {
    const h = health.get(healthKey(g, i));
    if (h !== undefined && now < h.until) out.push(i);
  }
  return out;
}

export interface GroupLog {
  /** A failed attempt: `server H:P`, the error text, and the server's place in the group. */
  attemptFailed(server: string, message: string, index: number): void;
  /** A server of a group of two or more went down or is back. */
  health(line: string, down: boolean): void;
}

/**
 * Connects to the first server of the group that answers, in the order
 * `balance` gives, each (all of its addresses) within its own bound. Null
 * when none did; every failure has been told to `log`.
 */
export async function connectGroup(
  g: UpstreamGroup,
  clientAddress: string,
  log: GroupLog,
  timeoutMs = CONNECT_TIMEOUT_MS,
): Promise<{ readonly sock: net.Socket; readonly server: string } | null> {
  const group = g.servers.length > 1;
  for (const i of groupOrder(g, clientAddress)) {
    const s = g.servers[i];
    if (s === undefined) continue;
    const port = s.port ?? g.defaultPort;
    const text = `server ${formatHostPort(s.host, port)}`;
    const hk = healthKey(g, i);
    try {
      const sock = await connectUpstream(s.host, port, timeoutMs, g.source);
      if (group && health.delete(hk)) log.health(`service ${g.key}: server ${formatHostPort(s.host, port)}: up again`, false);
      return { sock, server: text };
    } catch (err) {
      log.attemptFailed(text, (err as Error).message, i);
      if (!group || (err as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL') continue;
      const was = health.get(hk);
      health.set(hk, { until: Date.now() + DOWN_MS });
      if (was === undefined) log.health(`service ${g.key}: server ${formatHostPort(s.host, port)}: down for ${DOWN_MS / 1000} s`, true);
    }
  }
  return null;
}
