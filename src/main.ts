/**
 * The program: command line → service table → mode (list, standalone,
 * inetd). Returns the exit status; only src/tcpproxy.ts touches process.exit.
 */
import type * as net from 'node:net';
import { parseArgs, DEFAULT_CONFIG, HELP, USAGE, type CliOptions } from './cli';
import { readConfig, type CommandLineDefaults, type Config } from './config';
import { formatConfigError, StartError } from './errors';
import { EXIT_OK, EXIT_USAGE } from './exit-codes';
import { selectEngine } from './forward';
import { boundAddress, formatListen, listenAll } from './listener';
import { createLogger } from './log';
import { DEFAULT_PREFIX, DEFAULT_TIMEOUT_SEC, describeTarget, listenAddresses, lookupService, type Service } from './service';
import { etcServices } from './services-db';
import { runSession } from './session';
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
  if (o.acp !== null) return 'option -a (access control) is not implemented yet';
  if (o.pidfile !== null) return 'option -p (pidfile) is not implemented yet';
  if (o.writefile !== null) return 'option -w (transcripts) is not implemented yet';
  if (o.clearEnv) return 'option -y (request handlers) is not implemented yet';
  if (o.prefix !== null) return 'option -v (request handlers) is not implemented yet';
  if (o.server?.kind === 'exec') return 'request handlers (a server starting with "/" or ".") are not implemented yet';
  return null;
}

function serviceNotImplemented(services: readonly Service[]): string | null {
  for (const s of services) {
    const at = `tcpproxy:${s.origin.file}:${s.origin.line}`;
    if (s.target.kind === 'exec') return `${at}: request handlers ("exec") are not implemented yet`;
    if (s.acp !== null) return `${at}: access control ("acp") is not implemented yet`;
    if (s.writefile !== null) return `${at}: transcripts ("writefile") are not implemented yet`;
  }
  return null;
}

/** The one service of `-b [iface:]port server`. */
function commandLineService(o: CliOptions): Service {
  if (o.server === null || o.bind === null) throw new Error('commandLineService without -b and server');
  return {
    port: o.bind.port,
    iface: o.bind.iface,
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

async function standalone(configured: readonly Service[], logname: string): Promise<number> {
  const log = createLogger({ ident: logname, stderr: true, syslog: true });
  const engine = selectEngine((m) => log.warn(m));
  let services = configured;
  let nextId = 1;
  const onConnection = (client: net.Socket): void => {
    const id = nextId++;
    const service = lookupService(services, client.localAddress ?? '', client.localPort ?? 0);
    if (service === null) {
      log.error(`connection ${id}: no service for ${client.localAddress ?? '?'} port ${client.localPort ?? 0}`);
      client.destroy();
      return;
    }
    void runSession({ id, client: engine.hold(client), service, engine, log });
  };
  const wanted = listenAddresses(configured);
  let servers: net.Server[];
  try {
    servers = await listenAll(wanted, onConnection);
  } catch (err) {
    if (err instanceof StartError) {
      log.error(err.message);
      return err.exitCode;
    }
    throw err;
  }
  const bound = servers.map((s, i) => boundAddress(s, wanted[i] ?? { iface: null, port: 0 }));
  for (const b of bound) log.info(`listening on ${formatListen(b)}`);
  // `-b ...:0` asks for an ephemeral port: the service takes the port the kernel chose.
  services = services.map((s) => {
    if (s.port !== 0) return s;
    const b = bound.find((x) => x.iface === s.iface);
    return b ? { ...s, port: b.port } : s;
  });
  log.info(`tcpproxy ${VERSION} serving ${services.length} service(s) with the ${engine.name} engine`);
  return new Promise((resolve) => {
    const stop = (sig: string): void => {
      log.info(`${sig}: terminating`);
      for (const s of servers) s.close();
      resolve(EXIT_OK);
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
    if (o.bind === null) {
      io.stderr('tcpproxy: inetd mode (a server argument without -b) is not implemented yet\n');
      return EXIT_USAGE;
    }
    services = [commandLineService(o)];
  } else {
    const file = o.configFile ?? DEFAULT_CONFIG;
    const r = readConfig(file, etcServices, cliDefaults(o));
    if (!r.ok) {
      for (const e of r.errors) io.stderr(`${formatConfigError(e)}\n`);
      io.stderr(`tcpproxy:${file}: ${r.errors.length} error${r.errors.length === 1 ? '' : 's'}\n`);
      return EXIT_USAGE;
    }
    config = r.config;
    services = config.services;
    const notYet = serviceNotImplemented(services);
    if (notYet !== null) {
      io.stderr(`${notYet}\n`);
      return EXIT_USAGE;
    }
  }

  if (o.list > 0) {
    io.stdout(listing(services, o.list === 1 ? 1 : 2));
    return EXIT_OK;
  }

  const isStandalone = o.standalone || (config !== null && config.standalone !== false);
  if (!isStandalone) {
    io.stderr('tcpproxy: inetd mode is not implemented yet\n');
    return EXIT_USAGE;
  }
  const logname = o.logname ?? config?.logname ?? 'tcpproxy';
  return standalone(services, logname);
}

