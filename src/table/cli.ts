/**
 * The command line of tcpproxy(1), parsed the way the original's option loop
 * did (classic getopt). Pure: no I/O, no process state; a port name is looked
 * up through the resolver given. Never throws on any argv (an exception from
 * the resolver itself is passed on).
 *
 * Rules, beyond plain getopt:
 * - `-p` counts over the whole line: the first means DEFAULT_PIDFILE, the
 *   second takes the pidfile name (`-p -p NAME`, `-pp NAME`, `-ppNAME`), a
 *   third is an error.
 * - `-z` once lists the ports, twice (or more) the service table.
 * - `-b` implies `-s`, needs a server argument and may be given once; it
 *   accepts the literal port `0` (a port the kernel chooses).
 * - Any other option given twice: the last value wins.
 * - `--help` / `--version` end parsing where they stand: errors before them
 *   are reported, the words after them are ignored, and so is the check that
 *   `-b` has a server argument.
 * - An option argument may not be empty (`-a ''`): that is almost always an
 *   unset shell variable.
 * - The words after the options are the server arguments: a program and its
 *   arguments, or one or more `host[:port]` forming one group of servers. A
 *   later word starting with `-` is an error (options stop at the first).
 */
import { escapeText, quote } from '../sys/text';
import { parseBind, splitHostPort, type BindAddress, type Parsed, type PortResolver } from './address';
import { checkTimeout, MAX_TIMEOUT_SEC, parseControl, parsePrefix } from './directives';
import { parseTargetWords, type Target } from './service';

export const DEFAULT_PIDFILE = '/var/run/tcpproxy.pid';
export const DEFAULT_CONFIG = '/etc/tcpproxy.conf';

/** The largest `-t` (the same limit as `timeout`). */
export { MAX_TIMEOUT_SEC };

export interface CliOptions {
  /** `-a program`: the access control program. */
  readonly acp: string | null;
  /** `-b [interface:]port`; implies standalone. Port 0: one the kernel chooses. */
  readonly bind: BindAddress | null;
  /** `-f file`, or its alias `-c file`. */
  readonly configFile: string | null;
  /** `-l name`: the syslog ident. */
  readonly logname: string | null;
  /** `-p` → DEFAULT_PIDFILE; `-p -p NAME` / `-pp NAME` / `-ppNAME` → NAME. */
  readonly pidfile: string | null;
  /** `-s`, or implied by `-b`. */
  readonly standalone: boolean;
  /** `-t secs`: idle timeout, 0 = none. */
  readonly timeoutSec: number | null;
  /** `-v prefix`: prefix of the handler's environment variables. */
  readonly prefix: string | null;
  /** `-w base`: transcript base name. */
  readonly writefile: string | null;
  /** `-y`: start handlers from an empty environment. */
  readonly clearEnv: boolean;
  /** `-z` → 1 (ports), `-zz` → 2 (service table). */
  readonly list: 0 | 1 | 2;
  /** `-D`: stay in the foreground and log to stderr too. */
  readonly foreground: boolean;
  /** `-S path`: the control socket (or `none`), over the config file's `control`. */
  readonly control: string | null;
  /** `-Z` → 1 (the running daemon's status), `-ZZ` → 2 (and its live sessions). */
  readonly status: 0 | 1 | 2;
  /** `--json`: -Z prints JSON. */
  readonly json: boolean;
  /** The server arguments: one or more `host[:port]` (a group), or a program and its arguments. */
  readonly server: Target | null;
  /** `--help` */
  readonly help: boolean;
  /** `--version` */
  readonly version: boolean;
}

export type CliResult = { ok: true; options: CliOptions } | { ok: false; error: string };

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

interface OptionSpec {
  readonly takesArg: boolean;
  /** Applies the option; returns an error message or null. */
  readonly apply: (o: Mutable<CliOptions>, arg: string, resolve: PortResolver) => string | null;
  /** Synopsis of the argument and the help line. */
  readonly argName?: string;
  readonly help: string;
}

function nonEmpty(letter: string, arg: string): string | null {
  return arg === '' ? `option -${letter}: empty argument` : null;
}

type Apply = OptionSpec['apply'];

/** An option whose argument is kept as written, if not empty. */
function setText(letter: string, key: 'acp' | 'configFile' | 'logname' | 'writefile'): Apply {
  return (o, arg) => {
    const err = nonEmpty(letter, arg);
    if (err === null) o[key] = arg;
    return err;
  };
}

function setFlag(key: 'foreground' | 'standalone' | 'clearEnv'): Apply {
  return (o) => {
    o[key] = true;
    return null;
  };
}

/** `-b`: parseBind, except that the literal port `0` is accepted. */
function parseBindOption(text: string, resolve: PortResolver): Parsed<BindAddress> {
  const hp = splitHostPort(text);
  const portText = hp === null ? null : (hp.port ?? hp.host);
  if (portText === '0') {
    // The port is the last character of the text: check the rest with a valid port in its place.
    const alt = parseBind(`${text.slice(0, -1)}1`, resolve);
    if (alt.ok) return { ok: true, value: { iface: alt.value.iface, port: 0 } };
  }
  return parseBind(text, resolve);
}

const SPECS: ReadonlyMap<string, OptionSpec> = new Map<string, OptionSpec>([
  ['a', {
    takesArg: true,
    argName: 'program',
    help: 'ask program to grant (exit 0) or deny each connection',
    apply: setText('a', 'acp'),
  }],
  ['b', {
    takesArg: true,
    argName: '[interface:]port',
    help: 'listen on port, all interfaces if none given; implies -s',
    apply: (o, arg, resolve) => {
      if (o.bind !== null) return '-b given more than once';
      const r = parseBindOption(arg, resolve);
      if (!r.ok) return `option -b: ${r.error}`;
      o.bind = r.value;
      o.standalone = true;
      return null;
    },
  }],
  ['c', {
    takesArg: true,
    argName: 'config',
    help: 'the same as -f',
    apply: setText('c', 'configFile'),
  }],
  ['D', {
    takesArg: false,
    help: 'stay in the foreground, log to stderr as well',
    apply: setFlag('foreground'),
  }],
  ['f', {
    takesArg: true,
    argName: 'config',
    help: `read config instead of ${DEFAULT_CONFIG}`,
    apply: setText('f', 'configFile'),
  }],
  ['l', {
    takesArg: true,
    argName: 'logname',
    help: 'log to syslog under the name logname',
    apply: setText('l', 'logname'),
  }],
  ['p', {
    // The second -p takes an argument; parseArgs handles the count.
    takesArg: false,
    argName: '[-p pidfile]',
    help: `write the pid to ${DEFAULT_PIDFILE}, or to pidfile`,
    apply: (o) => {
      o.pidfile = DEFAULT_PIDFILE;
      return null;
    },
  }],
  ['s', {
    takesArg: false,
    help: 'standalone: listen on the configured ports',
    apply: setFlag('standalone'),
  }],
  ['S', {
    takesArg: true,
    argName: 'socket',
    help: 'the control socket (an absolute path, or none)',
    apply: (o, arg) => {
      const r = parseControl(arg);
      if (!r.ok) return `option -S: ${r.error.replace(/^control/, 'the socket')}`;
      o.control = r.value;
      return null;
    },
  }],
  ['t', {
    takesArg: true,
    argName: 'timeout',
    help: 'idle timeout in seconds (default 60, 0 = none)',
    apply: (o, arg) => {
      const r = checkTimeout(arg);
      if (!r.ok && r.why === 'not-a-number') return `option -t needs a number of seconds, not ${quote(arg)}`;
      if (!r.ok) return `option -t: timeout ${arg} is out of range (0-${MAX_TIMEOUT_SEC})`;
      o.timeoutSec = r.value;
      return null;
    },
  }],
  ['v', {
    takesArg: true,
    argName: 'prefix',
    help: 'handler variables prefixPORT, ... not PROXY_PORT, ...',
    apply: (o, arg) => {
      const r = parsePrefix(arg);
      if (!r.ok) return `option -v: ${r.error}`;
      o.prefix = r.value;
      return null;
    },
  }],
  ['w', {
    takesArg: true,
    argName: 'writefile',
    help: 'write each connection\'s traffic to writefile.N.log',
    apply: setText('w', 'writefile'),
  }],
  ['y', {
    takesArg: false,
    help: 'start handlers and the acp with an empty environment',
    apply: setFlag('clearEnv'),
  }],
  ['z', {
    takesArg: false,
    help: 'list the ports and exit; -zz: the service table',
    apply: (o) => {
      o.list = o.list === 0 ? 1 : 2;
      return null;
    },
  }],
  ['Z', {
    takesArg: false,
    help: 'show what the running daemon does; -ZZ: its sessions too',
    apply: (o) => {
      o.status = o.status === 0 ? 1 : 2;
      return null;
    },
  }],
]);

/** Letters of all options, in the order of the help text. */
export const OPTION_LETTERS: readonly string[] = [...SPECS.keys()];

export const USAGE =
  'usage: tcpproxy [-DsyzZ] [-a program] [-b [interface:]port] [-f config] [-l logname] ' +
  '[-p [-p pidfile]] [-S socket] [-t timeout] [-v prefix] [-w writefile] [--json] [server ...]';

function helpLine(letter: string, spec: OptionSpec): string {
  const head = spec.argName === undefined ? `-${letter}` : `-${letter} ${spec.argName}`;
  return `  ${head.padEnd(20)}${spec.help}`;
}

export const HELP: string = [
  USAGE,
  '',
  'Forward TCP connections to server (host[:port]; several form a group, tried',
  'in order), or hand them to a program (server starting with / or .).',
  'Without server, read the config file.',
  '',
  ...[...SPECS].map(([letter, spec]) => helpLine(letter, spec)),
  `  ${'--json'.padEnd(20)}-Z and -ZZ print JSON`,
  `  ${'--help'.padEnd(20)}print this help and exit`,
  `  ${'--version'.padEnd(20)}print the version and exit`,
  '',
].join('\n');

function initialOptions(): Mutable<CliOptions> {
  return {
    acp: null,
    bind: null,
    configFile: null,
    logname: null,
    pidfile: null,
    standalone: false,
    timeoutSec: null,
    prefix: null,
    writefile: null,
    clearEnv: false,
    list: 0,
    foreground: false,
    control: null,
    status: 0,
    json: false,
    server: null,
    help: false,
    version: false,
  };
}

/** Parses the arguments after the program name. */
export function parseArgs(argv: readonly string[], resolve: PortResolver): CliResult {
  const o = initialOptions();
  const fail = (error: string): CliResult => ({ ok: false, error });
  let pCount = 0;
  let i = 0;

  options: for (; i < argv.length; i++) {
    const word = argv[i] ?? '';
    if (word === '--') {
      i++;
      break;
    }
    if (word === '--json') {
      o.json = true;
      continue;
    }
    if (word.startsWith('--')) {
      if (word === '--help') o.help = true;
      else if (word === '--version') o.version = true;
      else return fail(`unknown option ${quote(word)}`);
      return { ok: true, options: o };
    }
    if (!word.startsWith('-') || word === '-') break;

    // Code points, so that an unknown non-ASCII letter is reported whole.
    const letters = Array.from(word.slice(1));
    for (let j = 0; j < letters.length; j++) {
      const letter = letters[j] ?? '';
      const spec = SPECS.get(letter);
      if (spec === undefined) return fail(`unknown option -${escapeText(letter)}`);
      const takesArg = spec.takesArg || (letter === 'p' && pCount === 1);
      if (letter === 'p' && ++pCount > 2) return fail('-p given more than twice');
      if (!takesArg) {
        const err = spec.apply(o, '', resolve);
        if (err !== null) return fail(err);
        continue;
      }
      let arg: string;
      const rest = letters.slice(j + 1).join('');
      if (rest !== '') {
        arg = rest;
      } else if (i + 1 < argv.length) {
        arg = argv[++i] ?? '';
      } else {
        return fail(`option -${letter} needs an argument`);
      }
      if (letter === 'p') {
        const err = nonEmpty('p', arg);
        if (err !== null) return fail(err);
        o.pidfile = arg;
      } else {
        const err = spec.apply(o, arg, resolve);
        if (err !== null) return fail(err);
      }
      continue options;
    }
  }

  const positional = argv.slice(i);
  // A handler takes the words after it as its arguments (inetd.conf cannot quote);
  // host[:port] words form one group of servers. Options stop at the first
  // of them: a later word that looks like one is a mistake, not a host.
  const isProgram = /^[/.]/.test(positional[0] ?? '');
  const stray = isProgram ? undefined : positional.slice(1).find((w) => w.startsWith('-'));
  if (stray !== undefined) return fail(`unexpected argument ${quote(stray)}`);
  if (positional.length > 0) {
    const t = parseTargetWords(positional, resolve);
    if (!t.ok) return fail(`server argument: ${t.errors[0] ?? ''}`);
    o.server = t.value;
  }
  if (o.bind !== null && o.server === null) return fail('option -b needs a server argument');
  if (o.json && o.status === 0) return fail('--json goes with -Z or -ZZ');
  return { ok: true, options: o };
}
