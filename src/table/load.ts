/**
 * The service table of a run: from the command line (`[-b ...] server`) or
 * from the config file, checked, with program paths resolved. Reads the
 * config file and /etc/services, nothing else.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatConfigError, type ConfigError } from '../sys/errors';
import { DEFAULT_CONFIG, type CliOptions } from './cli';
import { parseConfig, readConfigFile, type Config } from './config';
import { cliDefaults } from './directives';
import { checkProgramLines, PROGRAM_PATH, resolvePrograms } from './programs';
import { DEFAULT_BOUNDS, DEFAULT_LOGLEVEL, DEFAULT_PREFIX, DEFAULT_PROXYING, DEFAULT_SANDBOX, DEFAULT_TIMEOUT_SEC, NO_ACCESS_RULES, splitCommand, type Service } from './service';
import { etcServices } from './services-db';

/** The origin of what the command line gives: `tcpproxy:command line: ...` in messages. */
const COMMAND_LINE = 'command line';

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
    access: NO_ACCESS_RULES,
    sandbox: DEFAULT_SANDBOX,
    bounds: DEFAULT_BOUNDS,
    proxy: DEFAULT_PROXYING,
    loglevel: DEFAULT_LOGLEVEL,
    origin: { file: COMMAND_LINE, line: 0 },
  };
}

export type Loaded =
  | { readonly ok: true; readonly services: readonly Service[]; readonly config: Config | null }
  | { readonly ok: false; readonly errors: readonly string[] };

/**
 * The service table from the command line or the config file, checked and
 * with programs resolved against `cwd` (bare names in PROGRAM_PATH).
 * `asRoot`: refuse a config file someone other than root could have written
 * or replaced (the file, its directories, the links on its path:
 * readConfigFile `root`).
 */
export function loadServices(o: CliOptions, asRoot: boolean, cwd: string): Loaded {
  let services: readonly Service[];
  let config: Config | null = null;
  if (o.server !== null) {
    services = [commandLineService(o)];
  } else {
    const file = o.configFile ?? DEFAULT_CONFIG;
    // Read once, from the descriptor that was checked: the text parsed is the text checked.
    const read = readConfigFile(file, asRoot ? 'root' : 'caller');
    if (!read.ok && read.unsafe) return { ok: false, errors: [`tcpproxy:${file}: ${read.message}`] };
    // No -f and no /etc/tcpproxy.conf: most likely a first run, so say what to do instead.
    const message = !read.ok && o.configFile === null && read.code === 'ENOENT' ? `${read.message}: ${noDefaultConfigHint()}` : read.ok ? '' : read.message;
    const r = read.ok ? parseConfig(read.text, file, etcServices, cliDefaults(o)) : { ok: false as const, errors: [{ file, line: 0, message }], programs: [] };
    if (!r.ok) {
      // The programs too, in the same run: the -a program first (the command line), then by line.
      const cliAcp = o.acp === null ? [] : checkProgramLines([{ line: 0, argv: splitCommand(o.acp), acp: true }], COMMAND_LINE, cwd, PROGRAM_PATH);
      const inFile = [...r.errors, ...checkProgramLines(r.programs, file, cwd, PROGRAM_PATH)].sort((a, b) => a.line - b.line);
      return { ok: false, errors: summarized(file, [...cliAcp, ...inFile]) };
    }
    config = r.config;
    services = config.services;
  }
  const programs = resolvePrograms(services, cwd, PROGRAM_PATH);
  if (programs.errors.length > 0) {
    const errors = programs.errors.map(formatConfigError);
    return { ok: false, errors: config === null ? errors : summarized(config.file, programs.errors) };
  }
  return { ok: true, services: programs.services, config };
}

/**
 * The sample configuration shipped in the package (examples/tcpproxy.conf),
 * by its absolute path where it is installed, else by its name there.
 */
export function exampleConfig(): string {
  // src/table/load.ts (ts-jest) sits two levels below the package root, dist/src/table/load.js three.
  const files = [path.join(__dirname, '..', '..'), path.join(__dirname, '..', '..', '..')].map((r) => path.join(r, 'examples', 'tcpproxy.conf'));
  return files.find((f) => fs.existsSync(f)) ?? 'examples/tcpproxy.conf';
}

/** What to do when there is no config file at the default path and none was named. */
export function noDefaultConfigHint(): string {
  return `give a config with -f FILE, forward one port with -b PORT SERVER, or start from ${exampleConfig()}`;
}

/** The errors as printed, then the count: `tcpproxy:FILE: N errors`. */
function summarized(file: string, errors: readonly ConfigError[]): string[] {
  const n = errors.length;
  return [...errors.map(formatConfigError), `tcpproxy:${file}: ${n} error${n === 1 ? '' : 's'}`];
}
