/**
 * What the forwarding engines share: the held client, the end record of a
 * forwarded connection, and the engine interface itself (redesigned by the
 * native connection path; kept as it was here).
 */
import type * as net from 'node:net';
import type { SysError } from '../sys/errors';
import type { LiveBytes, PumpEnd } from '../sys/native';

export type EngineName = 'splice' | 'js';

export interface ForwardResult {
  readonly end: PumpEnd;
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly durationMs: number;
  /** What moved the bytes: `splice`, `copy` (native read/write) or `js`. */
  readonly path: 'splice' | 'copy' | 'js';
  /** For `reset` and `error`: the call that failed, with its code and errno (absent when none did: see PumpResult). */
  readonly error?: SysError;
  readonly side?: 'client' | 'server';
}

export interface Forwarding {
  abort(): void;
  /** Bytes so far and ms since data last moved (the status socket); null once it has ended. */
  stats(): LiveBytes | null;
}

/** Where a connection comes from and arrived, read before the socket is handed to an engine. */
export interface Endpoints {
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly localAddress: string;
  readonly localPort: number;
  /** accept-proxy: the balancer whose PROXY header named the client above. */
  readonly via?: { readonly address: string; readonly port: number };
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
  /** Forwards until both directions are done; `done` runs once. Owns both from the call on, also when it throws (closed then). */
  forward(client: HeldClient, server: net.Socket, idleMs: number, done: (r: ForwardResult) => void): Forwarding;
  /** Closes a held client that will not be forwarded. */
  release(client: HeldClient): void;
}
