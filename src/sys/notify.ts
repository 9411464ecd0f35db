/**
 * The systemd notification protocol (sd_notify(3)) for the standalone
 * master under `Type=notify`: READY=1 with MAINPID once every port is bound,
 * RELOADING=1 with MONOTONIC_USEC and READY=1 again around a SIGHUP,
 * STOPPING=1 at a stop signal, STATUS= lines with the live session count,
 * and WATCHDOG=1 at half of WATCHDOG_USEC when the manager asks for it.
 *
 * The variables are taken out of the environment when read, so no worker,
 * handler or ACP inherits them and speaks to the manager in the master's
 * name. Sending never blocks (native/notify.cc); a failure is logged once,
 * not for every message.
 */
import type { Logger } from './log';
import { native } from './native';
import { errorText } from './errors';

/** How often the STATUS= line is brought up to date (only sent when it changed). */
export const STATUS_INTERVAL_MS = 1000;

export interface NotifyEnv {
  /** $NOTIFY_SOCKET: a path or '@' and an abstract name; null: not under a manager that listens. */
  readonly socket: string | null;
  /** Half of $WATCHDOG_USEC, in ms, when it is set and $WATCHDOG_PID (if set) is this process; else null. */
  readonly watchdogMs: number | null;
}

/** Reads the notification variables and removes them from `env`. */
export function takeNotifyEnv(env: NodeJS.ProcessEnv = process.env, pid = process.pid): NotifyEnv {
  const socket = env.NOTIFY_SOCKET ?? '';
  const usec = Number(env.WATCHDOG_USEC ?? '');
  const forPid = env.WATCHDOG_PID;
  delete env.NOTIFY_SOCKET;
  delete env.WATCHDOG_USEC;
  delete env.WATCHDOG_PID;
  const mine = forPid === undefined || forPid === '' || Number(forPid) === pid;
  const watchdogMs = socket !== '' && mine && Number.isInteger(usec) && usec > 0 ? Math.max(1, Math.floor(usec / 2000)) : null;
  return { socket: socket === '' ? null : socket, watchdogMs };
}

/** CLOCK_MONOTONIC in µs (libuv's hrtime is CLOCK_MONOTONIC), as RELOADING=1 wants it. */
export function monotonicUsec(): bigint {
  return process.hrtime.bigint() / 1000n;
}

export class Notifier {
  private failed = false;
  private lastStatus = '';
  private watchdog: NodeJS.Timeout | null = null;
  private refresh: NodeJS.Timeout | null = null;

  private readonly env: NotifyEnv;
  private readonly log: Logger;

  constructor(env: NotifyEnv, log: Logger) {
    this.env = env;
    this.log = log;
  }

  get active(): boolean {
    return this.env.socket !== null;
  }

  /** The variables to give a process that takes over as the main one (an upgrade's new master). */
  passOn(): Record<string, string> {
    if (this.env.socket === null) return {};
    return { NOTIFY_SOCKET: this.env.socket, ...(this.env.watchdogMs !== null ? { WATCHDOG_USEC: String(this.env.watchdogMs * 2000) } : {}) };
  }

  /** Sends the `KEY=VALUE` lines; false when there is no manager or the send failed. */
  send(lines: readonly string[]): boolean {
    const socket = this.env.socket;
    if (socket === null) return false;
    try {
      native().sdNotify(socket, lines.join('\n') + '\n');
      this.failed = false;
      return true;
    } catch (err) {
      if (!this.failed) this.log.warn(`warning: cannot notify the service manager at ${socket}: ${errorText(err)}`);
      this.failed = true;
      return false;
    }
  }

  ready(status: string): void {
    this.lastStatus = status;
    this.send(['READY=1', `MAINPID=${process.pid}`, `STATUS=${status}`]);
  }

  reloading(): void {
    this.send(['RELOADING=1', `MONOTONIC_USEC=${monotonicUsec()}`]);
  }

  /** STOPPING=1; the STATUS= refresh ends (the line stays), the watchdog goes on until exit. */
  stopping(status: string): void {
    if (this.refresh !== null) clearInterval(this.refresh);
    this.refresh = null;
    this.lastStatus = status;
    this.send(['STOPPING=1', `STATUS=${status}`]);
  }

  /** Sends STATUS= when `status` differs from the last one sent. */
  status(status: string): void {
    if (status === this.lastStatus) return;
    this.lastStatus = status;
    this.send([`STATUS=${status}`]);
  }

  /** Starts the watchdog keep-alive and the STATUS= refresh from `status()`; neither keeps the process alive. */
  start(status: () => string): void {
    if (!this.active) return;
    if (this.env.watchdogMs !== null) this.watchdog = setInterval(() => this.send(['WATCHDOG=1']), this.env.watchdogMs).unref();
    this.refresh = setInterval(() => this.status(status()), STATUS_INTERVAL_MS).unref();
  }

  stop(): void {
    for (const t of [this.watchdog, this.refresh]) if (t !== null) clearInterval(t);
    this.watchdog = this.refresh = null;
  }
}
