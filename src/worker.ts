/**
 * A worker: the process of one service identity (uid, gid). Forked by the
 * master; on its init message, before any connection can arrive, it drops to
 * the service ids (setgroups(0) → setgid → setuid) and checks that the drop
 * took. Then it serves the connections the master hands over: ACP, handler
 * or upstream + forwarding.
 */
import type * as net from 'node:net';
import { selectEngine, type Engine } from './forward';
import type { Identity } from './identity';
import { createLogger, type Logger } from './log';
import { loadNative } from './native';
import type { InitMessage, ToMaster, ToWorker } from './protocol';
import { runSession } from './session';
import { GRACE_MS } from './grace';

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

/**
 * setgroups(0), setresgid, setresuid for the whole process (glibc applies
 * them to every thread), then the addon proves root cannot be regained.
 * Without the addon, Node's own calls do the same in the same order.
 */
function drop(id: Identity): string | null {
  try {
    const addon = loadNative().addon;
    if (addon) addon.dropPrivileges(id.uid, id.gid);
    else {
      process.setgroups?.([]);
      process.setgid?.(id.gid);
      process.setuid?.(id.uid);
    }
    return null;
  } catch (err) {
    return (err as Error).message;
  }
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
  const drain = (graceMs: number): void => {
    if (draining) return;
    draining = true;
    const timer = setTimeout(() => {
      for (const c of live) c.abort();
    }, graceMs);
    timer.unref();
    exitWhenIdle();
  };

  process.on('message', (msg: ToWorker, handle: unknown) => {
    switch (msg.type) {
      case 'init': {
        init = msg;
        log = createLogger({ ident: msg.logname, stderr: msg.stderr, syslog: true });
        const dropError = msg.expect === null ? null : drop(msg.expect);
        if (dropError !== null) {
          log.error(`worker cannot drop to uid ${msg.expect?.uid} gid ${msg.expect?.gid}: ${dropError}: refusing to serve`);
          process.exit(1);
        }
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
      case 'drain':
        drain(msg.graceMs);
        return;
      case 'conn':
        break;
    }
    const sock = handle as net.Socket | undefined;
    if (!init || !log || !engine || !sock || draining) {
      sock?.destroy();
      return;
    }
    // Hold the client in this tick: Node starts reading a received socket at once.
    let client;
    try {
      client = engine.hold(sock);
    } catch (err) {
      log.error(`connection ${msg.id}: cannot take over the client: ${(err as Error).message}`);
      sock.destroy();
      return;
    }
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
  // A signal to the whole process group (Ctrl-C in the foreground, a service
  // manager stopping the unit) drains like the master's own message does.
  process.on('SIGTERM', () => drain(GRACE_MS));
  process.on('SIGINT', () => drain(GRACE_MS));
}

if (require.main === module) start();
