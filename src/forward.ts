/**
 * Forwarding engines behind one interface: `splice` (the native pump, the
 * default on Linux when the addon is loaded) and `js` (Node streams). The
 * engine is chosen once per process: TCPPROXY_ENGINE=js|splice overrides.
 */
import * as net from 'node:net';
import { forwardJs } from './forward-js';
import { plainAddress } from './address';
import { loadNative, type Addon, type PumpEnd } from './native';

export type EngineName = 'splice' | 'js';

export interface ForwardResult {
  readonly end: PumpEnd;
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly durationMs: number;
  /** What moved the bytes: `splice`, `copy` (native read/write) or `js`. */
  readonly path: 'splice' | 'copy' | 'js';
  readonly error?: string;
  readonly side?: 'client' | 'server';
}

export interface Forwarding {
  abort(): void;
}

/** Where a connection comes from and arrived, read before the socket is handed to an engine. */
export interface Endpoints {
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly localAddress: string;
  readonly localPort: number;
}

/**
 * A client connection an engine has taken hold of: either a net.Socket whose
 * reading is stopped, or a raw fd owned by native code.
 */
export type HeldClient =
  | { readonly kind: 'socket'; readonly sock: net.Socket; readonly endpoints: Endpoints }
  | { readonly kind: 'fd'; readonly fd: number; readonly endpoints: Endpoints };

export interface Engine {
  readonly name: EngineName;
  /**
   * Takes the client over, synchronously: a socket received over IPC starts
   * reading at once, so this must run in the same tick it arrives.
   */
  hold(sock: net.Socket): HeldClient;
  /** Takes over a raw connected socket fd (inetd mode); the engine owns it from now on. */
  adopt(fd: number, endpoints: Endpoints): HeldClient;
  /** Forwards until both directions are done; `done` runs once. Owns both from now on. */
  forward(client: HeldClient, server: net.Socket, idleMs: number, done: (r: ForwardResult) => void): Forwarding;
  /** Closes a held client that will not be forwarded. */
  release(client: HeldClient): void;
}

export function endpointsOf(sock: net.Socket): Endpoints {
  return {
    clientAddress: plainAddress(sock.remoteAddress),
    clientPort: sock.remotePort ?? 0,
    localAddress: plainAddress(sock.localAddress),
    localPort: sock.localPort ?? 0,
  };
}

interface SocketHandle {
  fd?: number;
  getpeername?: (out: object) => number;
}

function handleOf(sock: net.Socket): SocketHandle | undefined {
  return (sock as unknown as { _handle?: SocketHandle })._handle;
}

/**
 * Takes the kernel socket out of a net.Socket: dups its fd (close-on-exec)
 * and destroys the JS socket, so native owns the duplicate. The only code
 * that touches Node's socket internals.
 */
export function detachFd(addon: Addon, sock: net.Socket): number {
  const fd = handleOf(sock)?.fd;
  try {
    if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no file descriptor');
    return addon.dupCloexec(fd);
  } finally {
    // Also when the dup fails (EMFILE): the connection is closed, not left behind.
    sock.destroy();
  }
}

/**
 * After 'end', whether the peer had in fact reset the connection: when a
 * reset arrives right behind data, libuv reports end-of-file and never reads
 * the error, but a reset socket has no peer any more.
 */
export function peerWasReset(sock: net.Socket): boolean {
  const h = handleOf(sock);
  return h?.getpeername !== undefined && h.getpeername({}) !== 0;
}

/**
 * After a child had the client on its stdio (an ACP), the socket's file
 * description is blocking again (libuv clears O_NONBLOCK in the child): put
 * it back before this process reads or writes it.
 */
export function restoreNonblocking(client: HeldClient): void {
  const addon = loadNative().addon;
  const fd = client.kind === 'fd' ? client.fd : handleOf(client.sock)?.fd;
  if (addon && typeof fd === 'number' && fd >= 0) addon.setNonblock(fd);
}

const jsEngine: Engine = {
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

function spliceEngine(addon: Addon, pump: NonNullable<Addon['pump']>): Engine {
  return {
    name: 'splice',
    hold(sock) {
      const endpoints = endpointsOf(sock);
      return { kind: 'fd', fd: detachFd(addon, sock), endpoints };
    },
    adopt(fd, endpoints) {
      return { kind: 'fd', fd, endpoints };
    },
    forward(client, server, idleMs, done) {
      if (client.kind !== 'fd') throw new Error('splice engine given a socket');
      // On a failure here the client stays the caller's to release.
      const s = detachFd(addon, server);
      return pump({ client: client.fd, server: s, idleMs }, (r) =>
        done({
          end: r.end,
          bytesUp: r.bytesUp,
          bytesDown: r.bytesDown,
          durationMs: r.durationMs,
          path: r.path,
          ...(r.error ? { error: r.error.message } : {}),
          ...(r.side ? { side: r.side } : {}),
        }),
      );
    },
    release(client) {
      if (client.kind === 'fd') addon.close(client.fd);
    },
  };
}

/**
 * The engine for this process. `warn` is told once, loudly, when the splice
 * engine was wanted (by default or by name) but the addon cannot provide it.
 */
export function selectEngine(warn: (message: string) => void): Engine {
  const wanted = process.env['TCPPROXY_ENGINE'];
  if (wanted === 'js') return jsEngine;
  if (wanted !== undefined && wanted !== '' && wanted !== 'splice') {
    warn(`warning: TCPPROXY_ENGINE="${wanted}" is neither "splice" nor "js": using splice`);
  }
  const { addon, reason } = loadNative();
  if (addon?.pump) return spliceEngine(addon, addon.pump.bind(addon));
  warn(`warning: splice engine unavailable (${addon ? 'addon has no pump' : reason}); forwarding with the slower JS engine`);
  return jsEngine;
}
