/**
 * Upgrades without loss (SIGUSR2). The running master starts a new master
 * from the installed program with its own arguments, handing it every
 * listening socket (fds 4, 5, … with their listen keys in
 * TCPPROXY_UPGRADE), the systemd notification variables, and where its
 * connection numbers may start. The new master takes the sockets that match
 * its services (binding any new ones), starts its workers and, once they
 * are ready, reports on fd 3 as a detached daemon does (modes/daemon.ts).
 * Only then does the old master stop its workers accepting and let their
 * sessions finish; connections waiting in a backlog stay in the same
 * kernel socket and are accepted by the new workers. A new master that
 * fails (a bad config, a crash, no report within UPGRADE_MS) is killed if
 * it still runs, and the old one keeps serving.
 */
import { spawn } from 'node:child_process';
import type { Logger } from '../sys/log';

const UPGRADE_VAR = 'TCPPROXY_UPGRADE';
const READY_FD_VAR = 'TCPPROXY_READY_FD';
/** A new master not ready this long after its start is given up. */
export const UPGRADE_MS = 60_000;
/** Connection numbers the old master keeps for itself: the new one starts this far above its next. */
export const ID_GAP = 1_000_000_000;
const FIRST_FD = 4;

/** What a new master is handed. */
export interface Handover {
  /** The old master's pid (the pid file may name it). */
  readonly from: number;
  /** Its listening sockets: fd in this process and listen key (`metrics` for the metrics port's). */
  readonly listeners: readonly { readonly fd: number; readonly key: string }[];
  /** The first connection number this master may give out. */
  readonly firstId: number;
}

/** In a new master: what the old one handed over (taken out of the environment), or null. */
export function takeHandover(env: NodeJS.ProcessEnv = process.env): Handover | null {
  const raw = env[UPGRADE_VAR];
  delete env[UPGRADE_VAR];
  if (raw === undefined) return null;
  try {
    const h = JSON.parse(raw) as Handover;
    const fine =
      Number.isSafeInteger(h.from) &&
      Number.isSafeInteger(h.firstId) &&
      Array.isArray(h.listeners) &&
      h.listeners.every((l) => Number.isInteger(l.fd) && l.fd >= FIRST_FD && typeof l.key === 'string');
    return fine ? h : null;
  } catch {
    return null;
  }
}

export interface UpgradeRequest {
  readonly argv: readonly string[];
  readonly listeners: readonly { readonly fd: number; readonly key: string }[];
  readonly firstId: number;
  /** The notification variables the old master took out of its environment, for the new one. */
  readonly notifyEnv: Readonly<Record<string, string>>;
  readonly foreground: boolean;
  readonly log: Logger;
}

export type UpgradeOutcome = { ok: true; pid: number } | { ok: false; why: string };

/** A new master being started: its report to come, and a way to give it up (the old one is stopping). */
export interface Upgrade {
  /** The new master's pid (0 when it could not be started). */
  readonly pid: number;
  readonly outcome: Promise<UpgradeOutcome>;
  /** Kills the new master if it has not reported ready yet. */
  cancel(): void;
}

/** Starts the new master; its outcome resolves with its report. */
export function startNewMaster(r: UpgradeRequest): Upgrade {
  let cancel = (): void => {};
  let started = 0;
  const outcome = new Promise<UpgradeOutcome>((resolve) => {
    const handover: Handover = {
      from: process.pid,
      listeners: r.listeners.map((l, i) => ({ fd: FIRST_FD + i, key: l.key })),
      firstId: r.firstId,
    };
    const script = process.argv[1] ?? '';
    // Foreground (-D): the new master logs where this one does; detached, to syslog only, as this one.
    const out = r.foreground ? 'inherit' : 'ignore';
    let child;
    try {
      child = spawn(process.execPath, [...process.execArgv, script, ...r.argv], {
        detached: true, // its own session: this one's terminal or group signals are not for it
        stdio: ['ignore', out, out, 'pipe', ...r.listeners.map((l) => l.fd)],
        env: { ...process.env, ...r.notifyEnv, [READY_FD_VAR]: '3', [UPGRADE_VAR]: JSON.stringify(handover) },
      });
    } catch (err) {
      resolve({ ok: false, why: `cannot start it: ${(err as Error).message}` });
      return;
    }
    const pid = child.pid ?? 0;
    started = pid;
    let report = '';
    let settled = false;
    const settle = (o: UpgradeOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!o.ok && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      child.unref();
      (child.stdio[3] as { unref?: () => void } | null)?.unref?.();
      resolve(o);
    };
    const timer = setTimeout(() => settle({ ok: false, why: `not ready ${UPGRADE_MS / 1000} s after its start` }), UPGRADE_MS);
    cancel = () => settle({ ok: false, why: 'given up: this master is stopping' });
    child.on('error', (err) => settle({ ok: false, why: `cannot start it: ${err.message}` }));
    const pipe = child.stdio[3];
    pipe?.on('data', (chunk: Buffer) => {
      report += chunk.toString('utf8');
      if (report.startsWith('ready\n')) settle({ ok: true, pid });
    });
    pipe?.on('error', () => undefined);
    pipe?.on('end', () => {
      const m = /^exit (\d+)\n([\s\S]*)$/.exec(report);
      settle({ ok: false, why: m ? `exit ${m[1]}: ${(m[2] ?? '').trim().replace(/\n/g, '; ')}` : 'it ended before it was ready' });
    });
    child.once('exit', (code, signal) => settle({ ok: false, why: `it ended before it was ready (${signal ?? `exit ${code ?? '?'}`})` }));
  });
  return { pid: started, outcome, cancel: () => cancel() };
}
