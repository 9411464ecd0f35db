/**
 * The master's side of the process model: one long-lived worker per
 * distinct service identity, started with fork({uid, gid}), restarted with
 * backoff when it dies. The master hands each accepted socket to the worker
 * of its service's identity and never reads or writes client data itself.
 */
import { fork, type ChildProcess } from 'node:child_process';
import type * as net from 'node:net';
import * as path from 'node:path';
import { identityKey, serviceIdentity, type Identity } from './privilege';
import type { Logger } from '../sys/log';
import type { ConnMessage, DrainMessage, InitMessage, ServicesMessage, ToMaster } from './protocol';
import type { Service } from '../table/service';

const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 10_000;
/** A worker that lived this long is healthy again: its next restart is quick. */
const HEALTHY_MS = 10_000;
/** Connections kept waiting while a worker starts; more are closed. */
const QUEUE_MAX = 1024;
/** A draining worker that outlives its grace period by this much is killed. */
const KILL_AFTER_GRACE_MS = 5000;

type State = 'starting' | 'ready' | 'backoff' | 'stopped';

interface Pending {
  readonly msg: ConnMessage;
  readonly sock: net.Socket;
}

class Worker {
  state: State = 'starting';
  child: ChildProcess | null = null;
  private backoffMs = BACKOFF_FIRST_MS;
  private startedAt = 0;
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | null = null;

  readonly id: Identity;
  private readonly drop: boolean;
  private init: Omit<InitMessage, 'expect'>;
  private readonly log: Logger;

  constructor(id: Identity, drop: boolean, init: Omit<InitMessage, 'expect'>, log: Logger) {
    this.id = id;
    this.drop = drop;
    this.init = init;
    this.log = log;
  }

  get label(): string {
    return `worker uid ${this.id.uid} gid ${this.id.gid}`;
  }

  start(): void {
    this.state = 'starting';
    this.startedAt = Date.now();
    // The worker drops to its ids itself, first thing on the init message and
    // before any connection is sent: forked with {uid, gid}, Node would have to
    // load our code as the service user, which fails wherever the package sits
    // below a directory only root may enter (root's home, a private checkout).
    const child = fork(path.join(__dirname, 'worker.js'), [], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv: [],
    });
    this.child = child;
    child.on('error', (err) => this.log.error(`${this.label}: ${err.message}`));
    child.on('message', (m: ToMaster) => {
      if (m.type !== 'ready' || this.child !== child) return;
      this.state = 'ready';
      this.log.info(`${this.label} ready, pid ${child.pid ?? '?'}`);
      const queued = this.queue;
      this.queue = [];
      for (const p of queued) this.send(p);
    });
    child.on('exit', (code, signal) => this.exited(child, code, signal));
    child.send({ ...this.init, expect: this.drop ? this.id : null } satisfies InitMessage);
  }

  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.child = null;
    const how = signal !== null ? `signal ${signal}` : `exit ${code ?? '?'}`;
    if (this.state === 'stopped') return;
    if (Date.now() - this.startedAt >= HEALTHY_MS) this.backoffMs = BACKOFF_FIRST_MS;
    this.log.error(`${this.label} (pid ${child.pid ?? '?'}) ended with ${how}; restarting in ${this.backoffMs} ms`);
    for (const p of this.queue) p.sock.destroy();
    this.queue = [];
    this.state = 'backoff';
    this.timer = setTimeout(() => {
      this.timer = null;
      this.start();
    }, this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
  }

  dispatch(msg: ConnMessage, sock: net.Socket): void {
    if (this.state === 'ready') return this.send({ msg, sock });
    if (this.state === 'starting' && this.queue.length < QUEUE_MAX) {
      this.queue.push({ msg, sock });
      return;
    }
    this.log.error(`connection ${msg.id}: ${this.label} is not running: closed`);
    sock.destroy();
  }

  private send(p: Pending): void {
    const child = this.child;
    if (!child?.connected) {
      p.sock.destroy();
      return;
    }
    // keepOpen false: once the fd is in the worker, the master's copy is closed.
    child.send(p.msg, p.sock, { keepOpen: false }, (err) => {
      if (err) {
        this.log.error(`connection ${p.msg.id}: hand-off to ${this.label} failed: ${err.message}`);
        p.sock.destroy();
      }
    });
  }

  /** A new service table: restarts use it too. */
  update(services: readonly Service[]): void {
    this.init = { ...this.init, services };
    if (this.child?.connected) this.child.send({ type: 'services', services } satisfies ServicesMessage);
  }

  /**
   * Stops the worker: no new connections, live sessions get `graceMs` to
   * finish (then the worker resets them), and a worker that still has not
   * exited a few seconds later is killed.
   */
  stop(graceMs: number): Promise<void> {
    this.state = 'stopped';
    if (this.timer) clearTimeout(this.timer);
    for (const p of this.queue) p.sock.destroy();
    this.queue = [];
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), graceMs + KILL_AFTER_GRACE_MS);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      if (child.connected) child.send({ type: 'drain', graceMs } satisfies DrainMessage);
      else child.kill('SIGTERM');
    });
  }
}

export interface SupervisorOptions {
  readonly services: readonly Service[];
  readonly clearEnv: boolean;
  readonly logname: string;
  readonly stderr: boolean;
  readonly asRoot: boolean;
  readonly log: Logger;
}

export class Supervisor {
  private workers = new Map<string, Worker>();
  private byService: Worker[] = [];
  private opts: SupervisorOptions;

  constructor(opts: SupervisorOptions) {
    this.opts = opts;
    this.assign(opts.services);
  }

  /** Maps each service to the worker of its identity, creating workers as needed; returns the unused ones. */
  private assign(services: readonly Service[]): Worker[] {
    const init = { type: 'init' as const, services, clearEnv: this.opts.clearEnv, logname: this.opts.logname, stderr: this.opts.stderr };
    const next = new Map<string, Worker>();
    this.byService = services.map((s) => {
      const id = serviceIdentity(s, this.opts.asRoot);
      const key = identityKey(id);
      let w = next.get(key) ?? this.workers.get(key);
      if (!w) w = new Worker(id, this.opts.asRoot, init, this.opts.log);
      next.set(key, w);
      return w;
    });
    const unused = [...this.workers.entries()].filter(([k]) => !next.has(k)).map(([, w]) => w);
    this.workers = next;
    return unused;
  }

  start(): void {
    for (const w of this.workers.values()) if (w.child === null) w.start();
  }

  /**
   * A reloaded service table: workers of new identities start, workers of
   * identities no longer used drain, the others get the new table. Live
   * sessions are never touched.
   */
  update(services: readonly Service[], graceMs: number): void {
    const known = new Set(this.workers.values());
    const unused = this.assign(services);
    for (const w of this.workers.values()) {
      if (known.has(w)) w.update(services);
      else w.start();
    }
    for (const w of unused) void w.stop(graceMs);
  }

  /** Hands a connection to the worker of the service at `index`. */
  dispatch(id: number, index: number, sock: net.Socket): void {
    const w = this.byService[index];
    if (!w) {
      sock.destroy();
      return;
    }
    w.dispatch({ type: 'conn', id, service: index }, sock);
  }

  /** Kills every worker at once (a second stop signal): their sessions end with them. */
  kill(): void {
    for (const w of this.workers.values()) {
      w.state = 'stopped';
      w.child?.kill('SIGKILL');
    }
  }

  /** Drains every worker (see Worker.stop). */
  async stop(graceMs: number): Promise<void> {
    await Promise.all([...this.workers.values()].map((w) => w.stop(graceMs)));
  }
}
