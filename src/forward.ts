/**
 * Forwarding engines behind one interface: `splice` (the native pump, the
 * default on Linux when the addon is loaded) and `js` (Node streams). The
 * engine is chosen once per process: TCPPROXY_ENGINE=js|splice overrides.
 */
import type * as net from 'node:net';
import { forwardJs } from './forward-js';
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

export type Forwarder = (
  client: net.Socket,
  server: net.Socket,
  idleMs: number,
  done: (r: ForwardResult) => void,
) => Forwarding;

/**
 * Takes the kernel socket out of a paused net.Socket: dups its fd
 * (close-on-exec) and destroys the JS socket, so native owns the duplicate
 * and libuv has never read a byte from it. The only reader of `_handle.fd`.
 */
export function detachFd(addon: Addon, sock: net.Socket): number {
  const handle = (sock as unknown as { _handle?: { fd?: number } })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no file descriptor');
  const dup = addon.dupCloexec(fd);
  sock.destroy();
  return dup;
}

function spliceForwarder(addon: Addon & { pump: NonNullable<Addon['pump']> }): Forwarder {
  return (client, server, idleMs, done) => {
    const c = detachFd(addon, client);
    let s: number;
    try {
      s = detachFd(addon, server);
    } catch (err) {
      addon.close(c);
      throw err;
    }
    return addon.pump({ client: c, server: s, idleMs }, (r) =>
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
  };
}

/**
 * The engine for this process. `warn` is told once, loudly, when the splice
 * engine was wanted (by default or by name) but the addon cannot provide it.
 */
export function selectEngine(warn: (message: string) => void): { name: EngineName; forward: Forwarder } {
  const wanted = process.env['TCPPROXY_ENGINE'];
  if (wanted === 'js') return { name: 'js', forward: forwardJs };
  const { addon, reason } = loadNative();
  if (addon?.pump) {
    const pump = addon.pump.bind(addon);
    return { name: 'splice', forward: spliceForwarder({ ...addon, pump }) };
  }
  warn(
    `warning: splice engine unavailable (${addon ? 'addon has no pump' : reason}); forwarding with the slower JS engine`,
  );
  return { name: 'js', forward: forwardJs };
}
