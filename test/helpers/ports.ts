/**
 * Ports from the outside: free ones for configs that need a literal port,
 * whether one accepts a connection, and where a started proxy listens.
 * Loopback only; jest-free (bench/ imports it).
 */
import { readFileSync } from 'node:fs';
import * as net from 'node:net';

/**
 * Literal ports come from below the kernel's ephemeral range: a port there
 * is never handed out by a bind to port 0 or by connect(), so no other test
 * (or this one's own upstream on port 0) can take it between the pick and
 * the daemon's bind. Parallel jest workers pick from slices of their own.
 */
const FIRST_PORT = 10000;
const SLICES = 16;

function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(low) && low > FIRST_PORT + SLICES * 64) return low;
  } catch {
    // no /proc: fall through to the kernel's default
  }
  return 32768;
}

const sliceSize = Math.floor((ephemeralLow() - FIRST_PORT) / SLICES);
const slice = Number(process.env['JEST_WORKER_ID'] ?? '0') % SLICES;
const sliceStart = FIRST_PORT + slice * sliceSize;
let cursor = Math.floor(Math.random() * sliceSize);

/** Whether `port` on `host` can be bound now (exclusively) by this process. */
export function canBind(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** Ports this process has already been given. */
const givenPorts = new Set<number>();

/**
 * A port that is free on `host` now, that no earlier call in this process
 * returned, outside the ephemeral range (for configs that need a literal
 * port; anything that can use port 0 should).
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let tried = 0; tried < sliceSize; tried++) {
    const port = sliceStart + (cursor++ % sliceSize);
    if (givenPorts.has(port)) continue;
    if (!(await canBind(host, port))) continue;
    givenPorts.add(port);
    return port;
  }
  throw new Error(`no free port on ${host} in ${sliceStart}-${sliceStart + sliceSize - 1}`);
}

/** `n` different ports, each free on 127.0.0.1 a moment ago (for configs that need literal ports). */
export async function freePorts(n: number): Promise<number[]> {
  const out: number[] = [];
  while (out.length < n) out.push(await freePort());
  return out;
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
