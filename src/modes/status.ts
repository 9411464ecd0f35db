/**
 * What `tcpproxy -Z` shows: the daemon's status as the master builds it
 * (buildStatus, from the service table, the shared counts and the workers'
 * answers) and as the command prints it (formatStatus: aligned text; the
 * JSON is the object itself).
 */
import type { ServiceReport, SessionReport } from '../process/protocol';
import { serviceIdentity } from '../process/privilege';
import type { WorkerStatus } from '../process/supervisor';
import type { SlotStats } from '../sys/native';
import { describeTarget, formatServer, listenKey, type Service } from '../table/service';

/** Live sessions -ZZ lists at most. */
export const MAX_LISTED = 200_000;

export interface ServerStatus {
  /** `host:port` as the config names it. */
  readonly server: string;
  /** `down`: some worker has marked it down after a failed connect (groups of two or more). */
  readonly state: 'up' | 'down';
  readonly connectFailed: number;
}

export interface ServiceStatus {
  /** The listen key: `*:PORT` or `ADDRESS:PORT`. */
  readonly service: string;
  readonly port: number;
  /** null: every interface. */
  readonly interface: string | null;
  readonly target: string;
  readonly uid: number;
  readonly gid: number;
  readonly live: number;
  /** Admitted since the daemon started (or the service first appeared). */
  readonly sessions: number;
  readonly refused: { readonly deny: number; readonly noAllow: number; readonly perSource: number; readonly proxy: number };
  /** Ended sessions' bytes plus what the live ones have moved so far (those of handlers are not seen). */
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly servers: readonly ServerStatus[];
}

export interface DaemonStatus {
  readonly version: string;
  readonly pid: number;
  readonly uptimeSec: number;
  readonly services: readonly ServiceStatus[];
  readonly workers: readonly {
    readonly pid: number;
    readonly uid: number;
    readonly gid: number;
    readonly state: WorkerStatus['state'];
    readonly rssKiB: number | null;
    readonly sessions: number;
    /** False: it did not answer in time (its live bytes and sessions are missing). */
    readonly answered: boolean;
  }[];
  /** -ZZ only: every live session, by connection number (the first MAX_LISTED). */
  readonly liveSessions?: readonly SessionReport[];
  /** -ZZ: live sessions beyond MAX_LISTED, not listed. */
  readonly liveSessionsLeftOut?: number;
}

export interface StatusInputs {
  readonly version: string;
  readonly startedAt: number;
  readonly services: readonly Service[];
  readonly asRoot: boolean;
  readonly workers: readonly WorkerStatus[];
  readonly slotStats: (key: string) => SlotStats | null;
  readonly sessions: boolean;
}

export function buildStatus(i: StatusInputs): DaemonStatus {
  const reports = new Map<string, ServiceReport[]>();
  for (const w of i.workers) {
    for (const r of w.report?.services ?? []) {
      const list = reports.get(r.key);
      if (list === undefined) reports.set(r.key, [r]);
      else list.push(r);
    }
  }
  const seen = new Set<string>();
  const services: ServiceStatus[] = [];
  for (const s of i.services) {
    const key = listenKey(s);
    // Each listener serves the first service of its key (as the workers do).
    if (seen.has(key)) continue;
    seen.add(key);
    const st = i.slotStats(key);
    const live = reports.get(key) ?? [];
    const down = new Set(live.flatMap((r) => r.down));
    const id = serviceIdentity(s, i.asRoot);
    services.push({
      service: key,
      port: s.port,
      interface: s.iface,
      target: describeTarget(s.target),
      uid: id.uid,
      gid: id.gid,
      live: st?.live ?? 0,
      sessions: st?.sessions ?? 0,
      refused: { deny: st?.refused[0] ?? 0, noAllow: st?.refused[1] ?? 0, perSource: st?.refused[2] ?? 0, proxy: st?.refused[3] ?? 0 },
      bytesUp: (st?.bytesUp ?? 0) + live.reduce((n, r) => n + r.bytesUp, 0),
      bytesDown: (st?.bytesDown ?? 0) + live.reduce((n, r) => n + r.bytesDown, 0),
      servers:
        s.target.kind === 'server'
          ? s.target.servers.map((srv, k) => ({
              server: formatServer(srv),
              state: down.has(k) ? 'down' : 'up',
              connectFailed: st?.connectFailed[k] ?? 0,
            }))
          : [],
    });
  }
  const workers = i.workers.map((w) => ({
    pid: w.pid,
    uid: w.uid,
    gid: w.gid,
    state: w.state,
    rssKiB: w.rssKiB,
    sessions: w.sessions,
    answered: w.report !== null,
  }));
  const base = { version: i.version, pid: process.pid, uptimeSec: Math.floor((Date.now() - i.startedAt) / 1000), services, workers };
  if (!i.sessions) return base;
  const all = i.workers.flatMap((w) => w.report?.sessions ?? []).sort((a, b) => a.id - b.id);
  // However many workers: one answer stays well inside what JSON.stringify can make.
  const liveSessions = all.slice(0, MAX_LISTED);
  return { ...base, liveSessions, ...(all.length > MAX_LISTED ? { liveSessionsLeftOut: all.length - MAX_LISTED } : {}) };
}

/** Columns padded to their widest cell; numbers right-aligned. */
function table(head: readonly string[], rows: readonly (readonly (string | number)[])[]): string[] {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const numeric = head.map((_, c) => rows.length > 0 && rows.every((r) => typeof r[c] === 'number' || r[c] === '-'));
  const width = head.map((_, c) => Math.max(...cells.map((r) => (r[c] ?? '').length)));
  return cells.map((r) =>
    r
      .map((cell, c) => (numeric[c] ? cell.padStart(width[c] ?? 0) : c === r.length - 1 ? cell : cell.padEnd(width[c] ?? 0)))
      .join('  ')
      .trimEnd(),
  );
}

const dash = (v: number | null): string | number => (v === null ? '-' : v);
const seconds = (ms: number | null): string | number => (ms === null ? '-' : Math.floor(ms / 1000));

/** The text `tcpproxy -Z` prints. */
export function formatStatus(s: DaemonStatus): string {
  const out: string[] = [`tcpproxy ${s.version}, pid ${s.pid}, up ${s.uptimeSec} s`, ''];
  out.push(
    ...table(
      ['SERVICE', 'UID', 'GID', 'LIVE', 'SESSIONS', 'REFUSED', 'BYTES-UP', 'BYTES-DOWN', 'TARGET'],
      s.services.map((v) => [
        v.service,
        v.uid,
        v.gid,
        v.live,
        v.sessions,
        v.refused.deny + v.refused.noAllow + v.refused.perSource + v.refused.proxy,
        v.bytesUp,
        v.bytesDown,
        v.target,
      ]),
    ),
  );
  const refusing = s.services.filter((v) => v.refused.deny + v.refused.noAllow + v.refused.perSource + v.refused.proxy > 0);
  if (refusing.length > 0) {
    out.push('');
    out.push(...table(['SERVICE', 'DENY', 'NO-ALLOW', 'PER-SOURCE', 'PROXY'], refusing.map((v) => [v.service, v.refused.deny, v.refused.noAllow, v.refused.perSource, v.refused.proxy])));
  }
  const servers = s.services.flatMap((v) => v.servers.map((x) => [v.service, x.server, x.state, x.connectFailed] as const));
  if (servers.length > 0) {
    out.push('');
    out.push(...table(['SERVICE', 'SERVER', 'STATE', 'CONNECT-FAILED'], servers));
  }
  out.push('');
  out.push(
    ...table(
      ['WORKER', 'UID', 'GID', 'STATE', 'RSS-KIB', 'SESSIONS'],
      s.workers.map((w) => [w.pid, w.uid, w.gid, w.answered ? w.state : `${w.state}, no answer`, dash(w.rssKiB), w.sessions]),
    ),
  );
  if (s.liveSessions !== undefined) {
    out.push('');
    out.push(
      ...table(
        ['CONNECTION', 'CLIENT', 'SERVICE', 'PHASE', 'AGE-S', 'BYTES-UP', 'BYTES-DOWN', 'IDLE-S'],
        s.liveSessions.map((x) => [x.id, x.client, x.service, x.phase, seconds(x.ageMs), dash(x.bytesUp), dash(x.bytesDown), seconds(x.idleMs)]),
      ),
    );
    if (s.liveSessionsLeftOut !== undefined) out.push(`(${s.liveSessionsLeftOut} more live sessions not listed)`);
  }
  return `${out.join('\n')}\n`;
}
