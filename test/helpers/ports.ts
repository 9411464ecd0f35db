/**
 * Ports from the outside: free ones for configs that need a literal port,
 * whether one accepts a connection, and where a started proxy listens.
 * Loopback only; jest-free (bench/ imports it).
 */
import * as net from 'node:net';

/**
 * A port that was free on `host` a moment ago: bound on port 0, read, closed.
 * Only for config files, which need a literal port; anything that can use
 * port 0 should.
 */
function ephemeralPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ host, port: 0, exclusive: true }, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Ports this process has already been given: the kernel may hand a just-released one out again. */
const givenPorts = new Set<number>();

/** A port that is free now and that no earlier call in this process returned. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (;;) {
    const port = await ephemeralPort(host);
    if (givenPorts.has(port)) continue;
    givenPorts.add(port);
    return port;
  }
}

/** `n` different ports, each free on 127.0.0.1 a moment ago (for configs that need literal ports). */
export async function freePorts(n: number): Promise<number[]> {
  const out: number[] = [];
  while (out.length < n) out.push(await freePort());
  return out;
}

function canBind(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** A port free on every one of `hosts` (a few tries: another process may hold it on one of them). */
export async function freePortOn(hosts: readonly string[], attempts = 20): Promise<number> {
  const [first, ...rest] = hosts;
  for (let i = 0; i < attempts; i++) {
    const port = await freePort(first);
    const free = await Promise.all(rest.map((h) => canBind(h, port)));
    if (free.every(Boolean)) return port;
  }
  throw new Error(`no port free on all of ${hosts.join(', ')} after ${attempts} tries`);
}

/** The outcome of one connect attempt: 'connected' or the error code. */
export function tryConnect(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

/** The port of listening address `i` of a started proxy or daemon. */
export function portOf(p: { readonly addresses: readonly { readonly port: number }[] }, i = 0): number {
  const a = p.addresses[i];
  if (a === undefined) throw new Error(`no listening address #${i}`);
  return a.port;
}
