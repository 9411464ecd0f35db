/**
 * The service table of a run: from the command line (`[-b ...] server`) or
 * from the config file, checked, with program paths resolved. Reads the
 * config file and /etc/services, nothing else.
 */
import { formatConfigError } from '../sys/errors';
import { DEFAULT_CONFIG, type CliOptions } from './cli';
import { parseConfig, readConfigFile, type Config } from './config';
import { cliDefaults } from './directives';
import { PROGRAM_PATH, resolvePrograms } from './programs';
import { DEFAULT_BOUNDS, DEFAULT_PREFIX, DEFAULT_PROXYING, DEFAULT_SANDBOX, DEFAULT_TIMEOUT_SEC, NO_ACCESS_RULES, type Service } from './service';
import { etcServices } from './services-db';

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
    origin: { file: 'command line', line: 0 },
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
    const r = read.ok ? parseConfig(read.text, file, etcServices, cliDefaults(o)) : { ok: false as const, errors: [{ file, line: 0, message: read.message }] };
    if (!r.ok) {
      const n = r.errors.length;
      return { ok: false, errors: [...r.errors.map(formatConfigError), `tcpproxy:${file}: ${n} error${n === 1 ? '' : 's'}`] };
    }
    config = r.config;
    services = config.services;
  }
  const programs = resolvePrograms(services, cwd, PROGRAM_PATH);
  if (programs.errors.length > 0) return { ok: false, errors: programs.errors.map(formatConfigError) };
  return { ok: true, services: programs.services, config };
}
