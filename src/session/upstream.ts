/**
 * Connecting to the upstream server: the name is resolved for each
 * connection and every address is tried in turn, all within one bound
 * (10 s, as the original's alarm). The socket is handed back paused, before
 * libuv has read a byte, so either engine can take it over.
 */
import * as dns from 'node:dns';
import * as net from 'node:net';
import { formatHostPort } from '../table/address';

export const CONNECT_TIMEOUT_MS = 10_000;

export class UpstreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UpstreamError';
  }
}

async function resolve(host: string): Promise<string[]> {
  if (net.isIP(host)) return [host];
  const addrs = await dns.promises.lookup(host, { all: true, verbatim: true });
  return addrs.map((a) => a.address);
}

function connectOne(address: string, port: number, deadline: number): Promise<net.Socket> {
  return new Promise((resolveConn, reject) => {
    const sock = net.connect({ host: address, port, allowHalfOpen: true });
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
export async function connectUpstream(host: string, port: number, timeoutMs = CONNECT_TIMEOUT_MS): Promise<net.Socket> {
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
      return await connectOne(address, port, deadline);
    } catch (err) {
      last = err;
    }
  }
  throw last;
}
