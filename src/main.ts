/**
 * The program: command line → service table → mode (list, standalone,
 * inetd). Only chooses; the modes do the work. Returns the exit status;
 * only src/tcpproxy.ts touches process.exit.
 */
import { availableParallelism } from 'node:os';
import type * as ChildProcess from 'node:child_process';
import * as fs from 'node:fs';
import type * as DaemonMode from './modes/daemon';
import type * as ListMode from './modes/list';
import type * as Listeners from './modes/listener';
import type * as StandaloneMode from './modes/standalone';
import type * as ControlMode from './modes/control';
import type * as StatusMode from './modes/status';
import { inetdSafeIo, serveInetd, stdinIsConnection } from './modes/inetd';
import { mixedIds, runningAsRoot } from './process/privilege';
import { EXIT_FAILURE, EXIT_OK, EXIT_SOFTWARE, EXIT_USAGE } from './sys/exit-codes';
import { errnoName } from './sys/errors';
import { processIo, type Io } from './sys/io';
import { native, NativeLoadError } from './sys/native';
import { VERSION } from './sys/version';
import { DEFAULT_CONFIG, HELP, parseArgs, USAGE, type CliOptions } from './table/cli';
import { loadServices } from './table/load';
import { etcServices } from './table/services-db';

/**
 * Without the addon nothing works: say so once and stop (exit 70). With a
 * socket on fd 0 (inetd) stderr is the client, so the message goes to
 * syslog through logger(1) instead, the one way left without the addon.
 */
function noAddon(err: NativeLoadError, io: Io): number {
  let inetd = false;
  try {
    inetd = fs.fstatSync(0).isSocket();
  } catch {
    // fd 0 closed: not inetd.
  }
  if (inetd) childProcess().spawnSync('logger', ['-t', 'tcpproxy', '-p', 'daemon.err', '--', err.message], { stdio: 'ignore' });
  else io.stderr(`tcpproxy: ${err.message}\n`);
  return EXIT_SOFTWARE;
}

/*
 * Loaded when their mode runs, not at start: in inetd mode every connection
 * starts a process, which should compile only what serves it (and not
 * node:child_process, node:crypto and the daemon's whole process model).
 */
/* eslint-disable @typescript-eslint/no-require-imports */
const daemonMode = (): typeof DaemonMode => require('./modes/daemon') as typeof DaemonMode;
const standaloneMode = (): typeof StandaloneMode => require('./modes/standalone') as typeof StandaloneMode;
const listMode = (): typeof ListMode => require('./modes/list') as typeof ListMode;
const controlMode = (): typeof ControlMode => require('./modes/control') as typeof ControlMode;
const statusMode = (): typeof StatusMode => require('./modes/status') as typeof StatusMode;
const listeners = (): typeof Listeners => require('./modes/listener') as typeof Listeners;
const childProcess = (): typeof ChildProcess => require('node:child_process') as typeof ChildProcess;
/* eslint-enable @typescript-eslint/no-require-imports */

function load(o: CliOptions): ReturnType<typeof loadServices> {
  return loadServices(o, runningAsRoot(), process.cwd());
}

export async function main(argv: readonly string[], ioGiven: Io = processIo): Promise<number> {
  try {
    // Whatever our parent leaked to us (fds >= 3 without close-on-exec) must not reach workers or handlers.
    native().cloexecFrom(3);
  } catch (err) {
    if (err instanceof NativeLoadError) return noAddon(err, ioGiven);
    throw err;
  }
  const io = inetdSafeIo(ioGiven);
  const parsed = parseArgs(argv, etcServices);
  if (!parsed.ok) {
    io.stderr(`tcpproxy: ${parsed.error}\n${USAGE}\n`);
    return EXIT_USAGE;
  }
  const o = parsed.options;
  if (o.help) {
    io.stdout(HELP.endsWith('\n') ? HELP : `${HELP}\n`);
    return EXIT_OK;
  }
  if (o.version) {
    io.stdout(`tcpproxy ${VERSION}\n`);
    return EXIT_OK;
  }
  // Before any file is named to it: set-user-ID, the caller would read and write files with root's power.
  const mixed = mixedIds();
  if (mixed !== null) {
    io.stderr(`tcpproxy: ${mixed}\n`);
    return EXIT_FAILURE;
  }
  if (o.status > 0) return showStatus(o, io);
  if (o.server !== null && o.standalone && o.bind === null) {
    io.stderr(`tcpproxy: option -s with a server argument needs -b [interface:]port\n${USAGE}\n`);
    return EXIT_USAGE;
  }
  const loaded = load(o);
  if (!loaded.ok) {
    for (const e of loaded.errors) io.stderr(`${e}\n`);
    // The new master of an upgrade: the old one waits for this report (a detached start checked the file before).
    const readyFd = process.env['TCPPROXY_READY_FD'] === undefined ? null : daemonMode().takeReadyFd();
    if (readyFd !== null) daemonMode().report(readyFd, { ok: false, code: EXIT_USAGE, message: loaded.errors.join('\n') });
    return EXIT_USAGE;
  }
  const { services, config } = loaded;

  if (o.list > 0) {
    io.stdout(listMode().listing(services, o.list === 1 ? 1 : 2, workerCount(config?.workers ?? null)));
    return EXIT_OK;
  }

  const logname = o.logname ?? config?.logname ?? 'tcpproxy';
  // A connection on fd 0 means inetd mode, unless -s or -b asks for standalone;
  // without one, a config file keeps the original's standalone default.
  if (!o.standalone && stdinIsConnection()) {
    const local = native().sockName(0)?.local.port ?? 0;
    const inetdServices = services.map((s) => (s.port === 0 ? { ...s, port: local } : s));
    return serveInetd(inetdServices, { logname, clearEnv: o.clearEnv });
  }
  if (o.standalone || (config !== null && config.standalone !== false)) {
    const { detach, report, takeReadyFd } = daemonMode();
    const { sourceProblems } = listeners();
    const readyFd = takeReadyFd();
    // A `source` address this machine does not have fails the start, before
    // detaching or binding anything, in the form of a config error (exit 1).
    const unbindable = sourceProblems(services);
    if (unbindable.length > 0) {
      if (readyFd !== null) report(readyFd, { ok: false, code: EXIT_FAILURE, message: unbindable.join('\n') });
      else for (const e of unbindable) io.stderr(`${e}\n`);
      return EXIT_FAILURE;
    }
    // Sockets passed by a service manager are ours only in this process (LISTEN_PID): no detaching.
    const activated = Number(process.env['LISTEN_PID']) === process.pid;
    if (!o.foreground && !activated && readyFd === null) {
      const warning = syslogWarning();
      if (warning !== null) io.stderr(`${warning}\n`);
      return detach(argv, io.stderr);
    }
    // What `ps` shows (node's own argv otherwise): libuv rewrites the argv area, so at most that long.
    process.title = o.server !== null ? 'tcpproxy: master' : `tcpproxy: master -f ${o.configFile ?? DEFAULT_CONFIG}`;
    return standaloneMode().standalone({
      services,
      logname,
      clearEnv: o.clearEnv,
      workers: workerCount(config?.workers ?? null),
      foreground: o.foreground,
      pidfile: o.pidfile,
      readyFd,
      control: controlPath(o.control, config?.control ?? null),
      metrics: config?.metrics ?? null,
      argv,
      reload:
        o.server !== null
          ? null
          : () => {
              const r = load(o);
              if (!r.ok) return { ok: false, errors: r.errors };
              const unbindable = sourceProblems(r.services);
              return unbindable.length === 0 ? { ok: true, services: r.services } : { ok: false, errors: unbindable };
            },
    });
  }
  io.stderr(
    o.server !== null
      ? 'tcpproxy: standard input is not a connection (inetd mode): use -b [interface:]port to listen\n'
      : `tcpproxy:${config?.file ?? DEFAULT_CONFIG}: "standalone no" and standard input is not a connection: use -s\n`,
  );
  return EXIT_USAGE;
}

/**
 * Detached, the daemon logs to syslog only: when /dev/log takes no
 * connection and a person is watching (stderr is a terminal), say so
 * before detaching. The daemon still starts; its lines are dropped until a
 * syslog daemon appears (native/syslog.cc retries).
 */
function syslogWarning(): string | null {
  if (!process.stderr.isTTY) return null;
  const errno = native().syslogProbe();
  if (errno === 0) return null;
  return (
    `tcpproxy: warning: no syslog at /dev/log (connect ${errnoName(errno)}): detached, tcpproxy logs nothing until one listens there; ` +
    'start a syslog daemon (rsyslog, systemd-journald) or run tcpproxy in the foreground with -D'
  );
}

/** The control socket: -S over the file's `control` over the default; null: none. */
function controlPath(option: string | null, file: string | null): { path: string; explicit: boolean } | null {
  const named = option ?? file;
  if (named === 'none') return null;
  if (named !== null) return { path: named, explicit: true };
  const p = controlMode().defaultControlPath(runningAsRoot());
  return p === null ? null : { path: p, explicit: false };
}

/**
 * -Z / -ZZ: asks the running daemon through its control socket (-S, else
 * the config file's `control` when there is a file, else the default).
 */
async function showStatus(o: CliOptions, io: Io): Promise<number> {
  let file: string | null = null;
  if (o.control === null && (o.configFile !== null || fs.existsSync(DEFAULT_CONFIG))) {
    const loaded = load(o);
    if (!loaded.ok) {
      for (const e of loaded.errors) io.stderr(`${e}\n`);
      return EXIT_USAGE;
    }
    file = loaded.config?.control ?? null;
  }
  const where = controlPath(o.control, file);
  if (where === null) {
    io.stderr('tcpproxy: no control socket: "control none", or no runtime directory ($XDG_RUNTIME_DIR) for one; name it with -S\n');
    return EXIT_FAILURE;
  }
  const r = await controlMode().queryControl(where.path, { status: true, sessions: o.status === 2 });
  if (!r.ok) {
    io.stderr(`tcpproxy: ${r.error}\n`);
    return EXIT_FAILURE;
  }
  io.stdout(o.json ? `${JSON.stringify(r.answer, null, 2)}\n` : statusMode().formatStatus(r.answer as StatusMode.DaemonStatus));
  return EXIT_OK;
}

/** `workers` as a number: `auto` is one per CPU the process may use. */
function workerCount(w: number | 'auto' | null): number {
  if (w === 'auto') return Math.max(1, availableParallelism());
  return w ?? 1;
}
