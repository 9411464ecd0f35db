/**
 * Listening sockets of standalone mode. Every server accepts with
 * pauseOnConnect, so no byte of a client is read before the socket reaches
 * the process and engine that forwards it.
 */
import * as net from 'node:net';
import { formatHostPort } from './address';
import { StartError } from './errors';

export interface ListenAddress {
  /** IP literal, or null for every interface (dual-stack wildcard). */
  readonly iface: string | null;
  readonly port: number;
}

export function formatListen(a: { iface: string | null; port: number }): string {
  return a.iface === null ? `*:${a.port}` : formatHostPort(a.iface, a.port);
}

function listenOne(addr: ListenAddress, onConnection: (sock: net.Socket) => void): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, onConnection);
    server.once('error', (err: NodeJS.ErrnoException) => {
      server.close();
      const what = err.code === undefined ? err.message : `${err.code} (${describeCode(err.code)})`;
      reject(new StartError(`cannot listen on ${formatListen(addr)}: ${what}`));
    });
    // The wildcard is `::` without IPV6_V6ONLY: one socket for IPv4 and IPv6 clients.
    server.listen({ host: addr.iface ?? '::', port: addr.port, ipv6Only: false, backlog: 511 }, () => {
      server.removeAllListeners('error');
      server.on('error', () => {}); // accept errors (EMFILE) are retried by libuv
      resolve(server);
    });
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
): Promise<net.Server[]> {
  const results = await Promise.allSettled(addrs.map((a) => listenOne(a, onConnection)));
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
