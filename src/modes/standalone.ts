/**
 * Standalone mode: the master binds one listening socket per service,
 * starts a worker per service identity that accepts on its services'
 * sockets, writes the pidfile, and handles signals: SIGTERM/SIGINT drain and exit, SIGHUP
 * re-reads the configuration.
 */
import { formatHostPort } from '../table/address';
import { GRACE_MS } from '../process/grace';
import { report } from './daemon';
import { errorText, StartError } from '../sys/errors';
import { EXIT_FAILURE, EXIT_OK } from '../sys/exit-codes';
import { runningAsRoot } from '../process/privilege';
import { bindListeners, closeListeners, takeInheritedListeners, type InheritedListener, type Listener } from './listener';
import { ControlBusyError, ControlSocket, type Request } from './control';
import { buildStatus } from './status';
import { ID_GAP, startNewMaster, takeHandover, type Upgrade } from './upgrade';

/** How long an upgrade's new master waits for its workers before it gives up (and the old one goes on). */
const UPGRADE_WORKERS_MS = 15_000;
import { MetricsHost } from '../process/metrics-host';
import type { MetricsSnapshot } from '../process/metrics';
import { DEFAULT_GID } from '../process/privilege';

/** The metrics process's uid when started by root: nobody. */
const METRICS_UID = 65534;
import type { BindAddress } from '../table/address';
import { createLogger, type Logger } from '../sys/log';
import { native } from '../sys/native';
import { Notifier, takeNotifyEnv } from '../sys/notify';
import { checkPidfile, removePidfile, writePidfile } from './pidfile';
import { listenAddresses, listenKey, type Service } from '../table/service';
import { Supervisor } from '../process/supervisor';
import { VERSION } from '../sys/version';

export { GRACE_MS };

export type Reloaded = { ok: true; services: readonly Service[] } | { ok: false; errors: readonly string[] };

export interface StandaloneOptions {
  readonly services: readonly Service[];
  readonly logname: string;
  readonly clearEnv: boolean;
  /** Workers per identity (`workers`, fixed at start). */
  readonly workers: number;
  /** Lines also on stderr (-D). */
  readonly foreground: boolean;
  readonly pidfile: string | null;
  /** Detached daemon: where to report readiness to the waiting parent. */
  readonly readyFd: number | null;
  /** Re-reads the configuration for SIGHUP; null when there is no file to re-read. */
  readonly reload: (() => Reloaded) | null;
  /**
   * The control socket's path, or null for none; `explicit` (-S or
   * `control`): a path that cannot be had fails the start, while the
   * default's only gives a warning (another daemon may hold it).
   */
  readonly control: { readonly path: string; readonly explicit: boolean } | null;
  /** `metrics [interface:]port`: where the metrics process serves /metrics (fixed at start). */
  readonly metrics: BindAddress | null;
  /** The command's arguments, for the new master of an upgrade (SIGUSR2). */
  readonly argv: readonly string[];
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
  // Read (and taken out of the environment) before any worker starts.
  const notifier = new Notifier(takeNotifyEnv(), log);

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
  let usr2Pending = false;
  let onUsr2 = (): void => {
    usr2Pending = true;
  };
  process.on('SIGUSR2', () => onUsr2());

  let services = opts.services;
  const addon = native();
  const inherited: InheritedListener[] = takeInheritedListeners((fd) => addon.sockName(fd));
  for (const l of inherited) log.info(`socket activation: fd ${l.fd} listening on ${formatHostPort(l.address, l.port)}`);
  // An upgrade (SIGUSR2 to the master this one replaces): its sockets, taken where a service has the same listen key.
  const handover = takeHandover();
  const handedMetrics = handover?.listeners.find((l) => opts.metrics !== null && l.key === `metrics:${listenKey(opts.metrics)}`) ?? null;
  if (handover !== null) {
    const wantedKeys = new Set(listenAddresses(services).map(listenKey));
    for (const l of handover.listeners) {
      const sn = addon.sockName(l.fd);
      if (l !== handedMetrics && wantedKeys.has(l.key) && sn?.listening === true) {
        inherited.push({ fd: l.fd, address: sn.local.address, port: sn.local.port });
        log.info(`upgrade: fd ${l.fd} listening on ${l.key}, from pid ${handover.from}`);
      } else if (l !== handedMetrics) {
        addon.close(l.fd);
      }
    }
  }

  /** The master's listening sockets by listen key; it never polls them, its workers accept. */
  const listeners = new Map<string, Listener>();
  const startedAt = Date.now();
  let supervisor: Supervisor | null = null;
  const answer = async (r: Request): Promise<unknown> => {
    if (supervisor === null) return { error: 'not started yet' };
    const s = supervisor;
    const workers = await s.status(r.sessions);
    return buildStatus({ version: VERSION, startedAt, services, asRoot, workers, slotStats: (k) => s.slotStats(k), sessions: r.sessions });
  };
  const held: { control: ControlSocket | null; metrics: Listener | null } = { control: null, metrics: null };
  const metricsSnapshot = async (): Promise<MetricsSnapshot> => {
    if (supervisor === null) throw new Error('not started yet');
    const s = supervisor;
    const workers = await s.status(false);
    const st = buildStatus({ version: VERSION, startedAt, services, asRoot, workers, slotStats: (k) => s.slotStats(k), sessions: false });
    return {
      version: VERSION,
      services: st.services.map((v) => {
        const slot = s.slotStats(v.service);
        return {
          port: v.port,
          interface: v.interface ?? '*',
          live: v.live,
          sessions: v.sessions,
          refused: v.refused,
          // Counters may not go back: the ended sessions' bytes only (a live session's are added when it ends).
          bytesUp: slot?.bytesUp ?? 0,
          bytesDown: slot?.bytesDown ?? 0,
          durations: slot?.durations ?? [],
          durationMs: slot?.durationMs ?? 0,
          servers: v.servers.map((x) => ({ server: x.server, up: x.state === 'up', connectFailed: x.connectFailed })),
        };
      }),
      workers: workers.length,
      workerRestarts: s.restarts(),
    };
  };
  try {
    // A live pidfile means another tcpproxy: say so rather than fail on its ports.
    if (opts.pidfile !== null) checkPidfile(opts.pidfile, handover?.from ?? null);
    const wanted = listenAddresses(services);
    const bound = bindListeners(wanted, [], inherited);
    // `-b ...:0` asks for an ephemeral port: the service takes the port the kernel chose.
    services = services.map((s) => {
      if (s.port !== 0) return s;
      const b = bound.find((x) => x.iface === s.iface);
      return b ? { ...s, port: b.port } : s;
    });
    for (const l of bound) {
      listeners.set(l.key, l);
      log.info(`listening on ${l.key}`);
    }
    if (opts.metrics !== null) {
      // Its own socket, never shared with a service's (SO_REUSEPORT would split the connections between them).
      const m = opts.metrics;
      const clash = bound.find((l) => l.port === m.port && (l.iface === null || m.iface === null || l.iface === m.iface));
      if (clash !== undefined) throw new StartError(`metrics ${listenKey(m)}: the port of service ${clash.key}`);
      const [l] = handedMetrics !== null ? [{ ...m, key: listenKey(m), fd: handedMetrics.fd, inherited: true }] : bindListeners([m], [...listeners.values()]);
      if (l !== undefined) {
        held.metrics = l;
        log.info(`metrics on ${l.key}`);
      }
    }
    if (opts.control !== null) {
      try {
        held.control = await ControlSocket.open(opts.control.path, answer, log, handover !== null);
      } catch (err) {
        if (opts.control.explicit || !(err instanceof StartError)) throw err;
        // The default path, held by another tcpproxy (a second instance on the host): this one goes without.
        if (err instanceof ControlBusyError) log.warn(`control socket ${opts.control.path} is another daemon's: this one has none (name one with -S or "control")`);
        else log.warn(`warning: ${err.message}: no control socket (name one with -S or "control")`);
      }
    }
    if (opts.pidfile !== null) writePidfile(opts.pidfile, handover?.from ?? null);
  } catch (err) {
    held.control?.close();
    if (held.metrics !== null) closeListeners([held.metrics]);
    closeListeners(listeners.values());
    if (err instanceof StartError) return fail(err.exitCode, err.message);
    throw err;
  }

  supervisor = new Supervisor({
    services,
    listeners,
    clearEnv: opts.clearEnv,
    workers: opts.workers,
    logname: opts.logname,
    stderr: opts.foreground,
    asRoot,
    log,
    ...(handover !== null ? { firstId: handover.firstId } : {}),
  });
  supervisor.start();
  const metricsHost =
    held.metrics === null
      ? null
      : new MetricsHost({
          fd: held.metrics.fd,
          key: held.metrics.key,
          // nobody, not the default service uid: a worker's uid could signal it, and it them.
          expect: asRoot ? { uid: METRICS_UID, gid: DEFAULT_GID } : null,
          snapshot: metricsSnapshot,
          log,
        });
  metricsHost?.start();
  log.info(`tcpproxy ${VERSION} serving ${services.length} service(s), pid ${process.pid}`);
  // The master being replaced stops accepting when this one reports: its workers first. Workers
  // that do not come up (a broken install) fail the upgrade: the old master goes on serving.
  if (handover !== null && !(await supervisor.whenReady(UPGRADE_WORKERS_MS))) {
    supervisor.kill();
    metricsHost?.stop();
    const message = `upgrade: the workers are not ready ${UPGRADE_WORKERS_MS / 1000} s after the start`;
    log.error(message);
    if (opts.readyFd !== null) report(opts.readyFd, { ok: false, code: EXIT_FAILURE, message });
    return EXIT_FAILURE;
  }
  if (opts.readyFd !== null) report(opts.readyFd, { ok: true });
  const running = supervisor;
  const status = (): string => {
    const live = running.liveSessions();
    return `serving ${services.length} service(s), ${live} live session${live === 1 ? '' : 's'}`;
  };
  notifier.ready(status());
  notifier.start(status);

  let reloading = false;
  const reload = (): void => {
    if (opts.reload === null) {
      log.info('SIGHUP: no configuration file to re-read');
      return;
    }
    if (reloading) return;
    reloading = true;
    notifier.reloading();
    try {
      const r = opts.reload();
      if (!r.ok) {
        for (const e of r.errors) log.error(e);
        log.error('SIGHUP: configuration has errors: keeping the running one');
        return;
      }
      const next = listenAddresses(r.services);
      const added = next.filter((a) => !listeners.has(listenKey(a)));
      const keep = new Set(next.map(listenKey));
      let fresh: Listener[];
      try {
        fresh = bindListeners(added, [...listeners.values()]);
      } catch (err) {
        log.error(`SIGHUP: ${errorText(err)}: keeping the running configuration`);
        return;
      }
      for (const l of fresh) {
        listeners.set(l.key, l);
        log.info(`listening on ${l.key}`);
      }
      warnIgnoredIds(r.services, log);
      services = r.services;
      // Workers get their new listeners first; the master's copies of the
      // removed ones close after, so a port switching between its
      // any-interface and interface forms is never without a socket.
      running.update(services, listeners, GRACE_MS);
      for (const [k, l] of listeners) {
        if (keep.has(k)) continue;
        closeListeners([l]);
        listeners.delete(k);
        log.info(`stopped listening on ${k}`);
      }
      log.info(`SIGHUP: configuration reloaded, serving ${services.length} service(s)`);
    } finally {
      reloading = false;
      // Ready again, with the new configuration or (after errors) the running one.
      notifier.ready(status());
    }
  };

  return new Promise((resolve) => {
    const now = (sig: string): void => {
      log.info(`${sig} again: closing every session now`);
      running.kill();
      metricsHost?.stop();
      held.control?.close();
      if (opts.pidfile !== null) removePidfile(opts.pidfile);
      resolve(EXIT_OK);
    };
    let upgrading: Upgrade | null = null;
    let stopping = false;
    /** SIGUSR2: a new master from the installed program; this one hands over once it is ready. */
    const upgrade = async (): Promise<void> => {
      if (upgrading !== null || stopping) return;
      log.info(`SIGUSR2: starting a new master: ${[process.execPath, process.argv[1] ?? '', ...opts.argv].join(' ')}`);
      const passed = [...listeners.values()].map((l) => ({ fd: l.fd, key: l.key }));
      if (held.metrics !== null) passed.push({ fd: held.metrics.fd, key: `metrics:${held.metrics.key}` });
      const started = startNewMaster({
        argv: opts.argv,
        listeners: passed,
        firstId: running.successorIds(ID_GAP),
        notifyEnv: notifier.passOn(),
        foreground: opts.foreground,
        log,
      });
      upgrading = started;
      if (started.pid !== 0) log.info(`SIGUSR2: the new master is pid ${started.pid}; this one serves until it is ready`);
      const o = await started.outcome;
      upgrading = null;
      if (stopping) return;
      if (!o.ok) {
        log.error(`SIGUSR2: the new master failed: ${o.why}; this one goes on serving`);
        // It may have taken the control socket's path before it failed: take it back.
        if (opts.control !== null && held.control !== null) {
          held.control.abandon();
          held.control = null;
          try {
            held.control = await ControlSocket.open(opts.control.path, answer, log, true);
          } catch (err) {
            log.error(`SIGUSR2: ${errorText(err)}`);
          }
        }
        if (opts.pidfile !== null) {
          try {
            writePidfile(opts.pidfile);
          } catch (err) {
            log.error(`SIGUSR2: ${errorText(err)}`);
          }
        }
        return;
      }
      // The service manager follows the new master (NotifyAccess=main takes its messages from now on).
      notifier.send([`MAINPID=${o.pid}`]);
      notifier.stop();
      stop('SIGUSR2', o.pid);
    };
    const stop = (sig: string, successor: number | null = null): void => {
      stopping = true;
      // A stop signal during an upgrade stops the service: the new master is given up too.
      const givenUp = upgrading?.pid ?? null;
      upgrading?.cancel();
      if (successor !== null) log.info(`SIGUSR2: the new master, pid ${successor}, is serving; this one stops accepting; live sessions have ${GRACE_MS / 1000} s to finish`);
      else {
        log.info(`${sig}: no new connections; live sessions have ${GRACE_MS / 1000} s to finish`);
        notifier.stopping(`stopping: ${running.liveSessions()} live session(s) have ${GRACE_MS / 1000} s to finish`);
      }
      // From now on SIGHUP and SIGUSR2 are ignored and a second stop signal cuts the grace period short.
      onHup = () => {};
      onUsr2 = () => {};
      process.once('SIGTERM', () => now('SIGTERM'));
      process.once('SIGINT', () => now('SIGINT'));
      closeListeners(listeners.values());
      listeners.clear();
      metricsHost?.stop();
      if (held.metrics !== null) closeListeners([held.metrics]);
      held.metrics = null;
      // The new master has made the control socket its own (a new file at the same path).
      if (successor !== null) held.control?.abandon();
      if (successor !== null) held.control = null;
      void running.stop(GRACE_MS).then(() => {
        if (opts.pidfile !== null) removePidfile(opts.pidfile);
        if (opts.pidfile !== null && givenUp !== null) removePidfile(opts.pidfile, givenUp);
        held.control?.close();
        log.info('terminated');
        notifier.stop();
        resolve(EXIT_OK);
      });
    };
    onHup = () => reload();
    onUsr2 = () => void upgrade();
    onStop = stop;
    if (requested !== null) stop(requested);
    else if (hupPending) reload();
    if (usr2Pending && requested === null) void upgrade();
  });
}
