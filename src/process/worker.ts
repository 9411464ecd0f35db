/**
 * A worker: the process of one service identity (uid, gid). Forked by the
 * master; on its init message, before any connection can arrive, it drops to
 * the service ids and checks that the drop took (privilege.ts). Then it
 * serves the connections the master hands over: ACP, handler or upstream +
 * forwarding.
 */
import type * as net from 'node:net';
import { selectEngine } from '../forward/engine';
import type { Engine } from '../forward/types';
import { runSession } from '../session/session';
import { createLogger, type Logger } from '../sys/log';
import { GRACE_MS } from './grace';
import { currentIds, dropPrivileges } from './privilege';
import type { InitMessage, ToMaster, ToWorker } from './protocol';

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
        const problem = msg.expect === null ? null : dropPrivileges(msg.expect);
        if (problem !== null) {
          log.error(`worker cannot drop privileges to uid ${msg.expect?.uid} gid ${msg.expect?.gid}: ${problem}: refusing to serve`);
          process.exit(1);
        }
        const l = log;
        engine = selectEngine((m) => l.warn(m));
        send({ type: 'ready', ...currentIds() });
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
      ids: currentIds(),
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
