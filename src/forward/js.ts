/**
 * The JS forwarding engine: Node streams with allowHalfOpen on both sockets.
 * The portable reference for the splice engine; both run the same tests.
 */
import { constants } from 'node:os';
import * as net from 'node:net';
import { SysError, sysErrorOf } from '../sys/errors';
import { endpointsOf, peerWasReset } from './socket';
import type { Engine, Forwarding, ForwardResult } from './types';

type Side = 'client' | 'server';

const RESET_CODES = new Set(['ECONNRESET', 'EPIPE']);

/** Sees every chunk as it is forwarded (transcripts). */
export type Tap = (direction: 'c>s' | 's>c', chunk: Buffer) => void;

export function forwardJs(
  client: net.Socket,
  server: net.Socket,
  idleMs: number,
  done: (r: ForwardResult) => void,
  tap?: Tap,
): Forwarding {
  const started = Date.now();
  let end: ForwardResult['end'] | null = null;
  let error: SysError | undefined;
  let side: Side | undefined;
  let closed = 0;

  const finish = (): void => {
    if (++closed < 2) return;
    clearInterval(idleTimer);
    const r: ForwardResult = {
      end: end ?? 'eof',
      bytesUp: client.bytesRead,
      bytesDown: client.bytesWritten,
      durationMs: Date.now() - started,
      path: 'js',
      ...(error === undefined ? {} : { error }),
      ...(side === undefined ? {} : { side }),
    };
    done(r);
  };

  // Abort both sockets with RST: a transparent proxy never turns a reset into a FIN.
  const abort = (why: ForwardResult['end'], where?: Side, err?: SysError): void => {
    if (end === null) {
      end = why;
      if (where) side = where;
      if (err) error = err;
    }
    for (const s of [client, server]) if (!s.destroyed) s.resetAndDestroy();
  };

  const wire = (from: net.Socket, to: net.Socket, name: Side): void => {
    from.on('error', (err: NodeJS.ErrnoException) => {
      abort(err.code !== undefined && RESET_CODES.has(err.code) ? 'reset' : 'error', name, sysErrorOf(err, 'read'));
    });
    from.on('close', finish);
    from.once('end', () => {
      // A reset that came right behind data is reported as end-of-file: never pass it on as a FIN.
      // Only while our side of `from` is still open: once both sides sent FIN, the socket may be
      // closed by the final ACK before 'end' runs, which is no reset.
      if (!from.writableEnded && peerWasReset(from)) abort('reset', name, new SysError('read', constants.errno.ECONNRESET));
    });
    // pipe() ends `to` (shutdown SHUT_WR) once `from` has ended and everything is written.
    from.pipe(to);
  };

  let lastActive = Date.now();
  const touch = (): void => {
    lastActive = Date.now();
  };
  client.on('data', touch);
  server.on('data', touch);
  if (tap) {
    client.on('data', (chunk: Buffer) => tap('c>s', chunk));
    server.on('data', (chunk: Buffer) => tap('s>c', chunk));
  }
  // One coarse timer per session instead of re-arming a timer per chunk.
  const idleTimer = setInterval(
    () => {
      if (idleMs > 0 && Date.now() - lastActive >= idleMs) abort('idle-timeout');
    },
    Math.max(50, Math.min(1000, Math.floor(idleMs / 4))),
  );
  if (idleMs === 0) clearInterval(idleTimer);
  idleTimer.unref();

  wire(client, server, 'client');
  wire(server, client, 'server');
  client.resume();
  server.resume();

  return {
    abort: () => abort('aborted'),
    stats: () => (closed === 2 ? null : { bytesUp: client.bytesRead, bytesDown: client.bytesWritten, idleMs: Date.now() - lastActive }),
  };
}

export const jsEngine: Engine = {
  name: 'js',
  hold(sock) {
    // What Node reads meanwhile stays in the stream's buffer and is forwarded first.
    sock.pause();
    // A socket received over IPC is made with allowHalfOpen false, which would end our
    // side on the client's FIN and lose the server's late reply.
    sock.allowHalfOpen = true;
    // An error before forwarding starts must not go unhandled.
    sock.on('error', () => {});
    return { kind: 'socket', sock, endpoints: endpointsOf(sock) };
  },
  adopt(fd, endpoints) {
    const sock = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    sock.pause();
    sock.on('error', () => {});
    return { kind: 'socket', sock, endpoints };
  },
  forward(client, server, idleMs, done) {
    if (client.kind !== 'socket') throw new Error('js engine given a raw fd');
    return forwardJs(client.sock, server, idleMs, done);
  },
  release(client) {
    if (client.kind === 'socket') client.sock.destroy();
  },
};
