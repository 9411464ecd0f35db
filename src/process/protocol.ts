/**
 * Messages between the master and its workers (child_process IPC, JSON).
 * The master trusts nothing a worker sends: parseToMaster checks each one
 * (channel.ts bounds its size and refuses descriptors before it is parsed).
 */
import type { Identity } from './privilege';
import type { Service } from '../table/service';

/** A range of connection numbers: first, first + 1, … first + count - 1. */
export interface IdBlock {
  readonly first: number;
  readonly count: number;
}

/** A listening socket the worker was started with (an fd of its own, from the fork's stdio). */
export interface ListenerFd {
  readonly fd: number;
  /** The listen key of the service it serves (table/service.ts listenKey). */
  readonly key: string;
  /** The service's place in the shared limits (native/limits.cc), the same in every worker. */
  readonly slot: number;
}

/** The shared limits region (an fd of the worker's, like the listeners) and this worker's index in it. */
export interface LimitsFd {
  readonly fd: number;
  readonly worker: number;
}

export interface InitMessage {
  readonly type: 'init';
  readonly services: readonly Service[];
  readonly listeners: readonly ListenerFd[];
  readonly limits: LimitsFd;
  /** The first connection numbers this worker may give out. */
  readonly ids: IdBlock;
  readonly clearEnv: boolean;
  readonly logname: string;
  readonly stderr: boolean;
  /** The ids the worker must run with (started by root), or null (no drop asked). */
  readonly expect: Identity | null;
}

/** A new service table after a reload: later connections use it, live ones keep theirs. */
export interface ServicesMessage {
  readonly type: 'services';
  readonly services: readonly Service[];
}

/** More connection numbers, the answer to a `more-ids`. */
export interface IdsMessage {
  readonly type: 'ids';
  readonly ids: IdBlock;
}

/**
 * Stop: close the listeners (the master keeps its copies), finish live
 * sessions within graceMs, then reset what is left and exit. A null grace
 * (a worker replaced by a reload) lets its sessions run to their end; a
 * later drain with a number (the daemon stopping) sets the deadline.
 */
export interface DrainMessage {
  readonly type: 'drain';
  readonly graceMs: number | null;
}

export type ToWorker = InitMessage | ServicesMessage | IdsMessage | DrainMessage;

/** The worker has dropped its privileges and accepts on its listeners. */
export interface ReadyMessage {
  readonly type: 'ready';
  readonly uid: number;
  readonly gid: number;
}

/** Half of the worker's connection numbers are used: it asks for the next block. */
export interface MoreIdsMessage {
  readonly type: 'more-ids';
}

/** Sent every HEARTBEAT_MS from the worker's event loop: a worker the master stops hearing from is killed. */
export interface AliveMessage {
  readonly type: 'alive';
}

export type ToMaster = ReadyMessage | MoreIdsMessage | AliveMessage;

export const HEARTBEAT_MS = 1000;

/** What the master may hear: the message, or why it is not one (for the log line). */
export function parseToMaster(m: unknown): ToMaster | string {
  if (m === null || typeof m !== 'object' || Array.isArray(m)) return `not an object: ${m === null ? 'null' : Array.isArray(m) ? 'array' : typeof m}`;
  const o = m as Record<string, unknown>;
  const keys = Object.keys(o).sort().join(',');
  const isId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
  switch (o['type']) {
    case 'ready':
      if (keys !== 'gid,type,uid' || !isId(o['uid']) || !isId(o['gid'])) return 'a "ready" without exactly a numeric uid and gid';
      return { type: 'ready', uid: o['uid'], gid: o['gid'] };
    case 'more-ids':
    case 'alive':
      if (keys !== 'type') return `a "${o['type']}" with other fields`;
      return { type: o['type'] };
    default:
      return typeof o['type'] === 'string' ? `unknown type ${JSON.stringify(o['type'].slice(0, 40))}` : 'no type';
  }
}
