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

/** True when this process can and must change ids for its services. */
export function runningAsRoot(): boolean {
  return process.geteuid?.() === 0;
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
