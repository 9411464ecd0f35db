/**
 * The configuration file (/etc/tcpproxy.conf, `-f FILE`): a line-oriented
 * list of directives, parsed into the service table. The parser is pure and
 * never throws on what the user wrote: every problem becomes a ConfigError,
 * all of them are collected in one pass, and the caller prints them with
 * formatConfigError. The grammar is documented in man/tcpproxy.1 under
 * CONFIGURATION FILE.
 */
import * as fs from 'node:fs';
import { normalizeIp, parsePort, type PortResolver } from './address';
import { errorText, type ConfigError } from '../sys/errors';
import { DEFAULT_PREFIX, DEFAULT_TIMEOUT_SEC, parseTarget, splitCommand, type Origin, type Service, type Target } from './service';
import { quote } from '../sys/text';

export interface Config {
  readonly file: string;
  /** null: not stated in the file. */
  readonly standalone: boolean | null;
  readonly logname: string | null;
  /** In file order. */
  readonly services: readonly Service[];
}

export type ConfigResult = { ok: true; config: Config } | { ok: false; errors: ConfigError[] };

/**
 * Values from the command line (-t, -a, -v, -w): they replace the file's
 * global defaults (directives before the first port).
 */
export interface CommandLineDefaults {
  readonly timeoutSec?: number;
  readonly acp?: string;
  readonly prefix?: string;
  readonly writefile?: string;
}

/** The directive names, for the docs drift test. */
export const DIRECTIVES: readonly string[] = [
  'standalone',
  'uid',
  'gid',
  'port',
  'interface',
  'server',
  'exec',
  'acp',
  'logname',
  'setenv',
  'timeout',
  'writefile',
];

/** Longest line accepted, in characters (code points), without the line end. */
const MAX_LINE_CHARS = 4096;
/** Largest `timeout`: its value in milliseconds still fits a signed 32-bit timer. */
const MAX_TIMEOUT_SEC = 2147483;
/** Largest `uid`/`gid`: 4294967295 is (uid_t)-1, which means "unchanged" to setuid(2). */
const MAX_ID = 4294967294;

const BLANKS = /[ \t]+/;

type SettingName = 'acp' | 'timeout' | 'setenv' | 'writefile' | 'uid' | 'gid';

interface Settings {
  acp?: string;
  timeoutSec?: number;
  prefix?: string;
  writefile?: string;
  uid?: number;
  gid?: number;
}

/** Where settings go: the file's global defaults, a port block, or an interface entry. */
interface Scope {
  readonly values: Settings;
  /** Directive name → line of its first occurrence in this scope. */
  readonly seen: Map<string, number>;
}

interface Entry {
  readonly block: PortBlock;
  /** Normalised interface, or null for the port's any-interface entry. */
  readonly iface: string | null;
  /** Line of the interface line, or of the port line for the any entry. */
  readonly line: number;
  /** For messages: `port 25` or `port 25 interface 127.0.0.2`. */
  readonly label: string;
  /** False when its port or interface line was invalid: no end-of-file checks then. */
  readonly valid: boolean;
  /** The entry's own settings; the any entry shares its port's scope. */
  readonly scope: Scope;
  serverLine: number | null;
  execLine: number | null;
  target: Target | null;
}

interface PortBlock {
  /** null when the port line was invalid. */
  readonly port: number | null;
  readonly line: number;
  readonly label: string;
  readonly scope: Scope;
  /** Normalised interface → line of its interface line. */
  readonly ifaces: Map<string, number>;
  entries: number;
  any: Entry | null;
  /** The entry opened by the latest interface line, if any. */
  current: Entry | null;
}

function newScope(): Scope {
  return { values: {}, seen: new Map() };
}

/** Cuts the comment: a `#` at the start of a word (line start or after a blank). */
function stripComment(line: string): string {
  let i = line.indexOf('#');
  while (i > 0 && !isBlank(line[i - 1])) i = line.indexOf('#', i + 1);
  return i < 0 ? line : line.slice(0, i);
}

function isBlank(c: string | undefined): boolean {
  return c === ' ' || c === '\t';
}

/** Trims spaces and tabs only (a loop: an anchored regex is quadratic on long runs of blanks). */
function trimBlanks(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && isBlank(s[start])) start++;
  while (end > start && isBlank(s[end - 1])) end--;
  return s.slice(start, end);
}

/** More than MAX_LINE_CHARS code points; linear, and cheap for a very long line. */
function tooLong(line: string): boolean {
  if (line.length <= MAX_LINE_CHARS) return false;
  if (line.length > 2 * MAX_LINE_CHARS) return true;
  let n = 0;
  for (const _ of line) if (++n > MAX_LINE_CHARS) return true;
  return false;
}

/** Levenshtein distance, or Infinity when it is certainly above `max`. */
function editDistance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return Infinity;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost));
    }
    prev = cur;
  }
  return prev[b.length] ?? Infinity;
}

function suggestDirective(word: string): string | null {
  const lower = word.toLowerCase();
  let best: string | null = null;
  let bestDistance = 3;
  for (const d of DIRECTIVES) {
    const dist = editDistance(lower, d, 2);
    if (dist < bestDistance) {
      best = d;
      bestDistance = dist;
    }
  }
  return best;
}

/**
 * Parses the text of a config file. `file` is only used in errors and
 * origins. Never throws on user input; linear in the size of the text.
 */
export function parseConfig(
  text: string,
  file: string,
  resolve: PortResolver,
  cli?: CommandLineDefaults,
): ConfigResult {
  const errors: ConfigError[] = [];
  const error = (line: number, message: string): void => {
    errors.push({ file, line, message });
  };

  const global = newScope();
  const globalSeen = new Map<string, number>();
  let standalone: boolean | null = null;
  let logname: string | null = null;
  let portLines = 0;
  const ports = new Map<number, number>();
  const blocks: PortBlock[] = [];
  const entries: Entry[] = [];
  let block: PortBlock | null = null;

  /** A one-word argument, or null after reporting what is wrong with it. */
  const oneArg = (lineNo: number, name: string, value: string): string | null => {
    if (value === '') {
      error(lineNo, `${quote(name)} needs an argument`);
      return null;
    }
    if (BLANKS.test(value)) {
      error(lineNo, `${quote(name)} takes one argument`);
      return null;
    }
    return value;
  };

  /** The first occurrence of `name` in `seen`; reports a duplicate and returns false. */
  const firstTime = (lineNo: number, seen: Map<string, number>, name: string): boolean => {
    const first = seen.get(name);
    if (first !== undefined) {
      error(lineNo, `duplicate ${quote(name)} (first on line ${first})`);
      return false;
    }
    seen.set(name, lineNo);
    return true;
  };

  const outside = (lineNo: number, name: string): void => {
    error(lineNo, `${quote(name)} outside a port block (add a "port" line before it)`);
  };

  const setting = (lineNo: number, name: SettingName, value: string): void => {
    const scope = block === null ? global : (block.current?.scope ?? block.scope);
    const fresh = firstTime(lineNo, scope.seen, name);
    const store = <K extends keyof Settings>(key: K, v: Settings[K] & {}): void => {
      if (fresh) scope.values[key] = v;
    };
    if (name === 'acp') {
      if (value === '') error(lineNo, `"acp" needs an argument`);
      else store('acp', value);
      return;
    }
    const arg = oneArg(lineNo, name, value);
    if (arg === null) return;
    switch (name) {
      case 'timeout': {
        const n = /^[0-9]+$/.test(arg) ? Number(arg) : NaN;
        if (!(n <= MAX_TIMEOUT_SEC)) error(lineNo, `invalid timeout ${quote(arg)}: expected a number of seconds`);
        else store('timeoutSec', n);
        return;
      }
      case 'uid':
      case 'gid': {
        if (!/^[0-9]+$/.test(arg)) {
          error(lineNo, `invalid ${name} ${quote(arg)}: expected a number`);
          return;
        }
        const n = Number(arg);
        if (n === 0) error(lineNo, `${name} ${arg} is not allowed: tcpproxy never serves requests as root`);
        else if (n > MAX_ID) error(lineNo, `${name} ${arg} is out of range (1-${MAX_ID})`);
        else store(name, n);
        return;
      }
      case 'setenv':
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(arg)) error(lineNo, `invalid variable prefix ${quote(arg)}`);
        else store('prefix', arg);
        return;
      case 'writefile':
        store('writefile', arg);
        return;
    }
  };

  const portLine = (lineNo: number, value: string): void => {
    portLines++;
    const arg = oneArg(lineNo, 'port', value);
    let port: number | null = null;
    if (arg !== null) {
      const parsed = parsePort(arg, resolve);
      if (!parsed.ok) {
        error(lineNo, parsed.error);
      } else {
        port = parsed.value;
        const first = ports.get(port);
        if (first !== undefined) error(lineNo, `port ${port} is already defined on line ${first}`);
        else ports.set(port, lineNo);
      }
    }
    block = {
      port,
      line: lineNo,
      label: `port ${port ?? arg ?? ''}`.trimEnd(),
      scope: newScope(),
      ifaces: new Map(),
      entries: 0,
      any: null,
      current: null,
    };
    blocks.push(block);
  };

  const interfaceLine = (lineNo: number, value: string): void => {
    if (block === null) outside(lineNo, 'interface');
    const arg = oneArg(lineNo, 'interface', value);
    const iface = arg === null ? null : normalizeIp(arg);
    if (arg !== null && iface === null) error(lineNo, `interface ${quote(arg)} is not an IP address`);
    if (block === null) return;
    if (iface !== null) {
      const first = block.ifaces.get(iface);
      if (first !== undefined) error(lineNo, `${block.label} interface ${iface} is already defined on line ${first}`);
      else block.ifaces.set(iface, lineNo);
    }
    const entry: Entry = {
      block,
      iface,
      line: lineNo,
      label: `${block.label} interface ${iface ?? arg ?? ''}`.trimEnd(),
      valid: iface !== null && block.port !== null,
      scope: newScope(),
      serverLine: null,
      execLine: null,
      target: null,
    };
    block.current = entry;
    block.entries++;
    entries.push(entry);
  };

  const targetLine = (lineNo: number, kind: 'server' | 'exec', value: string): void => {
    if (block === null) outside(lineNo, kind);
    let target: Target | null = null;
    if (value === '') {
      error(lineNo, `${quote(kind)} needs an argument`);
    } else if (kind === 'exec') {
      target = { kind: 'exec', argv: splitCommand(value) };
    } else if (!value.startsWith('/') && !value.startsWith('.') && BLANKS.test(value)) {
      error(lineNo, `"server" takes one argument`);
    } else {
      const parsed = parseTarget(value, resolve);
      if (parsed.ok) target = parsed.value;
      else error(lineNo, parsed.error);
    }
    if (block === null) return;
    let entry = block.current ?? block.any;
    if (entry === null) {
      entry = {
        block,
        iface: null,
        line: block.line,
        label: block.label,
        valid: block.port !== null,
        scope: block.scope,
        serverLine: null,
        execLine: null,
        target: null,
      };
      block.any = entry;
      block.entries++;
      entries.push(entry);
    }
    const other = kind === 'server' ? 'exec' : 'server';
    const sameLine = kind === 'server' ? entry.serverLine : entry.execLine;
    const otherLine = kind === 'server' ? entry.execLine : entry.serverLine;
    if (sameLine !== null) {
      error(lineNo, `duplicate ${quote(kind)} (first on line ${sameLine})`);
    } else {
      if (otherLine !== null) error(lineNo, `${entry.label} has both ${quote(other)} (line ${otherLine}) and ${quote(kind)}`);
      if (kind === 'server') entry.serverLine = lineNo;
      else entry.execLine = lineNo;
      if (otherLine === null && target !== null) entry.target = target;
    }
  };

  const lines = text.split('\n');
  if (lines[0]?.startsWith('\uFEFF')) lines[0] = lines[0].slice(1);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    let raw = lines[i] ?? '';
    if (raw.endsWith('\r')) raw = raw.slice(0, -1);
    if (raw.includes('\0')) {
      error(lineNo, 'line contains a NUL byte');
      continue;
    }
    if (raw.includes('\uFFFD')) {
      error(lineNo, 'line is not valid UTF-8');
      continue;
    }
    if (tooLong(raw)) {
      error(lineNo, `line is longer than ${MAX_LINE_CHARS} characters`);
      continue;
    }
    const line = trimBlanks(stripComment(raw));
    if (line === '') continue;
    const blank = line.search(BLANKS);
    const word = blank < 0 ? line : line.slice(0, blank);
    const value = blank < 0 ? '' : trimBlanks(line.slice(blank));
    const name = word.toLowerCase();
    switch (name) {
      case 'standalone': {
        const fresh = firstTime(lineNo, globalSeen, name);
        const arg = oneArg(lineNo, name, value);
        if (arg === null) break;
        const yesNo = arg.toLowerCase();
        if (yesNo !== 'yes' && yesNo !== 'no') error(lineNo, `standalone must be "yes" or "no", not ${quote(arg)}`);
        else if (fresh) standalone = yesNo === 'yes';
        break;
      }
      case 'logname': {
        const fresh = firstTime(lineNo, globalSeen, name);
        const arg = oneArg(lineNo, name, value);
        if (arg !== null && fresh) logname = arg;
        break;
      }
      case 'port':
        portLine(lineNo, value);
        break;
      case 'interface':
        interfaceLine(lineNo, value);
        break;
      case 'server':
      case 'exec':
        targetLine(lineNo, name, value);
        break;
      case 'acp':
      case 'timeout':
      case 'setenv':
      case 'writefile':
      case 'uid':
      case 'gid':
        setting(lineNo, name, value);
        break;
      default: {
        const hint = suggestDirective(word);
        error(lineNo, hint === null ? `unknown directive ${quote(word)}` : `unknown directive ${quote(word)} (did you mean ${quote(hint)}?)`);
      }
    }
  }

  for (const b of blocks) {
    if (b.entries === 0 && b.port !== null) error(b.line, `${b.label} has neither "server" nor "exec"`);
  }
  for (const e of entries) {
    if (e.valid && e.serverLine === null && e.execLine === null) {
      error(e.line, `${e.label} has neither "server" nor "exec"`);
    }
  }
  if (portLines === 0) error(0, 'no service defined (add a "port" block)');

  if (errors.length > 0) {
    // Array.prototype.sort is stable: errors of one line keep their order.
    return { ok: false, errors: errors.sort((a, b) => a.line - b.line) };
  }

  const g = global.values;
  const acpOrigin = (scope: Scope | null): { acpOrigin?: Origin } => {
    if (scope === null) return { acpOrigin: { file: 'command line', line: 0 } };
    const line = scope.seen.get('acp');
    return line === undefined ? {} : { acpOrigin: { file, line } };
  };
  const services: Service[] = [];
  for (const e of entries) {
    const { port } = e.block;
    if (port === null || e.target === null) continue; // not reached: both are errors
    const own = e.scope.values;
    const blk = e.block.scope.values;
    services.push({
      port,
      iface: e.iface,
      target: e.target,
      acp: own.acp ?? blk.acp ?? cli?.acp ?? g.acp ?? null,
      timeoutSec: own.timeoutSec ?? blk.timeoutSec ?? cli?.timeoutSec ?? g.timeoutSec ?? DEFAULT_TIMEOUT_SEC,
      prefix: own.prefix ?? blk.prefix ?? cli?.prefix ?? g.prefix ?? DEFAULT_PREFIX,
      writefile: own.writefile ?? blk.writefile ?? cli?.writefile ?? g.writefile ?? null,
      uid: own.uid ?? blk.uid ?? g.uid ?? null,
      gid: own.gid ?? blk.gid ?? g.gid ?? null,
      origin: { file, line: e.line },
      targetOrigin: { file, line: e.execLine ?? e.serverLine ?? e.line },
      ...acpOrigin(own.acp !== undefined ? e.scope : blk.acp !== undefined ? e.block.scope : cli?.acp !== undefined ? null : global),
    });
  }
  return { ok: true, config: { file, standalone, logname, services } };
}

/** strerror(3)-like text for the errors a config file open or read can give. */
const ERRNO_TEXT: Readonly<Record<string, string>> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOTDIR: 'not a directory',
  EISDIR: 'is a directory',
  ELOOP: 'too many levels of symbolic links',
  ENAMETOOLONG: 'file name too long',
  EIO: 'input/output error',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in system',
  ENOMEM: 'cannot allocate memory',
};

function readFailure(err: unknown): string {
  // Duck-typed rather than instanceof: under jest, Node's own errors come
  // from another realm and fail `instanceof Error`.
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  if (typeof code !== 'string') return `cannot read: ${errorText(err)}`;
  const text = Object.hasOwn(ERRNO_TEXT, code) ? ERRNO_TEXT[code] : undefined;
  return text === undefined ? `cannot read: ${code}` : `cannot read: ${code} (${text})`;
}

/**
 * Reads the file (as bytes, decoded as UTF-8 with replacement) then
 * parseConfig. A missing or unreadable file, or one that is not a regular
 * file, gives one error with line 0. Never blocks on a FIFO: the type is
 * checked with stat before the open, and again on the open descriptor (opened
 * non-blocking) in case the path was replaced in between.
 */
export function readConfig(file: string, resolve: PortResolver, cli?: CommandLineDefaults): ConfigResult {
  const fail = (message: string): ConfigResult => ({ ok: false, errors: [{ file, line: 0, message }] });
  let bytes: Buffer;
  try {
    if (!fs.statSync(file).isFile()) return fail('is not a regular file');
    const { O_RDONLY, O_NONBLOCK, O_NOCTTY } = fs.constants;
    const fd = fs.openSync(file, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    try {
      if (!fs.fstatSync(fd).isFile()) return fail('is not a regular file');
      bytes = fs.readFileSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    return fail(readFailure(err));
  }
  return parseConfig(bytes.toString('utf8'), file, resolve, cli);
}

/**
 * Started as root, the config file names programs that run for every
 * connection: refuse one that someone else could have written (relayd's
 * check_file_secrecy). Null when the file is acceptable or cannot be stat'ed
 * (readConfig reports that).
 */
export function configFileProblem(file: string): string | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return null;
  }
  if (st.uid !== 0) return `is owned by uid ${st.uid}, not root: refusing it when started as root`;
  if ((st.mode & 0o022) !== 0) {
    return `is writable by ${st.mode & 0o020 ? 'group' : 'others'} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}): refusing it when started as root`;
  }
  return null;
}
