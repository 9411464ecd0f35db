/**
 * A worker: the process of one service identity (uid, gid). Forked by the
 * master with the listening sockets of its services as fds 4, 5, …; on its
 * init message it drops to the service ids and checks that the drop took
 * (privilege.ts), marks every inherited fd close-on-exec, and only then
 * accepts. Each connection runs an ACP, a handler, or an upstream connection
 * and forwarding (session.ts).
 */
import * as net from 'node:net';
import { selectEngine } from '../forward/engine';
import type { Engine } from '../forward/types';
import { runSession } from '../session/session';
import { errorText } from '../sys/errors';
import { createLogger, type Logger } from '../sys/log';
import { native } from '../sys/native';
import { listenKey, type Service } from '../table/service';
import { GRACE_MS } from './grace';
import { currentIds, dropPrivileges } from './privilege';
import type { IdBlock, InitMessage, ToMaster, ToWorker } from './protocol';

/** Connection numbers from the master's blocks; asks for the next block when half of the current one is used. */
class Numbers {
  private blocks: IdBlock[] = [];
  private next = 0;
  private left = 0;
  private asked = false;
  private readonly ask: () => void;
  private readonly low: number;

  constructor(first: IdBlock, ask: () => void) {
    this.ask = ask;
    this.low = Math.floor(first.count / 2);
    this.add(first);
  }

  add(b: IdBlock): void {
    this.asked = false;
    if (this.left === 0) {
      this.next = b.first;
      this.left = b.count;
    } else {
      this.blocks.push(b);
    }
  }

  take(): number {
    if (this.left === 0) {
      const b = this.blocks.shift();
      // Cannot happen unless half a block went by before the master answered:
      // better a worker restart than a number given twice.
      if (b === undefined) throw new Error('out of connection numbers');
      this.next = b.first;
      this.left = b.count;
    }
    const id = this.next++;
    this.left--;
    if (!this.asked && this.blocks.length === 0 && this.left < this.low) {
      this.asked = true;
      this.ask();
    }
    return id;
  }
}

function start(): void {
  let init: InitMessage | null = null;
  let log: Logger | null = null;
  let engine: Engine | null = null;
  let numbers: Numbers | null = null;
  /** Services by listen key: each listener serves exactly one. */
  let byKey = new Map<string, Service>();
  const servers: net.Server[] = [];

  const send = (m: ToMaster): void => {
    process.send?.(m);
  };

  const live = new Set<AbortController>();
  let draining = false;
  let deadline: NodeJS.Timeout | null = null;
  const exitWhenIdle = (): void => {
    if (draining && live.size === 0) process.exit(0);
  };
  const drain = (graceMs: number | null): void => {
    if (!draining) {
      draining = true;
      for (const s of servers) s.close();
    }
    if (graceMs !== null && deadline === null) {
      deadline = setTimeout(() => {
        for (const c of live) c.abort();
      }, graceMs);
      deadline.unref();
    }
    exitWhenIdle();
  };

  const setServices = (services: readonly Service[]): void => {
    byKey = new Map(services.map((s) => [listenKey(s), s] as const).reverse());
  };

  const serve = (key: string, sock: net.Socket): void => {
    const service = byKey.get(key);
    if (!init || !log || !engine || !numbers || draining || !service) {
      sock.destroy();
      return;
    }
    const id = numbers.take();
    let client;
    try {
      client = engine.hold(sock);
    } catch (err) {
      log.error(`connection ${id}: cannot take over the client: ${errorText(err)}`);
      sock.destroy();
      return;
    }
    const ctl = new AbortController();
    live.add(ctl);
    void runSession({
      id,
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
  };

  const listen = (msg: InitMessage, l: Logger): void => {
    for (const { fd, key } of msg.listeners) {
      const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (sock) => serve(key, sock));
      // libuv retries accept errors (EMFILE sheds the oldest pending connection): log, do not die.
      server.on('error', (err) => l.error(`accept on ${key}: ${errorText(err)}`));
      server.listen({ fd });
      servers.push(server);
    }
  };

  process.on('message', (msg: ToWorker) => {
    switch (msg.type) {
      case 'init': {
        if (init) return;
        init = msg;
        log = createLogger({ ident: msg.logname, stderr: msg.stderr, syslog: true });
        const problem = msg.expect === null ? null : dropPrivileges(msg.expect);
        if (problem !== null) {
          log.error(`worker cannot drop privileges to uid ${msg.expect?.uid} gid ${msg.expect?.gid}: ${problem}: refusing to serve`);
          process.exit(1);
        }
        // The listeners (and the IPC channel) must not reach handlers or ACPs.
        native().cloexecFrom(3);
        const l = log;
        engine = selectEngine((m) => l.warn(m));
        numbers = new Numbers(msg.ids, () => send({ type: 'more-ids' }));
        setServices(msg.services);
        listen(msg, l);
        send({ type: 'ready', ...currentIds() });
        return;
      }
      case 'services':
        if (init) init = { ...init, services: msg.services };
        setServices(msg.services);
        return;
      case 'ids':
        numbers?.add(msg.ids);
        return;
      case 'drain':
        drain(msg.graceMs);
        return;
    }
  });
  // The master is gone: nobody supervises this process any more.
  process.on('disconnect', () => process.exit(0));
  // A signal to the whole process group (Ctrl-C in the foreground, a service
  // manager stopping the unit) drains like the master's own message does.
  process.on('SIGTERM', () => drain(GRACE_MS));
  process.on('SIGINT', () => drain(GRACE_MS));
}

if (require.main === module) start();
