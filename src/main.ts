/**
 * The program: command line → service table → mode (list, standalone,
 * inetd). Returns the exit status; only src/tcpproxy.ts touches process.exit.
 */
import type * as net from 'node:net';
import { parseArgs, DEFAULT_CONFIG, HELP, USAGE, type CliOptions } from './cli';
import { configFileProblem, readConfig, type CommandLineDefaults, type Config } from './config';
import { formatConfigError, StartError } from './errors';
import { EXIT_OK, EXIT_USAGE } from './exit-codes';
import { runningAsRoot } from './identity';
import { serveInetd, stdinIsConnection } from './inetd';
import { formatHostPort } from './address';
import { boundAddress, formatListen, listenAll, takeInheritedListeners } from './listener';
import { createLogger } from './log';
import { loadNative } from './native';
import { DEFAULT_PREFIX, DEFAULT_TIMEOUT_SEC, describeTarget, listenAddresses, lookupServiceIndex, type Service } from './service';
import { etcServices } from './services-db';
import { resolvePrograms } from './programs';
import { Supervisor } from './supervisor';
import { VERSION } from './version';

export interface Io {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

const processIo: Io = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
};

/** Options whose behaviour has not landed yet: refused, never silently ignored. */
function notImplemented(o: CliOptions): string | null {
  if (o.pidfile !== null) return 'option -p (pidfile) is not implemented yet';
  if (o.writefile !== null) return 'option -w (transcripts) is not implemented yet';
  return null;
}

function serviceNotImplemented(services: readonly Service[]): string | null {
  for (const s of services) {
    if (s.writefile !== null) return `tcpproxy:${s.origin.file}:${s.origin.line}: transcripts ("writefile") are not implemented yet`;
  }
  return null;
}

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

async function standalone(configured: readonly Service[], o: CliOptions, logname: string): Promise<number> {
  const log = createLogger({ ident: logname, stderr: true, syslog: true });
  const asRoot = runningAsRoot();
  if (!asRoot && configured.some((s) => s.uid !== null || s.gid !== null)) {
    log.warn(`warning: not started as root: "uid" and "gid" are ignored, every service runs as uid ${process.getuid?.()}`);
  }
  let supervisor: Supervisor | null = null;
  let services = configured;
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
  const wanted = listenAddresses(configured);
  const addon = loadNative().addon;
  const inherited = addon ? takeInheritedListeners((fd) => addon.sockName(fd)) : [];
  for (const l of inherited) log.info(`socket activation: fd ${l.fd} listening on ${formatHostPort(l.address, l.port)}`);
  let servers: net.Server[];
  try {
    servers = await listenAll(wanted, onConnection, inherited);
  } catch (err) {
    if (err instanceof StartError) {
      log.error(err.message);
      return err.exitCode;
    }
    throw err;
  }
  const bound = servers.map((s, i) => boundAddress(s, wanted[i] ?? { iface: null, port: 0 }));
  // `-b ...:0` asks for an ephemeral port: the service takes the port the kernel chose.
  services = services.map((s) => {
    if (s.port !== 0) return s;
    const b = bound.find((x) => x.iface === s.iface);
    return b ? { ...s, port: b.port } : s;
  });
  supervisor = new Supervisor({ services, clearEnv: o.clearEnv, logname, stderr: true, asRoot, log });
  supervisor.start();
  for (const b of bound) log.info(`listening on ${formatListen(b)}`);
  log.info(`tcpproxy ${VERSION} serving ${services.length} service(s)`);
  const running = supervisor;
  return new Promise((resolve) => {
    const stop = (sig: string): void => {
      log.info(`${sig}: terminating`);
      for (const s of servers) s.close();
      void running.stop().then(() => resolve(EXIT_OK));
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

export async function main(argv: readonly string[], io: Io = processIo): Promise<number> {
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
  const refused = notImplemented(o);
  if (refused !== null) {
    io.stderr(`tcpproxy: ${refused}\n`);
    return EXIT_USAGE;
  }

  let services: readonly Service[];
  let config: Config | null = null;
  if (o.server !== null) {
    if (o.standalone && o.bind === null) {
      io.stderr(`tcpproxy: option -s with a server argument needs -b [interface:]port\n${USAGE}\n`);
      return EXIT_USAGE;
    }
    services = [commandLineService(o)];
  } else {
    const file = o.configFile ?? DEFAULT_CONFIG;
    const unsafe = runningAsRoot() ? configFileProblem(file) : null;
    if (unsafe !== null) {
      io.stderr(`tcpproxy:${file}: ${unsafe}\n`);
      return EXIT_USAGE;
    }
    const r = readConfig(file, etcServices, cliDefaults(o));
    if (!r.ok) {
      for (const e of r.errors) io.stderr(`${formatConfigError(e)}\n`);
      io.stderr(`tcpproxy:${file}: ${r.errors.length} error${r.errors.length === 1 ? '' : 's'}\n`);
      return EXIT_USAGE;
    }
    config = r.config;
    services = config.services;
  }
  const notYet = serviceNotImplemented(services);
  if (notYet !== null) {
    io.stderr(`${notYet}\n`);
    return EXIT_USAGE;
  }
  const programs = resolvePrograms(services, process.cwd(), process.env['PATH'] ?? '');
  if (programs.errors.length > 0) {
    for (const e of programs.errors) io.stderr(`${formatConfigError(e)}\n`);
    return EXIT_USAGE;
  }
  services = programs.services;

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
  if (o.standalone || (config !== null && config.standalone !== false)) return standalone(services, o, logname);
  io.stderr(
    o.server !== null
      ? 'tcpproxy: standard input is not a connection (inetd mode): use -b [interface:]port to listen\n'
      : `tcpproxy:${config?.file ?? DEFAULT_CONFIG}: "standalone no" and standard input is not a connection: use -s\n`,
  );
  return EXIT_USAGE;
}

