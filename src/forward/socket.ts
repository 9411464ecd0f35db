/**
 * The only code that touches Node's socket internals: a socket's fd, its
 * endpoints, whether its peer reset it, and O_NONBLOCK after a child had it.
 */
import type * as net from 'node:net';
import { plainAddress } from '../table/address';
import { native } from '../sys/native';
import type { Endpoints, HeldClient } from './types';

interface SocketHandle {
  fd?: number;
  getpeername?: (out: object) => number;
}

function handleOf(sock: net.Socket): SocketHandle | undefined {
  return (sock as unknown as { _handle?: SocketHandle })._handle;
}

export function endpointsOf(sock: net.Socket): Endpoints {
  return {
    clientAddress: plainAddress(sock.remoteAddress),
    clientPort: sock.remotePort ?? 0,
    localAddress: plainAddress(sock.localAddress),
    localPort: sock.localPort ?? 0,
  };
}

/** The fd of a net.Socket (for a child's stdio); throws when it has none. */
export function socketFd(sock: net.Socket): number {
  const fd = handleOf(sock)?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no file descriptor');
  return fd;
}

/**
 * Takes the kernel socket out of a net.Socket: dups its fd (close-on-exec)
 * and destroys the JS socket, so native owns the duplicate.
 */
export function detachFd(sock: net.Socket): number {
  const fd = handleOf(sock)?.fd;
  try {
    if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no file descriptor');
    return native().dupCloexec(fd);
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

/** TCP keepalive (`keepalive yes`) on a held client or a socket; a socket without an fd, or an option refused, is left as it is. */
export function keepAlive(s: HeldClient | net.Socket): void {
  const fd = 'kind' in s ? (s.kind === 'fd' ? s.fd : handleOf(s.sock)?.fd) : handleOf(s)?.fd;
  if (typeof fd !== 'number' || fd < 0) return;
  try {
    native().setKeepalive(fd);
  } catch {
    // Not a TCP socket (a test's socketpair): nothing to keep alive.
  }
}

/**
 * After a child had the client on its stdio (an ACP), the socket's file
 * description is blocking again (libuv clears O_NONBLOCK in the child): put
 * it back before this process reads or writes it.
 */
export function restoreNonblocking(client: HeldClient): void {
  const fd = client.kind === 'fd' ? client.fd : handleOf(client.sock)?.fd;
  if (typeof fd === 'number' && fd >= 0) native().setNonblock(fd);
}
