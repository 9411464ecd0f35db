/**
 * The master's side of the process model: one long-lived worker per
 * distinct service identity, started with fork({uid, gid}), restarted with
 * backoff when it dies. The master hands each accepted socket to the worker
 * of its service's identity and never reads or writes client data itself.
 */
import { fork, type ChildProcess } from 'node:child_process';
import type * as net from 'node:net';
import * as path from 'node:path';
import { identityKey, serviceIdentity, type Identity } from './identity';
import type { Logger } from './log';
import type { ConnMessage, InitMessage, ToMaster } from './protocol';
import type { Service } from './service';

const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 10_000;
/** A worker that lived this long is healthy again: its next restart is quick. */
const HEALTHY_MS = 10_000;
/** Connections kept waiting while a worker starts; more are closed. */
const QUEUE_MAX = 1024;

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
  private readonly init: Omit<InitMessage, 'expect'>;
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
    const child = fork(path.join(__dirname, 'worker.js'), [], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv: [],
      ...(this.drop ? { uid: this.id.uid, gid: this.id.gid } : {}),
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

  stop(): Promise<void> {
    this.state = 'stopped';
    if (this.timer) clearTimeout(this.timer);
    for (const p of this.queue) p.sock.destroy();
    this.queue = [];
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
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
  private readonly workers = new Map<string, Worker>();
  private readonly byService: Worker[];
  private readonly opts: SupervisorOptions;

  constructor(opts: SupervisorOptions) {
    this.opts = opts;
    const init = { type: 'init' as const, services: opts.services, clearEnv: opts.clearEnv, logname: opts.logname, stderr: opts.stderr };
    this.byService = opts.services.map((s) => {
      const id = serviceIdentity(s, opts.asRoot);
      const key = identityKey(id);
      let w = this.workers.get(key);
      if (!w) {
        w = new Worker(id, opts.asRoot, init, opts.log);
        this.workers.set(key, w);
      }
      return w;
    });
  }

  start(): void {
    for (const w of this.workers.values()) w.start();
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

  /** Pids of the running workers, by identity key `uid:gid`. */
  pids(): Map<string, number> {
    const m = new Map<string, number>();
    for (const [k, w] of this.workers) if (w.child?.pid !== undefined) m.set(k, w.child.pid);
    return m;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.workers.values()].map((w) => w.stop()));
  }

  get services(): readonly Service[] {
    return this.opts.services;
  }
}
