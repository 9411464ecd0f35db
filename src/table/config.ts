/**
 * The configuration file (/etc/tcpproxy.conf, `-f FILE`): a line-oriented
 * list of directives, parsed into the service table. The parser is pure and
 * never throws on what the user wrote: every problem becomes a ConfigError,
 * all of them are collected in one pass, and the caller prints them with
 * formatConfigError. The grammar is documented in man/tcpproxy.1 under
 * CONFIGURATION FILE.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { errorText, type ConfigError } from '../sys/errors';
import { quote } from '../sys/text';
import { normalizeIp, parseBind, parsePort, type BindAddress, type PortResolver } from './address';
import { directive, DIRECTIVES, MAX_ID, parseControl, parseWorkers, type CliSetting, type Settings } from './directives';
import { DEFAULT_BOUNDS, DEFAULT_LOGLEVEL, DEFAULT_PREFIX, DEFAULT_PROXYING, DEFAULT_SANDBOX, DEFAULT_TIMEOUT_SEC, parseTargetWords, splitCommand, type Access, type Prefix, type Proxying, type Service, type Target } from './service';

export interface Config {
  readonly file: string;
  /** null: not stated in the file. */
  readonly standalone: boolean | null;
  readonly logname: string | null;
  /** Workers per identity (`workers`), null: not stated. */
  readonly workers: number | 'auto' | null;
  /** The control socket (`control`): an absolute path or `none`; null: not stated. */
  readonly control: string | null;
  /** Where the Prometheus metrics are served (`metrics [interface:]port`); null: nowhere. */
  readonly metrics: BindAddress | null;
  /** In file order. */
  readonly services: readonly Service[];
}

/**
 * A program a line of the file names (`exec`, `acp`): with the syntax
 * errors, so that a file with errors has its programs checked in the same
 * run (see loadServices).
 */
export interface ProgramLine {
  readonly line: number;
  /** The command line's words; the first is the program. */
  readonly argv: readonly string[];
  readonly acp: boolean;
}

export type ConfigResult = { ok: true; config: Config } | { ok: false; errors: ConfigError[]; programs: ProgramLine[] };

/**
 * Values from the command line (-t, -a, -v, -w): they replace the file's
 * global defaults (directives before the first port).
 */
export type CommandLineDefaults = Pick<Settings, CliSetting>;

export { DIRECTIVES };

/** Longest line accepted, in characters (code points), without the line end. */
const MAX_LINE_CHARS = 4096;

const BLANKS = /[ \t]+/;

/** Where settings go: the file's global defaults, a port block, or an interface entry. */
interface Scope {
  readonly values: Settings;
  /** Directive name → line of its first occurrence in this scope. */
  readonly seen: Map<string, number>;
  /** The scope's own access lists, from its first `allow` or `deny` line on; null: inherited. */
  lists: { allow: Prefix[]; deny: Prefix[] } | null;
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
  return { values: {}, seen: new Map(), lists: null };
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

/** The content of one line: null for a blank or comment line, else its directive word and value. */
type Line = { readonly word: string; readonly value: string } | { readonly error: string } | null;

function splitLine(raw: string): Line {
  if (raw.includes('\0')) return { error: 'line contains a NUL byte' };
  if (raw.includes('\uFFFD')) return { error: 'line is not valid UTF-8' };
  if (tooLong(raw)) return { error: `line is longer than ${MAX_LINE_CHARS} characters` };
  const line = trimBlanks(stripComment(raw));
  if (line === '') return null;
  const blank = line.search(BLANKS);
  return blank < 0 ? { word: line, value: '' } : { word: line.slice(0, blank), value: trimBlanks(line.slice(blank)) };
}

/** The PROXY protocol and upstream settings in force, from the innermost scope that sets each. */
function proxying(pick: <K extends keyof Settings>(key: K) => Settings[K] | undefined): Proxying {
  const sendProxy = pick('sendProxy');
  const acceptProxy = pick('acceptProxy');
  return {
    sendProxy: sendProxy === undefined ? DEFAULT_PROXYING.sendProxy : sendProxy,
    acceptProxy: acceptProxy === undefined ? DEFAULT_PROXYING.acceptProxy : acceptProxy,
    balance: pick('balance') ?? DEFAULT_PROXYING.balance,
    source: pick('source') ?? DEFAULT_PROXYING.source,
  };
}

/** One pass over a file's lines, collecting the structure and every error (see parseConfig). */
class Parser {
  readonly errors: ConfigError[] = [];
  /** Every `exec` and `acp` line with a command, in file order. */
  private readonly programs: ProgramLine[] = [];
  private readonly global = newScope();
  private readonly fileSeen = new Map<string, number>();
  private standalone: boolean | null = null;
  private logname: string | null = null;
  private workers: number | 'auto' | null = null;
  private control: string | null = null;
  private metrics: BindAddress | null = null;
  private portLines = 0;
  private readonly ports = new Map<number, number>();
  private readonly blocks: PortBlock[] = [];
  private readonly entries: Entry[] = [];
  private block: PortBlock | null = null;

  private readonly file: string;
  private readonly resolve: PortResolver;

  constructor(file: string, resolve: PortResolver) {
    this.file = file;
    this.resolve = resolve;
  }

  private error(line: number, message: string): void {
    this.errors.push({ file: this.file, line, message });
  }

  /** A one-word argument, or null after reporting what is wrong with it. */
  private oneArg(lineNo: number, name: string, value: string): string | null {
    if (value === '') this.error(lineNo, `${quote(name)} needs an argument`);
    else if (BLANKS.test(value)) this.error(lineNo, `${quote(name)} takes one argument`);
    else return value;
    return null;
  }

  /** The first occurrence of `name` in `seen`; reports a duplicate and returns false. */
  private firstTime(lineNo: number, seen: Map<string, number>, name: string): boolean {
    const first = seen.get(name);
    if (first !== undefined) {
      this.error(lineNo, `duplicate ${quote(name)} (first on line ${first})`);
      return false;
    }
    seen.set(name, lineNo);
    return true;
  }

  private outside(lineNo: number, name: string): void {
    this.error(lineNo, `${quote(name)} outside a port block (add a "port" line before it)`);
  }

  line(lineNo: number, word: string, value: string): void {
    const name = word.toLowerCase();
    const d = directive(name);
    if (d === undefined) {
      const hint = suggestDirective(word);
      this.error(lineNo, hint === null ? `unknown directive ${quote(word)}` : `unknown directive ${quote(word)} (did you mean ${quote(hint)}?)`);
      return;
    }
    switch (d.kind) {
      case 'file':
        return this.fileLine(lineNo, name, value);
      case 'port':
        return this.portLine(lineNo, value);
      case 'interface':
        return this.interfaceLine(lineNo, value);
      case 'target':
        return this.targetLine(lineNo, name === 'exec' ? 'exec' : 'server', value);
      case 'list': {
        if (value === '') {
          this.error(lineNo, `${quote(name)} needs at least one prefix`);
          return;
        }
        const lists = (this.scope().lists ??= { allow: [], deny: [] });
        for (const word of value.split(BLANKS)) {
          const r = d.parse(word);
          if (r.ok) lists[d.key].push(r.value);
          else this.error(lineNo, r.error);
        }
        return;
      }
      case 'setting': {
        const scope = this.scope();
        const fresh = this.firstTime(lineNo, scope.seen, name);
        if (d.rest && value === '') this.error(lineNo, `${quote(name)} needs an argument`);
        const arg = d.rest ? (value === '' ? null : value) : this.oneArg(lineNo, name, value);
        if (arg === null) return;
        if (name === 'acp') this.programs.push({ line: lineNo, argv: splitCommand(arg), acp: true });
        const r = d.parse(arg);
        if (!r.ok) this.error(lineNo, r.error);
        else if (fresh) Object.assign(scope.values, r.value);
        return;
      }
      case 'words': {
        const scope = this.scope();
        const fresh = this.firstTime(lineNo, scope.seen, name);
        const r = d.parse(value === '' ? [] : value.split(BLANKS));
        if (!r.ok) for (const e of r.errors) this.error(lineNo, e);
        else if (fresh) Object.assign(scope.values, r.value);
        return;
      }
    }
  }

  /** Where a setting or list line goes: the current interface entry, else the port block, else the globals. */
  private scope(): Scope {
    return this.block === null ? this.global : (this.block.current?.scope ?? this.block.scope);
  }

  /** `standalone`, `logname`, `workers` and `control`: once in the file, wherever they stand. */
  private fileLine(lineNo: number, name: string, value: string): void {
    const fresh = this.firstTime(lineNo, this.fileSeen, name);
    const arg = this.oneArg(lineNo, name, value);
    if (arg === null) return;
    if (name === 'logname') {
      if (fresh) this.logname = arg;
      return;
    }
    if (name === 'metrics') {
      const m = parseBind(arg, this.resolve);
      if (!m.ok) this.error(lineNo, `metrics: ${m.error}`);
      else if (fresh) this.metrics = m.value;
      return;
    }
    if (name === 'control') {
      const c = parseControl(arg);
      if (!c.ok) this.error(lineNo, c.error);
      else if (fresh) this.control = c.value;
      return;
    }
    if (name === 'workers') {
      const w = parseWorkers(arg);
      if (!w.ok) this.error(lineNo, w.error);
      else if (fresh) this.workers = w.value;
      return;
    }
    const yesNo = arg.toLowerCase();
    if (yesNo !== 'yes' && yesNo !== 'no') this.error(lineNo, `standalone must be "yes" or "no", not ${quote(arg)}`);
    else if (fresh) this.standalone = yesNo === 'yes';
  }

  private portLine(lineNo: number, value: string): void {
    this.portLines++;
    const arg = this.oneArg(lineNo, 'port', value);
    let port: number | null = null;
    if (arg !== null) {
      const parsed = parsePort(arg, this.resolve);
      if (!parsed.ok) {
        this.error(lineNo, parsed.error);
      } else {
        port = parsed.value;
        const first = this.ports.get(port);
        if (first !== undefined) this.error(lineNo, `port ${port} is already defined on line ${first}`);
        else this.ports.set(port, lineNo);
      }
    }
    this.block = {
      port,
      line: lineNo,
      label: `port ${port ?? arg ?? ''}`.trimEnd(),
      scope: newScope(),
      ifaces: new Map(),
      entries: 0,
      any: null,
      current: null,
    };
    this.blocks.push(this.block);
  }

  private interfaceLine(lineNo: number, value: string): void {
    const block = this.block;
    if (block === null) this.outside(lineNo, 'interface');
    const arg = this.oneArg(lineNo, 'interface', value);
    const iface = arg === null ? null : normalizeIp(arg);
    if (arg !== null && iface === null) this.error(lineNo, `interface ${quote(arg)} is not an IP address`);
    if (block === null) return;
    if (iface !== null) {
      const first = block.ifaces.get(iface);
      if (first !== undefined) this.error(lineNo, `${block.label} interface ${iface} is already defined on line ${first}`);
      else block.ifaces.set(iface, lineNo);
    }
    const label = `${block.label} interface ${iface ?? arg ?? ''}`.trimEnd();
    block.current = this.newEntry(block, iface, lineNo, label, newScope(), iface !== null && block.port !== null);
  }

  private newEntry(block: PortBlock, iface: string | null, line: number, label: string, scope: Scope, valid: boolean): Entry {
    const entry: Entry = { block, iface, line, label, valid, scope, serverLine: null, execLine: null, target: null };
    block.entries++;
    this.entries.push(entry);
    return entry;
  }

  private parseTargetValue(lineNo: number, kind: 'server' | 'exec', value: string): Target | null {
    if (value === '') {
      this.error(lineNo, `${quote(kind)} needs an argument`);
      return null;
    }
    if (kind === 'exec') {
      const argv = splitCommand(value);
      this.programs.push({ line: lineNo, argv, acp: false });
      return { kind: 'exec', argv };
    }
    const parsed = parseTargetWords(value.split(BLANKS), this.resolve);
    if (parsed.ok) return parsed.value;
    for (const e of parsed.errors) this.error(lineNo, e);
    return null;
  }

  private targetLine(lineNo: number, kind: 'server' | 'exec', value: string): void {
    const block = this.block;
    if (block === null) this.outside(lineNo, kind);
    const target = this.parseTargetValue(lineNo, kind, value);
    if (block === null) return;
    const entry = block.current ?? block.any ?? (block.any = this.newEntry(block, null, block.line, block.label, block.scope, block.port !== null));
    const other = kind === 'server' ? 'exec' : 'server';
    const sameLine = kind === 'server' ? entry.serverLine : entry.execLine;
    const otherLine = kind === 'server' ? entry.execLine : entry.serverLine;
    if (sameLine !== null) {
      this.error(lineNo, `duplicate ${quote(kind)} (first on line ${sameLine})`);
      return;
    }
    if (otherLine !== null) this.error(lineNo, `${entry.label} has both ${quote(other)} (line ${otherLine}) and ${quote(kind)}`);
    if (kind === 'server') entry.serverLine = lineNo;
    else entry.execLine = lineNo;
    if (otherLine === null && target !== null) entry.target = target;
  }

  /** The end-of-file checks, then the services with their settings resolved scope by scope. */
  finish(cli: CommandLineDefaults | undefined): ConfigResult {
    for (const b of this.blocks) {
      if (b.entries === 0 && b.port !== null) this.error(b.line, `${b.label} has neither "server" nor "exec"`);
    }
    for (const e of this.entries) {
      if (e.valid && e.serverLine === null && e.execLine === null) this.error(e.line, `${e.label} has neither "server" nor "exec"`);
    }
    if (this.portLines === 0) this.error(0, 'no service defined (add a "port" block)');
    if (this.errors.length > 0) {
      // Array.prototype.sort is stable: errors of one line keep their order.
      return { ok: false, errors: this.errors.sort((a, b) => a.line - b.line), programs: this.programs };
    }
    const file = this.file;
    // Found while the settings are resolved: a named uid whose primary group is root's.
    const late = new Map<string, { line: number; message: string }>();
    const services = this.entries.flatMap((e): Service[] => {
      const { port } = e.block;
      if (port === null || e.target === null) return []; // not reached: both are errors
      // Innermost first: the entry, its port block, the command line, the file's globals.
      const layers: readonly (Settings | undefined)[] = [e.scope.values, e.block.scope.values, cli, this.global.values];
      const pick = <K extends keyof Settings>(key: K): Settings[K] | undefined => layers.find((l) => l?.[key] !== undefined)?.[key];
      // Where the acp in force was written: its scope's line, or the command line.
      const acpScope = [e.scope, e.block.scope, null, this.global][layers.findIndex((l) => l?.acp !== undefined)];
      const acpLine = acpScope?.seen.get('acp');
      // Where the source in force was written (the command line has no source).
      const sourceLine = [e.scope, e.block.scope, null, this.global][layers.findIndex((l) => l?.source !== undefined)]?.seen.get('source');
      // A named uid's primary group serves only where no scope sets a gid; it must not be root's.
      const gid = pick('gid') ?? pick('uidGroup') ?? null;
      if (pick('gid') === undefined && gid !== null && (gid === 0 || gid > MAX_ID)) {
        const at = layers.findIndex((l) => l?.uidGroup !== undefined);
        const line = [e.scope, e.block.scope, null, this.global][at]?.seen.get('uid') ?? e.line;
        const name = layers[at]?.uidName ?? '';
        const message =
          gid === 0
            ? `uid ${name}: the primary group of user ${quote(name)} is gid 0, which is not allowed: tcpproxy never serves requests as root; add a "gid" line with another group`
            : `uid ${name}: the primary group of user ${quote(name)} is gid ${gid}, out of range (1-${MAX_ID}); add a "gid" line`;
        late.set(`${line}\n${message}`, { line, message });
      }
      // The innermost scope with a list line of its own has the whole of both lists.
      const lists = [e.scope, e.block.scope, this.global].find((s) => s.lists !== null)?.lists ?? { allow: [], deny: [] };
      const access: Access = {
        allow: lists.allow,
        deny: lists.deny,
        maxconn: pick('maxconn') ?? null,
        perSource: pick('perSource') ?? null,
        rate: pick('rate') ?? null,
      };
      return [
        {
          port,
          iface: e.iface,
          target: e.target,
          acp: pick('acp') ?? null,
          timeoutSec: pick('timeoutSec') ?? DEFAULT_TIMEOUT_SEC,
          prefix: pick('prefix') ?? DEFAULT_PREFIX,
          writefile: pick('writefile') ?? null,
          // uid and gid have no command-line option: the cli layer never holds them.
          // A gid of any scope wins over the primary group of a named uid.
          uid: pick('uid') ?? null,
          gid,
          access,
          sandbox: {
            noNewPrivs: pick('noNewPrivs') ?? DEFAULT_SANDBOX.noNewPrivs,
            rlimitNproc: pick('rlimitNproc') ?? DEFAULT_SANDBOX.rlimitNproc,
            rlimitAs: pick('rlimitAs') ?? DEFAULT_SANDBOX.rlimitAs,
            rlimitCpu: pick('rlimitCpu') ?? DEFAULT_SANDBOX.rlimitCpu,
            rlimitNofile: pick('rlimitNofile') ?? DEFAULT_SANDBOX.rlimitNofile,
          },
          bounds: {
            handlerTimeoutSec: pick('handlerTimeoutSec') ?? DEFAULT_BOUNDS.handlerTimeoutSec,
            keepalive: pick('keepalive') ?? DEFAULT_BOUNDS.keepalive,
            writefileMax: pick('writefileMax') ?? DEFAULT_BOUNDS.writefileMax,
          },
          proxy: proxying(pick),
          loglevel: pick('loglevel') ?? DEFAULT_LOGLEVEL,
          origin: { file, line: e.line },
          targetOrigin: { file, line: e.execLine ?? e.serverLine ?? e.line },
          ...(acpScope === null
            ? { acpOrigin: { file: 'command line', line: 0 } }
            : acpLine === undefined
              ? {}
              : { acpOrigin: { file, line: acpLine } }),
          ...(sourceLine === undefined ? {} : { sourceOrigin: { file, line: sourceLine } }),
        },
      ];
    });
    if (late.size > 0) {
      for (const { line, message } of late.values()) this.error(line, message);
      return { ok: false, errors: this.errors.sort((a, b) => a.line - b.line), programs: this.programs };
    }
    return { ok: true, config: { file, standalone: this.standalone, logname: this.logname, workers: this.workers, control: this.control, metrics: this.metrics, services } };
  }
}

/**
 * Parses the text of a config file. `file` is only used in errors and
 * origins. Never throws on user input; linear in the size of the text.
 */
export function parseConfig(text: string, file: string, resolve: PortResolver, cli?: CommandLineDefaults): ConfigResult {
  const parser = new Parser(file, resolve);
  const lines = text.split('\n');
  if (lines[0]?.startsWith('\uFEFF')) lines[0] = lines[0].slice(1);
  lines.forEach((raw, i) => {
    const line = splitLine(raw.endsWith('\r') ? raw.slice(0, -1) : raw);
    if (line === null) return;
    if ('error' in line) parser.errors.push({ file, line: i + 1, message: line.error });
    else parser.line(i + 1, line.word, line.value);
  });
  return parser.finish(cli);
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

/** Who may have written a config file that is accepted (see readConfigFile). */
export type ConfigTrust = 'root' | 'caller';

/** What reading the config file gave: its text, or why not (`unsafe`: refused by the trust rules). */
export type ConfigFileRead =
  | { readonly ok: true; readonly text: string }
  | { readonly ok: false; readonly unsafe: boolean; readonly message: string; readonly code?: string };

const REFUSING = 'refusing it when started as root';
/** Symbolic links followed in one path at most, as the kernel's limit (ELOOP). */
const MAX_LINKS = 40;

function mode4(st: fs.Stats): string {
  return (st.mode & 0o7777).toString(8).padStart(4, '0');
}

/**
 * Who besides the owner may write an object of mode `mode`, and the chmod(1)
 * that stops it: `group and others` / `go-w`, `group` / `g-w`, `others` /
 * `o-w`; null when neither may.
 */
export function writableBy(mode: number): { who: string; chmod: string } | null {
  const group = (mode & 0o020) !== 0;
  const others = (mode & 0o002) !== 0;
  if (group && others) return { who: 'group and others', chmod: 'go-w' };
  if (group) return { who: 'group', chmod: 'g-w' };
  if (others) return { who: 'others', chmod: 'o-w' };
  return null;
}

/**
 * Why `st` (an object on the path to the config file, named by `what`:
 * '' for the file itself; `where`: its name for the chmod of the fix)
 * could have been written by someone other than root, or null. A directory
 * may be writable by others when it is root's and sticky (/tmp): then only
 * root can replace what root put in it, and what is in it is checked in
 * turn (sshd's StrictModes).
 */
function untrusted(st: fs.Stats, what: string, where: string): string | null {
  if (st.uid !== 0) return `${what}is owned by uid ${st.uid}, not root: ${REFUSING}`;
  if (st.isSymbolicLink()) return null;
  if (st.isDirectory() && (st.mode & 0o1000) !== 0) return null;
  const w = writableBy(st.mode);
  if (w !== null) return `${what}is writable by ${w.who} (mode ${mode4(st)}): ${REFUSING}: chmod ${w.chmod} ${where}`;
  return null;
}

class Refused extends Error {}

/**
 * Resolves `file` as root must: from `/` down, every directory it passes
 * through and every symbolic link it follows owned by root and not
 * writable by group or others (a sticky root directory excepted), links
 * followed by hand so that the last step is a name in a directory only
 * root can change. Returns that real path and the lstat of the file there;
 * throws Refused with the message, or the Node error of an lstat/readlink.
 */
function resolveTrusted(file: string): { real: string; st: fs.Stats } {
  const parts = (path.isAbsolute(file) ? file : path.join(process.cwd(), file)).split('/').filter((p) => p !== '' && p !== '.');
  let dir = '/';
  let links = 0;
  const root = fs.lstatSync(dir);
  const rootProblem = untrusted(root, 'directory / ', '/');
  if (rootProblem !== null) throw new Refused(rootProblem);
  for (;;) {
    const name = parts.shift();
    if (name === undefined) {
      // The path ends in a directory ("/etc/", "..").
      return { real: dir, st: fs.lstatSync(dir) };
    }
    if (name === '..') {
      dir = path.dirname(dir);
      continue;
    }
    const here = path.join(dir, name);
    const st = fs.lstatSync(here);
    const last = parts.length === 0;
    if (st.isSymbolicLink()) {
      const problem = untrusted(st, `symbolic link ${here} `, here);
      if (problem !== null) throw new Refused(problem);
      if (++links > MAX_LINKS) throw Object.assign(new Error('too many symbolic links'), { code: 'ELOOP' });
      const target = fs.readlinkSync(here);
      if (path.isAbsolute(target)) dir = '/';
      parts.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
      continue;
    }
    if (last) return { real: here, st };
    if (!st.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    const problem = untrusted(st, `directory ${here} `, here);
    if (problem !== null) throw new Refused(problem);
    dir = here;
  }
}

/** Reads what `fd` holds, to its end. */
function readAll(fd: number): Buffer {
  const chunks: Buffer[] = [];
  for (;;) {
    const buf = Buffer.allocUnsafe(65536);
    const n = fs.readSync(fd, buf, 0, buf.length, null);
    if (n === 0) return Buffer.concat(chunks);
    chunks.push(buf.subarray(0, n));
  }
}

/**
 * Reads the config file once, from one descriptor, and returns exactly
 * what was read (decoded as UTF-8 with replacement). Never blocks on a
 * FIFO and never opens a device: the type is checked before the open and
 * again on the open descriptor (opened non-blocking).
 *
 * `root` (started as root, where the file names the programs and ids of
 * every service): the path is resolved by hand from `/` (resolveTrusted:
 * every directory and symbolic link on the way root's and not writable by
 * group or others, sticky root directories allowed), the real path is
 * opened with O_NOFOLLOW, and the descriptor must be the file checked,
 * a regular file owned by root and not writable by group or others. Since
 * nothing on the way can be changed by anyone but root, what is read is
 * what was checked. `caller`: any regular file the caller can read,
 * symbolic links followed.
 */
export function readConfigFile(file: string, trust: ConfigTrust): ConfigFileRead {
  const unsafe = (message: string): ConfigFileRead => ({ ok: false, unsafe: true, message });
  const fail = (message: string): ConfigFileRead => ({ ok: false, unsafe: false, message });
  const { O_RDONLY, O_NONBLOCK, O_NOCTTY, O_NOFOLLOW } = fs.constants;
  try {
    let name = file;
    let flags = O_RDONLY | O_NONBLOCK | O_NOCTTY;
    let checked: fs.Stats;
    let what = '';
    let where = file;
    if (trust === 'root') {
      const r = resolveTrusted(file);
      // Named through a link: what is wrong with the file is said of the link's target.
      what = r.real === path.resolve(file) ? '' : `target ${r.real} `;
      if (!r.st.isFile()) return fail(what === '' ? 'is not a regular file' : `${what}is not a regular file`);
      // The chmod of the fix names the file as the caller did, or the link's target.
      where = what === '' ? file : r.real;
      const problem = untrusted(r.st, what, where);
      if (problem !== null) return unsafe(problem);
      name = r.real;
      flags |= O_NOFOLLOW;
      checked = r.st;
    } else {
      checked = fs.statSync(file);
      if (!checked.isFile()) return fail('is not a regular file');
    }
    const fd = fs.openSync(name, flags);
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) return fail('is not a regular file');
      if (trust === 'root') {
        if (st.dev !== checked.dev || st.ino !== checked.ino) return unsafe(`was replaced while being checked: ${REFUSING}`);
        const problem = untrusted(st, what, where);
        if (problem !== null) return unsafe(problem);
      }
      return { ok: true, text: readAll(fd).toString('utf8') };
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    if (err instanceof Refused) return unsafe(err.message);
    const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
    return typeof code === 'string' ? { ok: false, unsafe: false, message: readFailure(err), code } : fail(readFailure(err));
  }
}

/**
 * Reads the file with readConfigFile (`trust`, default `caller`) then
 * parseConfig. A missing, unreadable or refused file, or one that is not a
 * regular file, gives one error with line 0.
 */
export function readConfig(file: string, resolve: PortResolver, cli?: CommandLineDefaults, trust: ConfigTrust = 'caller'): ConfigResult {
  const r = readConfigFile(file, trust);
  if (!r.ok) return { ok: false, errors: [{ file, line: 0, message: r.message }], programs: [] };
  return parseConfig(r.text, file, resolve, cli);
}

/**
 * Started as root, the config file names programs that run for every
 * connection: why `file` is refused as root (readConfigFile `root`), or
 * null when it is acceptable or cannot be read (readConfig reports that).
 */
export function configFileProblem(file: string): string | null {
  const r = readConfigFile(file, 'root');
  return !r.ok && r.unsafe ? r.message : null;
}
