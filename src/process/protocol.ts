/** Messages between the master and its workers (child_process IPC, JSON). */
import type { Identity } from './privilege';
import type { Service } from '../table/service';

export interface InitMessage {
  readonly type: 'init';
  readonly services: readonly Service[];
  readonly clearEnv: boolean;
  readonly logname: string;
  readonly stderr: boolean;
  /** The ids the worker must run with (started by root), or null (no drop asked). */
  readonly expect: Identity | null;
}

/** Sent with the client socket as handle. */
export interface ConnMessage {
  readonly type: 'conn';
  readonly id: number;
  /** Index into the init message's services. */
  readonly service: number;
}

/** A new service table after a reload: later connections use it, live ones keep theirs. */
export interface ServicesMessage {
  readonly type: 'services';
  readonly services: readonly Service[];
}

/** Stop: finish live sessions within graceMs, then reset what is left and exit. */
export interface DrainMessage {
  readonly type: 'drain';
  readonly graceMs: number;
}

export type ToWorker = InitMessage | ConnMessage | ServicesMessage | DrainMessage;

export interface ReadyMessage {
  readonly type: 'ready';
  readonly uid: number;
  readonly gid: number;
}

export type ToMaster = ReadyMessage;
