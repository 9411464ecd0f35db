/**
 * A worker: the process of one service identity (uid, gid). Forked by the
 * master with {uid, gid}, so libuv has already run setgroups(0) → setgid →
 * setuid before this code starts. It checks the drop took, then serves the
 * connections the master hands over: ACP, handler or upstream + forwarding.
 */
import type * as net from 'node:net';
import { selectEngine, type Engine } from './forward';
import { createLogger, type Logger } from './log';
import type { InitMessage, ToMaster, ToWorker } from './protocol';
import { runSession } from './session';

/** Why this process must not serve, or null: ids as expected, and root cannot be regained. */
export function privilegeProblem(expect: InitMessage['expect']): string | null {
  if (expect === null) return null;
  const uid = process.getuid?.();
  const euid = process.geteuid?.();
  const gid = process.getgid?.();
  const egid = process.getegid?.();
  if (uid !== expect.uid || euid !== expect.uid || gid !== expect.gid || egid !== expect.gid) {
    return `worker runs as uid ${uid}/${euid} gid ${gid}/${egid}, expected uid ${expect.uid} gid ${expect.gid}`;
  }
  const groups = process.getgroups?.() ?? [];
  if (groups.some((g) => g !== expect.gid)) return `worker has supplementary groups ${groups.join(',')}`;
  try {
    process.setuid?.(0);
  } catch {
    return null;
  }
  return 'worker could regain root';
}

function start(): void {
  let init: InitMessage | null = null;
  let log: Logger | null = null;
  let engine: Engine | null = null;

  const send = (m: ToMaster): void => {
    process.send?.(m);
  };

  const live = new Set<AbortController>();
  let draining = false;
  const exitWhenIdle = (): void => {
    if (draining && live.size === 0) process.exit(0);
  };

  process.on('message', (msg: ToWorker, handle: unknown) => {
    switch (msg.type) {
      case 'init': {
        init = msg;
        log = createLogger({ ident: msg.logname, stderr: msg.stderr, syslog: true });
        const problem = privilegeProblem(msg.expect);
        if (problem !== null) {
          log.error(`${problem}: refusing to serve`);
          process.exit(1);
        }
        const l = log;
        engine = selectEngine((m) => l.warn(m));
        send({ type: 'ready', uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 });
        return;
      }
      case 'services':
        if (init) init = { ...init, services: msg.services };
        return;
      case 'drain': {
        draining = true;
        const timer = setTimeout(() => {
          for (const c of live) c.abort();
        }, msg.graceMs);
        timer.unref();
        exitWhenIdle();
        return;
      }
      case 'conn':
        break;
    }
    const sock = handle as net.Socket | undefined;
    if (!init || !log || !engine || !sock || draining) {
      sock?.destroy();
      return;
    }
    // Hold the client in this tick: Node starts reading a received socket at once.
    const client = engine.hold(sock);
    const service = init.services[msg.service];
    if (!service) {
      engine.release(client);
      return;
    }
    const ctl = new AbortController();
    live.add(ctl);
    void runSession({
      id: msg.id,
      client,
      service,
      engine,
      log,
      clearEnv: init.clearEnv,
      ids: { uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 },
      signal: ctl.signal,
    }).finally(() => {
      live.delete(ctl);
      exitWhenIdle();
    });
  });
  // The master is gone: nobody supervises this process any more.
  process.on('disconnect', () => process.exit(0));
  // The master drains workers by message; a SIGTERM from elsewhere ends this one at once.
  process.on('SIGTERM', () => process.exit(0));
}

if (require.main === module) start();
