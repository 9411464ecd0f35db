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

/** The status socket asks: the worker answers with `status` parts (StatusPart). */
export interface StatusRequest {
  readonly type: 'status';
  /** The request's number, repeated in every part of the answer. */
  readonly req: number;
  /** -ZZ: list the live sessions too. */
  readonly sessions: boolean;
}

export type ToWorker = InitMessage | ServicesMessage | IdsMessage | DrainMessage | StatusRequest;

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

/** A service as one worker sees it: what its live sessions moved so far, the servers it has marked down. */
export interface ServiceReport {
  readonly key: string;
  readonly bytesUp: number;
  readonly bytesDown: number;
  /** Places in the service's group. */
  readonly down: readonly number[];
}

/** A live session, for -ZZ. Bytes and idle time are null while a handler or an ACP has the client. */
export interface SessionReport {
  readonly id: number;
  readonly client: string;
  /** The service's listen key. */
  readonly service: string;
  readonly phase: string;
  readonly ageMs: number;
  readonly bytesUp: number | null;
  readonly bytesDown: number | null;
  readonly idleMs: number | null;
}

/**
 * One part of a worker's answer to a StatusRequest: an answer is sent in
 * parts of at most STATUS_PART_ITEMS entries, so no line comes near the
 * channel's bound; the last has `last: true`.
 */
export interface StatusPart {
  readonly type: 'status';
  readonly req: number;
  readonly services: readonly ServiceReport[];
  readonly sessions: readonly SessionReport[];
  readonly last: boolean;
}

export type ToMaster = ReadyMessage | MoreIdsMessage | AliveMessage | StatusPart;

/** Entries (services and sessions together) in one StatusPart: a few hundred bytes each at most. */
export const STATUS_PART_ITEMS = 100;
/** The longest string a worker may put in a report (a listen key, a client, a phase). */
const MAX_REPORT_TEXT = 120;

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
    case 'status':
      return parseStatusPart(o, keys);
    case 'more-ids':
    case 'alive':
      if (keys !== 'type') return `a "${o['type']}" with other fields`;
      return { type: o['type'] };
    default:
      return typeof o['type'] === 'string' ? `unknown type ${JSON.stringify(o['type'].slice(0, 40))}` : 'no type';
  }
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isText = (v: unknown): v is string => typeof v === 'string' && v.length <= MAX_REPORT_TEXT;

function parseStatusPart(o: Record<string, unknown>, keys: string): StatusPart | string {
  if (keys !== 'last,req,services,sessions,type') return 'a "status" without exactly req, services, sessions and last';
  const { req, services, sessions, last } = o;
  if (!isCount(req) || typeof last !== 'boolean' || !Array.isArray(services) || !Array.isArray(sessions)) return 'a "status" with fields of the wrong type';
  if (services.length + sessions.length > STATUS_PART_ITEMS) return `a "status" of more than ${STATUS_PART_ITEMS} entries`;
  const svc: ServiceReport[] = [];
  for (const s of services as unknown[]) {
    if (s === null || typeof s !== 'object') return 'a "status" service that is not an object';
    const r = s as Record<string, unknown>;
    const down = r['down'];
    if (Object.keys(r).sort().join(',') !== 'bytesDown,bytesUp,down,key' || !isText(r['key']) || !isCount(r['bytesUp']) || !isCount(r['bytesDown'])) {
      return 'a "status" service of the wrong shape';
    }
    if (!Array.isArray(down) || down.length > 64 || !down.every((d) => isCount(d) && d < 65536)) return 'a "status" service with a bad list of servers down';
    svc.push({ key: r['key'], bytesUp: r['bytesUp'], bytesDown: r['bytesDown'], down: down as number[] });
  }
  const ses: SessionReport[] = [];
  const countOrNull = (v: unknown): v is number | null => v === null || isCount(v);
  for (const s of sessions as unknown[]) {
    if (s === null || typeof s !== 'object') return 'a "status" session that is not an object';
    const r = s as Record<string, unknown>;
    if (
      Object.keys(r).sort().join(',') !== 'ageMs,bytesDown,bytesUp,client,id,idleMs,phase,service' ||
      !isCount(r['id']) || !isText(r['client']) || !isText(r['service']) || !isText(r['phase']) || !isCount(r['ageMs']) ||
      !countOrNull(r['bytesUp']) || !countOrNull(r['bytesDown']) || !countOrNull(r['idleMs'])
    ) {
      return 'a "status" session of the wrong shape';
    }
    ses.push({
      id: r['id'], client: r['client'], service: r['service'], phase: r['phase'], ageMs: r['ageMs'],
      bytesUp: r['bytesUp'], bytesDown: r['bytesDown'], idleMs: r['idleMs'],
    });
  }
  return { type: 'status', req, services: svc, sessions: ses, last };
}
