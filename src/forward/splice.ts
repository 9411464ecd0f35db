/** The splice engine: the native pump (kernel pipes, read/write as its fallback). */
import { native } from '../sys/native';
import { detachFd, endpointsOf } from './socket';
import type { Engine } from './types';

export const spliceEngine: Engine = {
  name: 'splice',
  hold(sock) {
    const endpoints = endpointsOf(sock);
    return { kind: 'fd', fd: detachFd(sock), endpoints };
  },
  adopt(fd, endpoints) {
    return { kind: 'fd', fd, endpoints };
  },
  forward(client, server, idleMs, done) {
    if (client.kind !== 'fd') throw new Error('splice engine given a socket');
    // Both are the engine's from this call on, on every path, as they are the
    // native pump's (it closes both fds when it cannot start, as the fast path
    // relies on): a failed dup closes the client here, never the caller after.
    let s: number;
    try {
      s = detachFd(server);
    } catch (err) {
      native().close(client.fd);
      throw err;
    }
    return native().pump({ client: client.fd, server: s, idleMs }, (r) =>
      done({
        end: r.end,
        bytesUp: r.bytesUp,
        bytesDown: r.bytesDown,
        durationMs: r.durationMs,
        path: r.path,
        ...(r.error ? { error: r.error } : {}),
        ...(r.side ? { side: r.side } : {}),
      }),
    );
  },
  release(client) {
    if (client.kind === 'fd') native().close(client.fd);
  },
};
