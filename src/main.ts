/**
 * The program: command line → service table → mode (list, standalone,
 * inetd). Returns the exit status; only src/tcpproxy.ts touches process.exit.
 */
import * as fs from 'node:fs';
import { parseArgs, DEFAULT_CONFIG, HELP, USAGE, type CliOptions } from './cli';
import { configFileProblem, readConfig, type CommandLineDefaults, type Config } from './config';
import { detach, takeReadyFd } from './daemon';
import { formatConfigError } from './errors';
import { EXIT_OK, EXIT_USAGE } from './exit-codes';
import { runningAsRoot } from './identity';
import { serveInetd, stdinIsConnection } from './inetd';
import { createLogger } from './log';
import { loadNative } from './native';
import { DEFAULT_PREFIX, DEFAULT_TIMEOUT_SEC, describeTarget, type Service } from './service';
import { etcServices } from './services-db';
import { resolvePrograms } from './programs';
import { standalone } from './standalone';
import { VERSION } from './version';

export interface Io {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

const processIo: Io = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
};

/** The one service of `[-b [iface:]port] server`; without -b (inetd mode) port 0 until the socket tells. */
function commandLineService(o: CliOptions): Service {
  if (o.server === null) throw new Error('commandLineService without a server');
  return {
    port: o.bind?.port ?? 0,
    iface: o.bind?.iface ?? null,
    target: o.server,
    acp: o.acp,
    timeoutSec: o.timeoutSec ?? DEFAULT_TIMEOUT_SEC,
    prefix: o.prefix ?? DEFAULT_PREFIX,
    writefile: o.writefile,
    uid: null,
    gid: null,
    origin: { file: 'command line', line: 0 },
  };
}

function cliDefaults(o: CliOptions): CommandLineDefaults {
  return {
    ...(o.timeoutSec === null ? {} : { timeoutSec: o.timeoutSec }),
    ...(o.acp === null ? {} : { acp: o.acp }),
    ...(o.prefix === null ? {} : { prefix: o.prefix }),
    ...(o.writefile === null ? {} : { writefile: o.writefile }),
  };
}

/** `-z`: the ports, one a line. `-zz`: the service table. */
function listing(services: readonly Service[], level: 1 | 2): string {
  if (level === 1) return [...new Set(services.map((s) => s.port))].map((p) => `${p}\n`).join('');
  return services
    .map((s) =>
      [
        `port=${s.port}`,
        `interface=${s.iface ?? '*'}`,
        describeTarget(s.target).replace(' ', '='),
        `uid=${s.uid ?? '-'}`,
        `gid=${s.gid ?? '-'}`,
        `timeout=${s.timeoutSec}`,
        `acp=${s.acp ?? '-'}`,
        `writefile=${s.writefile ?? '-'}`,
        `prefix=${s.prefix}`,
      ].join('\t') + '\n',
    )
    .join('');
}

type Loaded =
  | { readonly ok: true; readonly services: readonly Service[]; readonly config: Config | null }
  | { readonly ok: false; readonly errors: readonly string[] };

/** The service table from the command line or the config file, checked and with programs resolved. */
function loadServices(o: CliOptions): Loaded {
  let services: readonly Service[];
  let config: Config | null = null;
  if (o.server !== null) {
    services = [commandLineService(o)];
  } else {
    const file = o.configFile ?? DEFAULT_CONFIG;
    const unsafe = runningAsRoot() ? configFileProblem(file) : null;
    if (unsafe !== null) return { ok: false, errors: [`tcpproxy:${file}: ${unsafe}`] };
    const r = readConfig(file, etcServices, cliDefaults(o));
    if (!r.ok) {
      const n = r.errors.length;
      return { ok: false, errors: [...r.errors.map(formatConfigError), `tcpproxy:${file}: ${n} error${n === 1 ? '' : 's'}`] };
    }
    config = r.config;
    services = config.services;
  }
  const programs = resolvePrograms(services, process.cwd(), process.env['PATH'] ?? '');
  if (programs.errors.length > 0) return { ok: false, errors: programs.errors.map(formatConfigError) };
  return { ok: true, services: programs.services, config };
}

/**
 * Under inetd, fds 0, 1 and 2 are all the client's socket: before anything
 * can be printed, fd 2 goes to /dev/null and messages go to syslog instead.
 */
function inetdSafeIo(io: Io): Io {
  const addon = loadNative().addon;
  if (!addon || !stdinIsConnection(addon) || addon.sockName(2) === null) return io;
  const devnull = fs.openSync('/dev/null', 'r+');
  addon.dupOnto(devnull, 2);
  fs.closeSync(devnull);
  const log = createLogger({ ident: 'tcpproxy', stderr: false, syslog: true });
  const toLog = (text: string): void => {
    for (const line of text.split('\n')) if (line !== '') log.error(line.replace(/^tcpproxy: /, ''));
  };
  return { stdout: toLog, stderr: toLog };
}

export async function main(argv: readonly string[], ioGiven: Io = processIo): Promise<number> {
  // Whatever our parent leaked to us (fds >= 3 without close-on-exec) must not reach workers or handlers.
  loadNative().addon?.cloexecFrom(3);
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
  if (o.server !== null && o.standalone && o.bind === null) {
    io.stderr(`tcpproxy: option -s with a server argument needs -b [interface:]port\n${USAGE}\n`);
    return EXIT_USAGE;
  }
  const loaded = loadServices(o);
  if (!loaded.ok) {
    for (const e of loaded.errors) io.stderr(`${e}\n`);
    return EXIT_USAGE;
  }
  const { services, config } = loaded;

  if (o.list > 0) {
    io.stdout(listing(services, o.list === 1 ? 1 : 2));
    return EXIT_OK;
  }

  const logname = o.logname ?? config?.logname ?? 'tcpproxy';
  // A connection on fd 0 means inetd mode, unless -s or -b asks for standalone;
  // without one, a config file keeps the original's standalone default.
  const addon = loadNative().addon;
  if (!o.standalone && stdinIsConnection(addon) && addon) {
    const local = addon.sockName(0)?.local.port ?? 0;
    const inetdServices = services.map((s) => (s.port === 0 ? { ...s, port: local } : s));
    return serveInetd(addon, inetdServices, { logname, clearEnv: o.clearEnv });
  }
  if (o.standalone || (config !== null && config.standalone !== false)) {
    const readyFd = takeReadyFd();
    // Sockets passed by a service manager are ours only in this process (LISTEN_PID): no detaching.
    const activated = Number(process.env['LISTEN_PID']) === process.pid;
    if (!o.foreground && !activated && readyFd === null) return detach(argv, io.stderr);
    return standalone({
      services,
      logname,
      clearEnv: o.clearEnv,
      foreground: o.foreground,
      pidfile: o.pidfile,
      readyFd,
      reload:
        o.server !== null
          ? null
          : () => {
              const r = loadServices(o);
              return r.ok ? { ok: true, services: r.services } : { ok: false, errors: r.errors };
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

