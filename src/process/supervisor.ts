/**
 * The master's side of the process model: long-lived workers for each
 * distinct service identity (one, or `workers N`), each restarted on its
 * own with backoff when it dies. Each
 * worker is forked with the listening sockets of its services as extra
 * stdio fds and accepts on them itself; the master never accepts, reads or
 * writes a connection. It keeps its own copy of every listener, so clients
 * waiting in a backlog survive a worker's restart.
 *
 * The master trusts no worker: every message is checked (protocol.ts
 * parseToMaster; channel.ts bounds its size and refuses descriptors), the
 * ids a worker reports are checked against the expected ones and against
 * the kernel's (/proc/PID/status), and a worker that stops sending its
 * heartbeat (stopped with SIGSTOP by a handler of its uid, or hung) is
 * killed. Each of these kills the worker (SIGKILL), logs one line and
 * restarts it like any other death: a worker never sends anything invalid,
 * so one that does is not trusted with another message.
 */
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { guardChannel } from './channel';
import { processProgram } from './program';
import { identityKey, serviceIdentity, type Identity } from './privilege';
import type { Logger } from '../sys/log';
import { native } from '../sys/native';
import {
  HEARTBEAT_MS,
  parseToMaster,
  STATUS_PART_ITEMS,
  type DrainMessage,
  type IdBlock,
  type IdsMessage,
  type InitMessage,
  type ListenerFd,
  type ReadyMessage,
  type ServiceReport,
  type ServicesMessage,
  type SessionReport,
  type StatusPart,
  type StatusRequest,
} from './protocol';
import { listenKey, type Service } from '../table/service';

/** The worker's program, dist/src/process/worker.js. */
const WORKER = processProgram('worker.js');

const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 10_000;
/** A worker that lived this long is healthy again: its next restart is quick. */
const HEALTHY_MS = 10_000;
/** A draining worker that outlives its grace period by this much is killed. */
const KILL_AFTER_GRACE_MS = 5000;
/** Connection numbers handed to a worker at a time. */
export const ID_BLOCK = 65536;
/**
 * A ready worker not heard from (heartbeat or other message) for this long
 * is killed. Three missed heartbeats: a worker's event loop never blocks
 * that long (the native path runs on its own threads, spawns and file
 * writes do not wait), and a draining worker keeps its heartbeat.
 */
export const SILENT_KILL_MS = 3 * HEARTBEAT_MS;
/** A worker not ready this long after its fork is killed (it starts in well under a second). */
const START_KILL_MS = 15_000;
const WATCH_MS = 500;
/** More `more-ids` than this within one watch period is not a worker numbering connections. */
const MAX_MORE_IDS = 8;
/** The fd of a worker's first listener: after stdin, stdout, stderr and the IPC channel. */
const FIRST_LISTENER_FD = 4;

type State = 'starting' | 'ready' | 'backoff' | 'stopped';

/** Hands out connection numbers: unique for the daemon's life, across workers and restarts. */
class IdSource {
  next = 1;
  take(): IdBlock {
    const b = { first: this.next, count: ID_BLOCK };
    this.next += ID_BLOCK;
    return b;
  }
}

/** Places in the shared limits region (native/limits.cc), which the master creates and every worker maps. */
const LIMIT_SLOTS = 4096;
const LIMIT_WORKERS = 1024;
/** How often the master tries again to forget a dead worker while the limits table is locked. */
const FORGET_RETRY_MS = 100;

/**
 * The limits region and its numbering: a slot per listen key (kept across
 * reloads, so a service's counts go on; one whose key is gone and whose
 * sessions have ended may be given to a new key), an index per running
 * worker (given back, and its places taken back, when it exits).
 */
class Limits {
  readonly fd = native().limitsCreate();
  private readonly slots = new Map<string, number>();
  private readonly freeWorkers = Array.from({ length: LIMIT_WORKERS }, (_, i) => LIMIT_WORKERS - 1 - i);

  /** The slot of a listen key that has one. */
  slotOf(key: string): number | undefined {
    return this.slots.get(key);
  }

  slot(key: string, inUse: ReadonlySet<string>): number {
    const known = this.slots.get(key);
    if (known !== undefined) return known;
    let slot: number = this.slots.size;
    if (slot >= LIMIT_SLOTS) {
      const stale = [...this.slots].find(([k, s]) => !inUse.has(k) && native().limitStats(s).live === 0);
      if (stale === undefined) throw new Error(`more than ${LIMIT_SLOTS} services with live sessions`);
      this.slots.delete(stale[0]);
      slot = stale[1];
      native().limitsSlotReset(slot);
    }
    this.slots.set(key, slot);
    return slot;
  }

  /** Live sessions of every service that has a slot (those of removed services still draining included). */
  live(): number {
    let n = 0;
    for (const slot of this.slots.values()) n += native().limitStats(slot).live;
    return n;
  }

  takeWorker(): number {
    const i = this.freeWorkers.pop();
    if (i === undefined) throw new Error(`more than ${LIMIT_WORKERS} workers at once`);
    return i;
  }

  /**
   * A worker has exited: what its sessions held is free again. The master
   * never waits for the table's lock (a worker stopped while holding it
   * would stop the master too): when it is held, the forget is tried again
   * every FORGET_RETRY_MS, and the index is given out again only once it
   * is done, so no new worker's entries are taken for the dead one's.
   */
  giveWorker(i: number): void {
    if (native().limitsForget(i)) {
      this.freeWorkers.push(i);
      return;
    }
    const retry = setInterval(() => {
      if (!native().limitsForget(i)) return;
      clearInterval(retry);
      this.freeWorkers.push(i);
    }, FORGET_RETRY_MS);
    retry.unref();
  }
}

/** A listening socket as the supervisor needs it. */
export interface HeldListener {
  readonly key: string;
  readonly fd: number;
}

/** A listener of a worker: the master's socket and the service's slot in the limits. */
interface WorkerListener extends HeldListener {
  readonly slot: number;
}

interface WorkerConfig {
  readonly services: readonly Service[];
  readonly clearEnv: boolean;
  readonly logname: string;
  readonly stderr: boolean;
}

/** A worker as the status socket shows it. */
export interface WorkerStatus {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  readonly state: 'starting' | 'ready' | 'draining';
  /** Resident memory, KiB (/proc/PID/status VmRSS); null when it cannot be read. */
  readonly rssKiB: number | null;
  /** Live sessions it holds (the shared counts). */
  readonly sessions: number;
  /** Its answer, or null when it gave none in time. */
  readonly report: { readonly services: readonly ServiceReport[]; readonly sessions: readonly SessionReport[] } | null;
}

/** How long the status socket waits for a worker's answer. */
export const STATUS_WAIT_MS = 1000;
/** Sessions the master takes from one worker's answer, at most (the rest are left out, and counted). */
const MAX_REPORTED_SESSIONS = 100_000;

/** An answer being gathered from a worker's StatusParts. */
interface Pending {
  parts: number;
  readonly services: ServiceReport[];
  readonly sessions: SessionReport[];
  readonly done: (r: Pending | null) => void;
}

class Worker {
  state: State = 'starting';
  child: ChildProcess | null = null;
  /** The worker's index in the limits region, while it runs. */
  private index = -1;
  private draining = false;
  /** The current child said it is ready (and so answers status requests). */
  private childReady = false;
  private readonly pending = new Map<number, Pending>();
  private nextReq = 1;
  private backoffMs = BACKOFF_FIRST_MS;
  private startedAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private killTimer: NodeJS.Timeout | null = null;
  private exit: Promise<void> | null = null;

  readonly id: Identity;
  /** The listen keys of this worker's services, sorted and joined: a reload that changes them retires the worker. */
  readonly signature: string;
  private readonly listeners: readonly WorkerListener[];
  private readonly drop: boolean;
  private config: WorkerConfig;
  private readonly log: Logger;
  private readonly ids: IdSource;
  private readonly limits: Limits;
  private readonly restarts: { n: number };

  constructor(
    id: Identity,
    listeners: readonly WorkerListener[],
    drop: boolean,
    config: WorkerConfig,
    shared: { readonly ids: IdSource; readonly limits: Limits; readonly restarts: { n: number } },
    log: Logger,
  ) {
    this.id = id;
    this.listeners = listeners;
    this.signature = signatureOf(listeners.map((l) => l.key));
    this.drop = drop;
    this.config = config;
    this.ids = shared.ids;
    this.limits = shared.limits;
    this.restarts = shared.restarts;
    this.log = log;
  }

  get label(): string {
    return `worker uid ${this.id.uid} gid ${this.id.gid}`;
  }

  start(): void {
    this.state = 'starting';
    this.startedAt = Date.now();
    // The worker drops to its ids itself, first thing on the init message:
    // forked with {uid, gid}, Node would have to load our code as the service
    // user, which fails wherever the package sits below a directory only root
    // may enter (root's home, a private checkout). Its listeners arrive as
    // fds 4, 5, … of the fork, the limits region after them.
    const index = this.limits.takeWorker();
    this.index = index;
    this.draining = false;
    this.childReady = false;
    const child = fork(WORKER, [], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc', ...this.listeners.map((l) => l.fd), this.limits.fd],
      execArgv: [],
    });
    this.child = child;
    child.once('exit', () => {
      this.limits.giveWorker(index);
      if (this.child === child || this.child === null) this.index = -1;
      for (const p of this.pending.values()) p.done(null);
      this.pending.clear();
    });
    child.on('error', (err) => this.log.error(`${this.label}: ${err.message}`));
    const pid = child.pid ?? 0;
    let refused = false;
    let ready = false;
    let heardAt = Date.now();
    let moreIds = 0;
    /** One line per worker process, then SIGKILL: its exit restarts it. */
    const refuse = (why: string): void => {
      if (refused || this.child !== child) return;
      refused = true;
      this.log.error(`${this.label} (pid ${pid}): ${why}: killing it`);
      child.kill('SIGKILL');
      if (child.connected) child.disconnect();
    };
    if (!guardChannel(child, refuse) && !unguardedWarned) {
      unguardedWarned = true;
      this.log.warn(`warning: Node ${process.version}: the workers' IPC channel cannot be bounded (sizes and descriptors unchecked)`);
    }
    child.on('message', (raw: unknown, handle: unknown) => {
      if (handle !== undefined && handle !== null) {
        (handle as { close?: () => void }).close?.();
        refuse('passed a descriptor');
        return;
      }
      if (refused || this.child !== child) return;
      const m = parseToMaster(raw);
      if (typeof m === 'string') {
        refuse(`sent an invalid message (${m})`);
        return;
      }
      heardAt = Date.now();
      if (m.type === 'ready') {
        if (ready) return refuse('sent "ready" twice');
        const problem = this.checkIds(m, pid);
        if (problem !== null) return refuse(problem);
        ready = true;
        this.childReady = true;
        if (this.state === 'starting') this.state = 'ready';
        this.log.info(`${this.label} ready, pid ${pid}`);
      } else if (m.type === 'status') {
        const problem = this.statusPart(m);
        if (problem !== null) return refuse(problem);
      } else if (m.type === 'more-ids') {
        if (++moreIds > MAX_MORE_IDS) return refuse(`asked for connection numbers ${moreIds} times in ${WATCH_MS} ms`);
        if (child.connected) child.send({ type: 'ids', ids: this.ids.take() } satisfies IdsMessage);
      }
    });
    // The heartbeat watch. A tick that comes late means the master itself was
    // not running (stopped, or a long reload): what its workers sent meanwhile
    // is still unread, so they get a fresh period rather than a kill.
    let tickAt = Date.now();
    const watch = setInterval(() => {
      const now = Date.now();
      const late = now - tickAt > 2 * WATCH_MS;
      tickAt = now;
      moreIds = 0;
      if (late) heardAt = now;
      if (!ready && now - this.startedAt > START_KILL_MS) refuse(`not ready ${START_KILL_MS / 1000} s after its start`);
      else if (ready && now - heardAt > SILENT_KILL_MS) refuse(`did not answer for ${SILENT_KILL_MS / 1000} s`);
    }, WATCH_MS);
    watch.unref();
    child.once('exit', () => clearInterval(watch));
    child.on('exit', (code, signal) => this.exited(child, code, signal));
    const listeners: ListenerFd[] = this.listeners.map((l, i) => ({ fd: FIRST_LISTENER_FD + i, key: l.key, slot: l.slot }));
    child.send({
      type: 'init',
      ...this.config,
      listeners,
      limits: { fd: FIRST_LISTENER_FD + listeners.length, worker: index },
      ids: this.ids.take(),
      expect: this.drop ? this.id : null,
    } satisfies InitMessage);
  }

  /**
   * Why a worker that says it is ready must not serve, or null: the ids it
   * reports and those the kernel shows (all four of /proc/PID/status, and no
   * supplementary group when it dropped) must be this worker's.
   */
  private checkIds(m: ReadyMessage, pid: number): string | null {
    const want = `uid ${this.id.uid} gid ${this.id.gid}`;
    if (m.uid !== this.id.uid || m.gid !== this.id.gid) return `reported uid ${m.uid} gid ${m.gid}, expected ${want}`;
    let status: string;
    try {
      status = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
    } catch (err) {
      return `its ids cannot be read: ${(err as Error).message}`;
    }
    const field = (name: string): string => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)?.[1]?.trim() ?? '?';
    const [uids, gids, groups] = [field('Uid'), field('Gid'), field('Groups')];
    const all = (ids: string, id: number): boolean => ids.split(/\s+/).every((x) => x === String(id));
    if (!all(uids, this.id.uid) || !all(gids, this.id.gid)) return `runs as uid ${uids.split(/\s+/).join('/')} gid ${gids.split(/\s+/).join('/')}, expected ${want}`;
    if (this.drop && groups !== '') return `has supplementary groups ${groups}, expected none`;
    return null;
  }

  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.child = null;
    const how = signal !== null ? `signal ${signal}` : `exit ${code ?? '?'}`;
    if (this.state === 'stopped') return;
    if (Date.now() - this.startedAt >= HEALTHY_MS) this.backoffMs = BACKOFF_FIRST_MS;
    this.log.error(`${this.label} (pid ${child.pid ?? '?'}) ended with ${how}; restarting in ${this.backoffMs} ms`);
    this.restarts.n++;
    this.state = 'backoff';
    this.timer = setTimeout(() => {
      this.timer = null;
      this.start();
    }, this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
  }

  /**
   * A part of an answer to the status socket. One nobody asked for (late) is
   * dropped; an answer longer than this worker's services and
   * MAX_REPORTED_SESSIONS sessions could make, or naming a service it does
   * not serve, is why the worker is killed.
   */
  private statusPart(m: StatusPart): string | null {
    const p = this.pending.get(m.req);
    if (p === undefined) return null;
    const keys = new Set(this.listeners.map((l) => l.key));
    if (m.services.some((s) => !keys.has(s.key))) return 'reported a service it does not serve';
    if (++p.parts > Math.ceil((keys.size + MAX_REPORTED_SESSIONS) / STATUS_PART_ITEMS) + 1) return 'sent a status answer longer than it can be';
    p.services.push(...m.services);
    for (const s of m.sessions) if (p.sessions.length < MAX_REPORTED_SESSIONS) p.sessions.push(s);
    if (m.last) {
      this.pending.delete(m.req);
      p.done(p);
    }
    return null;
  }

  /** What the status socket shows of this worker, its answer waited for at most STATUS_WAIT_MS. */
  async status(sessions: boolean): Promise<WorkerStatus | null> {
    const child = this.child;
    if (child === null || child.pid === undefined) return null;
    const pid = child.pid;
    let report: Pending | null = null;
    if (this.childReady && child.connected) {
      const req = this.nextReq++;
      report = await new Promise<Pending | null>((resolve) => {
        const timer = setTimeout(() => {
          this.pending.delete(req);
          resolve(null);
        }, STATUS_WAIT_MS);
        this.pending.set(req, {
          parts: 0,
          services: [],
          sessions: [],
          done: (r) => {
            clearTimeout(timer);
            resolve(r);
          },
        });
        child.send({ type: 'status', req, sessions } satisfies StatusRequest);
      });
    }
    return {
      pid,
      uid: this.id.uid,
      gid: this.id.gid,
      state: this.draining ? 'draining' : this.childReady ? 'ready' : 'starting',
      rssKiB: rssOf(pid),
      sessions: this.index >= 0 ? native().limitsWorkerLive(this.index) : 0,
      report: report === null ? null : { services: report.services, sessions: report.sessions },
    };
  }

  /** A new service table (same listeners): restarts use it too. */
  update(services: readonly Service[]): void {
    this.config = { ...this.config, services };
    if (this.child?.connected) this.child.send({ type: 'services', services } satisfies ServicesMessage);
  }

  /**
   * Stops the worker: it closes its listeners, live sessions get `graceMs`
   * to finish (then the worker resets them), and a worker that still has not
   * exited a few seconds later is killed. A null grace (retired by a reload)
   * lets live sessions run to their end.
   */
  stop(graceMs: number | null): Promise<void> {
    this.state = 'stopped';
    this.draining = true;
    if (this.timer) clearTimeout(this.timer);
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    if (graceMs !== null && this.killTimer === null) {
      this.killTimer = setTimeout(() => child.kill('SIGKILL'), graceMs + KILL_AFTER_GRACE_MS);
    }
    if (child.connected) child.send({ type: 'drain', graceMs } satisfies DrainMessage);
    else child.kill('SIGTERM');
    this.exit ??= new Promise((resolve) => {
      child.once('exit', () => {
        if (this.killTimer) clearTimeout(this.killTimer);
        resolve();
      });
    });
    return this.exit;
  }

  kill(): void {
    this.state = 'stopped';
    if (this.timer) clearTimeout(this.timer);
    this.child?.kill('SIGKILL');
  }
}

/** VmRSS of a process in KiB, or null. */
function rssOf(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** The warning that the channel cannot be guarded is given once per master. */
let unguardedWarned = false;

function signatureOf(keys: readonly string[]): string {
  return [...keys].sort().join(' ');
}

export interface SupervisorOptions {
  readonly services: readonly Service[];
  /** The master's listening sockets by listen key: one for every service. */
  readonly listeners: ReadonlyMap<string, HeldListener>;
  readonly clearEnv: boolean;
  /** Workers per identity: each accepts on all of the identity's listeners (the shared sockets). */
  readonly workers: number;
  readonly logname: string;
  readonly stderr: boolean;
  readonly asRoot: boolean;
  readonly log: Logger;
  /** The first connection number (an upgrade's new master starts above the old one's). */
  readonly firstId?: number;
}

export class Supervisor {
  /** The workers of each identity, by identity key. */
  private workers = new Map<string, Worker[]>();
  /** Workers replaced by a reload: draining their sessions, no longer restarted. */
  private retired = new Map<Worker, Promise<void>>();
  private readonly ids = new IdSource();
  private readonly limits = new Limits();
  private readonly restarted = { n: 0 };
  private readonly opts: Omit<SupervisorOptions, 'services' | 'listeners'>;

  constructor(opts: SupervisorOptions) {
    this.opts = opts;
    this.ids.next = opts.firstId ?? 1;
    this.assign(opts.services, opts.listeners, 0);
  }

  /**
   * One worker per identity, with the listeners of that identity's services.
   * A worker whose listeners are unchanged is kept (and told the new table);
   * one whose set changed, or whose identity is no longer used, is retired:
   * it drains while its successor accepts on the same sockets.
   */
  private assign(services: readonly Service[], listeners: ReadonlyMap<string, HeldListener>, graceMs: number): void {
    const config: WorkerConfig = {
      services,
      clearEnv: this.opts.clearEnv,
      logname: this.opts.logname,
      stderr: this.opts.stderr,
    };
    const groups = new Map<string, { id: Identity; keys: string[] }>();
    for (const s of services) {
      const id = serviceIdentity(s, this.opts.asRoot);
      const k = identityKey(id);
      const g = groups.get(k) ?? { id, keys: [] };
      const key = listenKey(s);
      if (!g.keys.includes(key)) g.keys.push(key);
      groups.set(k, g);
    }
    const next = new Map<string, Worker[]>();
    for (const [k, g] of groups) {
      const inUse = new Set(listeners.keys());
      const held = g.keys
        .map((key) => listeners.get(key))
        .filter((l): l is HeldListener => l !== undefined)
        .map((l) => ({ ...l, slot: this.limits.slot(l.key, inUse) }));
      const old = this.workers.get(k) ?? [];
      if (old.length > 0 && old[0]?.signature === signatureOf(held.map((l) => l.key))) {
        for (const w of old) w.update(services);
        next.set(k, old);
        continue;
      }
      for (const w of old) this.retire(w, null);
      next.set(
        k,
        Array.from({ length: this.opts.workers }, () => new Worker(g.id, held, this.opts.asRoot, config, { ids: this.ids, limits: this.limits, restarts: this.restarted }, this.opts.log)),
      );
    }
    for (const [k, ws] of this.workers) if (!next.has(k)) for (const w of ws) this.retire(w, graceMs);
    this.workers = next;
  }

  private retire(w: Worker, graceMs: number | null): void {
    this.retired.set(
      w,
      w.stop(graceMs).finally(() => this.retired.delete(w)),
    );
  }

  start(): void {
    for (const w of this.all()) if (w.child === null && w.state === 'starting') w.start();
  }

  /**
   * A reloaded service table and listener set: workers of new identities or
   * new listener sets start, the ones they replace drain. Live sessions are
   * never touched.
   */
  update(services: readonly Service[], listeners: ReadonlyMap<string, HeldListener>, graceMs: number): void {
    this.assign(services, listeners, graceMs);
    this.start();
  }

  /** Every worker, retired ones (still draining) included, with its answer to the status socket. */
  async status(sessions: boolean): Promise<WorkerStatus[]> {
    const all = await Promise.all([...this.all(), ...this.retired.keys()].map((w) => w.status(sessions)));
    return all.filter((w): w is WorkerStatus => w !== null);
  }

  /** Where a successor's connection numbers may start: `gap` above the next one given here. */
  successorIds(gap: number): number {
    return this.ids.next + gap;
  }

  /** Whether every current worker has said it is ready within `timeoutMs`. */
  async whenReady(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const ready = (): boolean => this.all().every((w) => w.state === 'ready');
    while (Date.now() < deadline && !ready()) await new Promise((r) => setTimeout(r, 20));
    return ready();
  }

  /** Workers restarted after they ended unasked, over the daemon's life. */
  restarts(): number {
    return this.restarted.n;
  }

  /** A service's shared counts, by its listen key (null: no slot yet). */
  slotStats(key: string): ReturnType<ReturnType<typeof native>['limitStats']> | null {
    const slot = this.limits.slotOf(key);
    return slot === undefined ? null : native().limitStats(slot);
  }

  /** Live sessions across all workers, from the shared counters (every session takes a place, maxconn or not). */
  liveSessions(): number {
    return this.limits.live();
  }

  /** Kills every worker at once (a second stop signal): their sessions end with them. */
  kill(): void {
    for (const w of [...this.all(), ...this.retired.keys()]) w.kill();
  }

  /** Drains every worker, retired ones included (see Worker.stop). */
  async stop(graceMs: number): Promise<void> {
    await Promise.all([...this.all(), ...this.retired.keys()].map((w) => w.stop(graceMs)));
  }

  private all(): Worker[] {
    return [...this.workers.values()].flat();
  }
}
