/**
 * Which user and group serve a service. Started as root: the service's
 * `uid`/`gid`, else 65535/65534 (literal numbers: setuid(-1) is no drop on
 * Linux). Started as another user: that user's ids, always.
 */
import type { Service } from './service';

export const DEFAULT_UID = 65535;
export const DEFAULT_GID = 65534;

export interface Identity {
  readonly uid: number;
  readonly gid: number;
}

export function identityKey(id: Identity): string {
  return `${id.uid}:${id.gid}`;
}

/** True when this process can and must change ids for its services. */
export function runningAsRoot(): boolean {
  return process.geteuid?.() === 0;
}

export function serviceIdentity(s: Service, asRoot: boolean): Identity {
  if (!asRoot) return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  return { uid: s.uid ?? DEFAULT_UID, gid: s.gid ?? DEFAULT_GID };
}
