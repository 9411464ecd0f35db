/**
 * Standalone mode: the master binds every (interface, port), hands each
 * accepted connection to the worker of its service's identity, writes the
 * pidfile, and handles signals: SIGTERM/SIGINT drain and exit, SIGHUP
 * re-reads the configuration.
 */
import type * as net from 'node:net';
import { formatHostPort } from '../table/address';
import { GRACE_MS } from '../process/grace';
import { report } from './daemon';
import { StartError } from '../sys/errors';
import { EXIT_OK } from '../sys/exit-codes';
import { runningAsRoot } from '../process/privilege';
import { boundAddress, formatListen, listenAll, takeInheritedListeners, type InheritedListener, type ListenAddress } from './listener';
import { createLogger, type Logger } from '../sys/log';
import { native } from '../sys/native';
import { checkPidfile, removePidfile, writePidfile } from './pidfile';
import { listenAddresses, lookupServiceIndex, type Service } from '../table/service';
import { Supervisor } from '../process/supervisor';
import { VERSION } from '../sys/version';

export { GRACE_MS };

export type Reloaded = { ok: true; services: readonly Service[] } | { ok: false; errors: readonly string[] };

export interface StandaloneOptions {
  readonly services: readonly Service[];
  readonly logname: string;
  readonly clearEnv: boolean;
  /** Lines also on stderr (-D). */
  readonly foreground: boolean;
  readonly pidfile: string | null;
  /** Detached daemon: where to report readiness to the waiting parent. */
  readonly readyFd: number | null;
  /** Re-reads the configuration for SIGHUP; null when there is no file to re-read. */
  readonly reload: (() => Reloaded) | null;
}

function keyOf(a: ListenAddress): string {
  return formatListen(a);
}

function warnIgnoredIds(services: readonly Service[], log: Logger): void {
  if (!runningAsRoot() && services.some((s) => s.uid !== null || s.gid !== null)) {
    log.warn(`warning: not started as root: "uid" and "gid" are ignored, every service runs as uid ${process.getuid?.() ?? '?'}`);
  }
}

export async function standalone(opts: StandaloneOptions): Promise<number> {
  const log = createLogger({ ident: opts.logname, stderr: opts.foreground, syslog: true });
  const fail = (code: number, message: string): number => {
    log.error(message);
    if (opts.readyFd !== null) report(opts.readyFd, { ok: false, code, message: `tcpproxy: ${message}` });
    return code;
  };
  const asRoot = runningAsRoot();
  warnIgnoredIds(opts.services, log);

  // Signals are caught from the start: one that arrives while ports are still
  // being bound is acted on as soon as the daemon is up, never by dying.
  let requested: string | null = null;
  let onStop: ((sig: string) => void) | null = null;
  let hupPending = false;
  let onHup = (): void => {
    hupPending = true;
  };
  const first = (sig: string): void => {
    if (onStop) onStop(sig);
    else requested ??= sig;
  };
  process.once('SIGTERM', () => first('SIGTERM'));
  process.once('SIGINT', () => first('SIGINT'));
  process.on('SIGHUP', () => onHup());

  let services = opts.services;
  let supervisor: Supervisor | null = null;
  let nextId = 1;
  const onConnection = (client: net.Socket): void => {
    const id = nextId++;
    const index = lookupServiceIndex(services, client.localAddress ?? '', client.localPort ?? 0);
    if (index < 0 || supervisor === null) {
      log.error(`connection ${id}: no service for ${client.localAddress ?? '?'} port ${client.localPort ?? 0}`);
      client.destroy();
      return;
    }
    supervisor.dispatch(id, index, client);
  };

  const addon = native();
  const inherited: InheritedListener[] = takeInheritedListeners((fd) => addon.sockName(fd));
  for (const l of inherited) log.info(`socket activation: fd ${l.fd} listening on ${formatHostPort(l.address, l.port)}`);

  const servers = new Map<string, net.Server>();
  const wanted = listenAddresses(services);
  try {
    // A live pidfile means another tcpproxy: say so rather than fail on its ports.
    if (opts.pidfile !== null) checkPidfile(opts.pidfile);
    const list = await listenAll(wanted, onConnection, inherited);
    list.forEach((s, i) => {
      const w = wanted[i];
      if (w) servers.set(keyOf(w), s);
    });
    const bound = list.map((s, i) => boundAddress(s, wanted[i] ?? { iface: null, port: 0 }));
    // `-b ...:0` asks for an ephemeral port: the service takes the port the kernel chose.
    services = services.map((s) => {
      if (s.port !== 0) return s;
      const b = bound.find((x) => x.iface === s.iface);
      return b ? { ...s, port: b.port } : s;
    });
    for (const b of bound) log.info(`listening on ${formatListen(b)}`);
    if (opts.pidfile !== null) writePidfile(opts.pidfile);
  } catch (err) {
    for (const s of servers.values()) s.close();
    if (err instanceof StartError) return fail(err.exitCode, err.message);
    throw err;
  }

  supervisor = new Supervisor({ services, clearEnv: opts.clearEnv, logname: opts.logname, stderr: opts.foreground, asRoot, log });
  supervisor.start();
  log.info(`tcpproxy ${VERSION} serving ${services.length} service(s), pid ${process.pid}`);
  if (opts.readyFd !== null) report(opts.readyFd, { ok: true });
  const running = supervisor;

  let reloading = false;
  const reload = async (): Promise<void> => {
    if (opts.reload === null) {
      log.info('SIGHUP: no configuration file to re-read');
      return;
    }
    if (reloading) return;
    reloading = true;
    try {
      const r = opts.reload();
      if (!r.ok) {
        for (const e of r.errors) log.error(e);
        log.error('SIGHUP: configuration has errors: keeping the running one');
        return;
      }
      const next = listenAddresses(r.services);
      const added = next.filter((a) => !servers.has(keyOf(a)));
      const keep = new Set(next.map(keyOf));
      let fresh: net.Server[];
      try {
        fresh = await listenAll(added, onConnection);
      } catch (err) {
        log.error(`SIGHUP: ${(err as Error).message}: keeping the running configuration`);
        return;
      }
      for (const [k, s] of servers) {
        if (keep.has(k)) continue;
        s.close();
        servers.delete(k);
        log.info(`stopped listening on ${k}`);
      }
      added.forEach((a, i) => {
        const s = fresh[i];
        if (!s) return;
        servers.set(keyOf(a), s);
        log.info(`listening on ${formatListen(a)}`);
      });
      warnIgnoredIds(r.services, log);
      services = r.services;
      running.update(services, GRACE_MS);
      running.start();
      log.info(`SIGHUP: configuration reloaded, serving ${services.length} service(s)`);
    } finally {
      reloading = false;
    }
  };

  return new Promise((resolve) => {
    const now = (sig: string): void => {
      log.info(`${sig} again: closing every session now`);
      running.kill();
      if (opts.pidfile !== null) removePidfile(opts.pidfile);
      resolve(EXIT_OK);
    };
    const stop = (sig: string): void => {
      log.info(`${sig}: no new connections; live sessions have ${GRACE_MS / 1000} s to finish`);
      // From now on SIGHUP is ignored and a second stop signal cuts the grace period short.
      onHup = () => {};
      process.once('SIGTERM', () => now('SIGTERM'));
      process.once('SIGINT', () => now('SIGINT'));
      for (const s of servers.values()) s.close();
      void running.stop(GRACE_MS).then(() => {
        if (opts.pidfile !== null) removePidfile(opts.pidfile);
        log.info('terminated');
        resolve(EXIT_OK);
      });
    };
    onHup = () => void reload();
    onStop = stop;
    if (requested !== null) stop(requested);
    else if (hupPending) void reload();
  });
}
