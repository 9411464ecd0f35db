/** Ports from the outside: whether one accepts a connection, and where a started proxy listens. */
import * as net from 'node:net';

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
