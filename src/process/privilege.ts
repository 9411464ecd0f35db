/**
 * Which user and group serve a service, and the one place that drops to
 * them. Started as root: the service's `uid`/`gid`, else 65535/65534
 * (literal numbers: setuid(-1) is no drop on Linux). Started as another
 * user: that user's ids, always.
 *
 * The drop is setgroups(0) → setresgid → setresuid in the addon (glibc
 * applies them to every thread), which then proves that root cannot be
 * regained; `verifyIds` checks the same from Node's side before anything
 * is served.
 */
import * as fs from 'node:fs';
import type { Service } from '../table/service';
import { native } from '../sys/native';

export const DEFAULT_UID = 65535;
export const DEFAULT_GID = 65534;

export interface Identity {
  readonly uid: number;
  readonly gid: number;
}

export function identityKey(id: Identity): string {
  return `${id.uid}:${id.gid}`;
}

/**
 * True when this process can and must change ids for its services: its
 * real and effective user ids are both root (mixedIds refuses the other
 * mixtures before anything runs).
 */
export function runningAsRoot(): boolean {
  return process.getuid?.() === 0 && process.geteuid?.() === 0;
}

/** /proc/self/status, or the same `Uid:`/`Gid:` lines made from what Node tells (no saved ids) without /proc. */
function ownStatus(): string {
  try {
    return fs.readFileSync('/proc/self/status', 'latin1');
  } catch {
    const [ruid, euid, rgid, egid] = [process.getuid?.(), process.geteuid?.(), process.getgid?.(), process.getegid?.()];
    return `Uid:\t${ruid}\t${euid}\t${euid}\nGid:\t${rgid}\t${egid}\t${egid}\n`;
  }
}

/** The real, effective and saved ids of the `Uid:` or `Gid:` line of a /proc/PID/status text. */
function statusIds(status: string, key: 'Uid' | 'Gid'): number[] {
  const line = new RegExp(`^${key}:\\s+(.*)$`, 'm').exec(status)?.[1] ?? '';
  return line.trim().split(/\s+/).slice(0, 3).map(Number);
}

/**
 * Why tcpproxy must not run with the ids it was started with, or null.
 * Started set-user-ID or set-group-ID (a wrapper, `setpriv --euid 0`), the
 * user who ran it would have root's power over the files it names (-f,
 * -p, -w) while it took itself for that user's process, and its handlers
 * could take the saved id back: so the real, effective and saved user ids
 * must be equal, and, unless they are root's (the drop then sets every
 * group id), the group ids too. `status`: a /proc/PID/status text (tests).
 */
export function mixedIds(status: string = ownStatus()): string | null {
  const [ruid, euid, suid] = statusIds(status, 'Uid');
  const [rgid, egid, sgid] = statusIds(status, 'Gid');
  if (ruid !== euid || ruid !== suid) {
    return `real user id ${ruid}, effective ${euid}, saved ${suid}: refusing to run set-user-ID; start it as root or as the user itself`;
  }
  if (ruid !== 0 && (rgid !== egid || rgid !== sgid)) {
    return `real group id ${rgid}, effective ${egid}, saved ${sgid}: refusing to run set-group-ID; start it as root or with the user's own group`;
  }
  return null;
}

export function serviceIdentity(s: Service, asRoot: boolean): Identity {
  if (!asRoot) return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  return { uid: s.uid ?? DEFAULT_UID, gid: s.gid ?? DEFAULT_GID };
}

/** The ids this process runs with now, for log lines. */
export function currentIds(): Identity {
  return { uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 };
}

/** Why this process must not serve as `expect`, or null: ids as expected, no other group, root not regainable. */
export function verifyIds(expect: Identity): string | null {
  const uid = process.getuid?.();
  const euid = process.geteuid?.();
  const gid = process.getgid?.();
  const egid = process.getegid?.();
  if (uid !== expect.uid || euid !== expect.uid || gid !== expect.gid || egid !== expect.gid) {
    return `runs as uid ${uid}/${euid} gid ${gid}/${egid}, expected uid ${expect.uid} gid ${expect.gid}`;
  }
  const groups = process.getgroups?.() ?? [];
  if (groups.some((g) => g !== expect.gid)) return `has supplementary groups ${groups.join(',')}`;
  try {
    process.setuid?.(0);
  } catch {
    return null;
  }
  return 'could regain root';
}

/**
 * Drops this whole process to `id` and verifies the drop. Returns null, or
 * what went wrong (the caller logs "cannot drop privileges to uid U gid G:
 * <that>" and serves nothing).
 */
export function dropPrivileges(id: Identity): string | null {
  try {
    native().dropPrivileges(id.uid, id.gid);
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  const problem = verifyIds(id);
  return problem === null ? null : `after the drop the process ${problem}`;
}

/**
 * Makes this process non-dumpable (prctl PR_SET_DUMPABLE 0, see
 * native/process.cc): null, or what went wrong.
 */
export function nonDumpable(): string | null {
  try {
    native().nonDumpable();
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  return null;
}
