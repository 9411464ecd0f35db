/**
 * Listening sockets of standalone mode. Every server accepts with
 * pauseOnConnect, so no byte of a client is read before the socket reaches
 * the process and engine that forwards it.
 */
import * as net from 'node:net';
import { formatHostPort } from '../table/address';
import { StartError } from '../sys/errors';

export interface ListenAddress {
  /** IP literal, or null for every interface (dual-stack wildcard). */
  readonly iface: string | null;
  readonly port: number;
}

export function formatListen(a: { iface: string | null; port: number }): string {
  return a.iface === null ? `*:${a.port}` : formatHostPort(a.iface, a.port);
}

/** A listening socket inherited from a service manager (systemd Accept=no), matched by its address. */
export interface InheritedListener {
  readonly fd: number;
  readonly address: string;
  readonly port: number;
}

function isWildcard(address: string): boolean {
  return address === '::' || address === '0.0.0.0';
}

/** The inherited socket for an address: the same port and interface; for "any interface", whatever the manager bound. */
function inheritedFor(addr: ListenAddress, inherited: readonly InheritedListener[]): InheritedListener | undefined {
  const onPort = inherited.filter((l) => l.port === addr.port);
  if (addr.iface !== null) return onPort.find((l) => l.address === addr.iface);
  return onPort.find((l) => isWildcard(l.address)) ?? onPort[0];
}

function listenOne(
  addr: ListenAddress,
  onConnection: (sock: net.Socket) => void,
  inherited?: InheritedListener,
): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, onConnection);
    server.once('error', (err: NodeJS.ErrnoException) => {
      server.close();
      const what = err.code === undefined ? err.message : `${err.code} (${describeCode(err.code)})`;
      reject(new StartError(`cannot listen on ${formatListen(addr)}: ${what}`));
    });
    const ready = (): void => {
      server.removeAllListeners('error');
      server.on('error', () => {}); // accept errors (EMFILE) are retried by libuv
      resolve(server);
    };
    if (inherited) server.listen({ fd: inherited.fd }, ready);
    // The wildcard is `::` without IPV6_V6ONLY: one socket for IPv4 and IPv6 clients.
    else server.listen({ host: addr.iface ?? '::', port: addr.port, ipv6Only: false, backlog: 511 }, ready);
  });
}

function describeCode(code: string): string {
  switch (code) {
    case 'EADDRINUSE':
      return 'address already in use';
    case 'EADDRNOTAVAIL':
      return 'no such local address';
    case 'EACCES':
      return 'permission denied';
    default:
      return 'bind failed';
  }
}

/** Binds every address or none: on a failure the ones already bound are closed. */
export async function listenAll(
  addrs: readonly ListenAddress[],
  onConnection: (sock: net.Socket) => void,
  inherited: readonly InheritedListener[] = [],
): Promise<net.Server[]> {
  const results = await Promise.allSettled(addrs.map((a) => listenOne(a, onConnection, inheritedFor(a, inherited))));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  const servers = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  if (failed) {
    for (const s of servers) s.close();
    throw failed.reason;
  }
  return servers;
}

/** The address a server is bound to, for the `listening on` line (ephemeral ports resolved). */
export function boundAddress(server: net.Server, wanted: ListenAddress): ListenAddress {
  const a = server.address();
  if (a === null || typeof a === 'string') return wanted;
  return { iface: wanted.iface, port: a.port };
}

/**
 * Listening sockets passed by systemd (`LISTEN_FDS`, `LISTEN_PID`, fds from
 * 3). The variables are removed so that handlers do not inherit them.
 */
export function takeInheritedListeners(
  sockName: (fd: number) => { local: { address: string; port: number }; listening: boolean } | null,
): InheritedListener[] {
  const env = process.env;
  const count = Number(env['LISTEN_FDS'] ?? '0');
  const forUs = Number(env['LISTEN_PID'] ?? '0') === process.pid;
  delete env['LISTEN_FDS'];
  delete env['LISTEN_PID'];
  delete env['LISTEN_FDNAMES'];
  if (!forUs || !Number.isInteger(count) || count <= 0) return [];
  const out: InheritedListener[] = [];
  for (let fd = 3; fd < 3 + count; fd++) {
    const sn = sockName(fd);
    if (sn?.listening) out.push({ fd, address: sn.local.address, port: sn.local.port });
  }
  return out;
}
