/**
 * The directives of the config file, in one table: what each takes, where
 * it may stand, how its value is checked, and which command-line option
 * gives the same setting as a default. The config parser dispatches on it,
 * the command line takes its limits from it, and the man-page drift test
 * checks the page against it. Pure, but for `uid NAME` and `gid NAME`, which
 * ask the system's user and group databases (native getpwnam_r, getgrnam_r).
 */
import { native } from '../sys/native';
import { quote } from '../sys/text';
import { parsePrefix as parseAccessPrefix } from './access';
import { normalizeIp, type Parsed } from './address';
import { LOG_LEVELS, type Balance, type LogLevel, type Prefix } from './service';

/** The largest timeout: seconds whose count of milliseconds still fits a signed 32-bit timer. */
export const MAX_TIMEOUT_SEC = 2147483;
/** The largest `uid`/`gid`: 4294967295 is (uid_t)-1, which means "unchanged" to setuid(2). */
export const MAX_ID = 4294967294;

/** Per-service settings, as a scope (global, port, interface) of the file gives them. */
export interface Settings {
  acp?: string;
  timeoutSec?: number;
  prefix?: string;
  writefile?: string;
  uid?: number;
  /** With `uid NAME`: that user's primary group, the gid when no scope sets one; null with a numeric uid. */
  uidGroup?: number | null;
  /** With `uid NAME`: the name, for messages. */
  uidName?: string;
  gid?: number;
  maxconn?: number;
  perSource?: number;
  rate?: number;
  handlerTimeoutSec?: number;
  keepalive?: boolean;
  writefileMax?: number;
  noNewPrivs?: boolean;
  rlimitNproc?: number;
  rlimitAs?: number;
  rlimitCpu?: number;
  rlimitNofile?: number;
  /** null: `send-proxy none`. */
  sendProxy?: 1 | 2 | null;
  /** Trusted senders of a PROXY header (empty: any); null: `accept-proxy none`. */
  acceptProxy?: readonly Prefix[] | null;
  balance?: Balance;
  loglevel?: LogLevel;
  source?: string;
}

/** A value checked word by word: every problem, in word order. */
export type Checked<T> = { ok: true; value: T } | { ok: false; errors: readonly string[] };

/** The largest `maxconn`, `per-source` and `rate`. */
export const MAX_LIMIT = 1000000000;

/** A limit (`maxconn`, `per-source`, `rate`): a whole number from 1 to MAX_LIMIT. */
function parseLimit(name: string, text: string): Parsed<number> {
  const n = /^[0-9]+$/.test(text) ? Number(text) : NaN;
  if (n >= 1 && n <= MAX_LIMIT) return { ok: true, value: n };
  return { ok: false, error: `invalid ${name} ${quote(text)}: expected a whole number from 1 to ${MAX_LIMIT}` };
}

/** The largest size (`writefile-max`, `rlimit-as`): bytes a double still counts exactly. */
export const MAX_SIZE = Number.MAX_SAFE_INTEGER;

const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** A size in bytes, 1..MAX_SIZE, with an optional K, M or G (1024-based, either case). */
export function parseSize(name: string, text: string): Parsed<number> {
  const m = /^([0-9]+)([KMGkmg]?)$/.exec(text);
  if (m === null) return { ok: false, error: `invalid ${name} ${quote(text)}: expected bytes, optionally with K, M or G` };
  const n = Number(m[1]) * (SIZE_UNITS[(m[2] ?? '').toLowerCase()] ?? 1);
  if (n >= 1 && n <= MAX_SIZE) return { ok: true, value: n };
  return { ok: false, error: `${name} ${text} is out of range (1-${MAX_SIZE} bytes)` };
}

/** `yes` or `no`, in any case. */
function parseYesNo(name: string, text: string): Parsed<boolean> {
  const v = text.toLowerCase();
  if (v === 'yes' || v === 'no') return { ok: true, value: v === 'yes' };
  return { ok: false, error: `${name} must be "yes" or "no", not ${quote(text)}` };
}

/** A resource limit count (`rlimit-nproc`, `rlimit-nofile`) or seconds (`rlimit-cpu`): 1..MAX_LIMIT. */
function parseRlimit(name: string, text: string, unit: string): Parsed<number> {
  const n = /^[0-9]+$/.test(text) ? Number(text) : NaN;
  if (n >= 1 && n <= MAX_LIMIT) return { ok: true, value: n };
  return { ok: false, error: `invalid ${name} ${quote(text)}: expected a whole number${unit} from 1 to ${MAX_LIMIT}` };
}

/** A timeout in whole seconds, 0..MAX_TIMEOUT_SEC; `why` tells the caller which message to give. */
export function checkTimeout(text: string): { ok: true; value: number } | { ok: false; why: 'not-a-number' | 'out-of-range' } {
  if (!/^[0-9]+$/.test(text)) return { ok: false, why: 'not-a-number' };
  const n = Number(text);
  return n <= MAX_TIMEOUT_SEC ? { ok: true, value: n } : { ok: false, why: 'out-of-range' };
}

/** `control PATH` (absolute) or `control none`; also `-S`. */
export function parseControl(text: string): Parsed<string> {
  if (text === 'none' || (text.startsWith('/') && !text.includes('\0'))) return { ok: true, value: text };
  return { ok: false, error: `control must be an absolute path or "none", not ${quote(text)}` };
}

/** The most workers per identity `workers` accepts. */
export const MAX_WORKERS = 64;

/** `workers N` (1..MAX_WORKERS) or `workers auto` (one per CPU). */
export function parseWorkers(text: string): Parsed<number | 'auto'> {
  if (text.toLowerCase() === 'auto') return { ok: true, value: 'auto' };
  if (/^[0-9]+$/.test(text) && Number(text) >= 1 && Number(text) <= MAX_WORKERS) return { ok: true, value: Number(text) };
  return { ok: false, error: `workers must be a whole number from 1 to ${MAX_WORKERS} or "auto", not ${quote(text)}` };
}

/** The prefix of the handler's variables (`-v`, `setenv`): a shell variable name. */
export function parsePrefix(text: string): Parsed<string> {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(text) ? { ok: true, value: text } : { ok: false, error: `invalid variable prefix ${quote(text)}` };
}

/** A user or group name as useradd(8) and groupadd(8) take them (and Samba's trailing '$'). */
const ID_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*\$?$/;

/**
 * `uid N|NAME`, `gid N|NAME`: a number, or a name looked up in the system's
 * user or group database (the master reads the config at start and on
 * SIGHUP, so a name follows the database). Root is refused either way.
 */
function parseId(name: 'uid' | 'gid', text: string): Parsed<{ id: number; group: number | null }> {
  if (/^[0-9]+$/.test(text)) {
    const n = Number(text);
    if (n === 0) return { ok: false, error: `${name} ${text} is not allowed: tcpproxy never serves requests as root` };
    if (n > MAX_ID) return { ok: false, error: `${name} ${text} is out of range (1-${MAX_ID})` };
    return { ok: true, value: { id: n, group: null } };
  }
  const what = name === 'uid' ? 'user' : 'group';
  if (!ID_NAME.test(text) || text.length > 256) return { ok: false, error: `invalid ${name} ${quote(text)}: expected a number or a ${what} name` };
  let found: { uid: number; gid: number } | number | null;
  try {
    found = name === 'uid' ? native().userByName(text) : native().groupByName(text);
  } catch (err) {
    return { ok: false, error: `cannot look up ${what} ${quote(text)}: ${(err as Error).message}` };
  }
  if (found === null) return { ok: false, error: `unknown ${what} ${quote(text)} (${name} takes a number or a name from ${name === 'uid' ? '/etc/passwd' : '/etc/group'} or nsswitch)` };
  const id = typeof found === 'number' ? found : found.uid;
  if (id === 0) return { ok: false, error: `${name} ${text} is ${name} 0, which is not allowed: tcpproxy never serves requests as root` };
  if (id > MAX_ID) return { ok: false, error: `${name} ${text} is ${name} ${id}, out of range (1-${MAX_ID})` };
  return { ok: true, value: { id, group: typeof found === 'number' ? null : found.gid } };
}

function uidSetting(text: string): Parsed<Settings> {
  const r = parseId('uid', text);
  return r.ok ? { ok: true, value: { uid: r.value.id, uidGroup: r.value.group, ...(r.value.group === null ? {} : { uidName: text }) } } : r;
}

function gidSetting(text: string): Parsed<Settings> {
  const r = parseId('gid', text);
  return r.ok ? { ok: true, value: { gid: r.value.id } } : r;
}

/** `loglevel quiet|normal|verbose`, in any case. */
function parseLogLevel(text: string): Parsed<LogLevel> {
  const v = LOG_LEVELS.find((l) => l === text.toLowerCase());
  return v !== undefined ? { ok: true, value: v } : { ok: false, error: `invalid loglevel ${quote(text)}: expected quiet, normal or verbose` };
}

const BALANCES: readonly Balance[] = ['first', 'roundrobin', 'source'];

/** `balance first|roundrobin|source`, in any case. */
function parseBalance(text: string): Parsed<Balance> {
  const v = BALANCES.find((b) => b === text.toLowerCase());
  return v !== undefined ? { ok: true, value: v } : { ok: false, error: `invalid balance ${quote(text)}: expected first, roundrobin or source` };
}

/** `send-proxy v1|v2|none`, in any case; none: null. */
function parseSendProxy(text: string): Parsed<1 | 2 | null> {
  const v = text.toLowerCase();
  if (v === 'v1' || v === 'v2') return { ok: true, value: v === 'v1' ? 1 : 2 };
  if (v === 'none') return { ok: true, value: null };
  return { ok: false, error: `invalid send-proxy ${quote(text)}: expected v1, v2 or none` };
}

/** `source ADDR`: an IP literal, normalised. */
function parseSource(text: string): Parsed<string> {
  const ip = normalizeIp(text);
  return ip !== null ? { ok: true, value: ip } : { ok: false, error: `invalid source ${quote(text)}: expected an IP address` };
}

/**
 * `accept-proxy [PREFIX...]`: no words, a header from any source; prefixes
 * as `allow` takes them, from those only; `none` alone (any case), off.
 */
export function parseAcceptProxy(words: readonly string[]): Checked<Settings> {
  const isNone = (w: string): boolean => w.toLowerCase() === 'none';
  if (words.length === 1 && isNone(words[0] ?? '')) return { ok: true, value: { acceptProxy: null } };
  const errors: string[] = words.some(isNone) ? ['"accept-proxy none" takes no other words'] : [];
  const prefixes: Prefix[] = [];
  for (const w of words) {
    if (isNone(w)) continue;
    const r = parseAccessPrefix(w);
    if (r.ok) prefixes.push(r.value);
    else errors.push(r.error);
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, value: { acceptProxy: prefixes } };
}

function setting<K extends keyof Settings>(key: K, r: Parsed<Exclude<Settings[K], undefined>>): Parsed<Settings> {
  return r.ok ? { ok: true, value: { [key]: r.value } as Settings } : r;
}

export type Directive =
  /** File-wide, wherever it stands: `standalone`, `logname`, `workers`, `control`. */
  | { readonly name: string; readonly kind: 'file' }
  /** The structure: `port`, `interface`, `server`, `exec`. */
  | { readonly name: string; readonly kind: 'port' | 'interface' | 'target' }
  /**
   * An access list of the scope it stands in (`allow`, `deny`): one or more
   * words, each checked by `parse`; repeated lines append. A scope with a
   * line of either list has both lists of its own.
   */
  | { readonly name: string; readonly kind: 'list'; readonly key: AccessList; readonly parse: (word: string) => Parsed<Prefix> }
  /**
   * A setting of the scope it stands in. `rest`: the value is the rest of
   * the line (a command line), else one word. `option`: set by the command
   * line too (-a, -t, -v, -w), as a default that replaces the file's global one.
   */
  | {
      readonly name: string;
      readonly kind: 'setting';
      readonly key: keyof Settings;
      readonly rest: boolean;
      readonly option?: CliSetting;
      readonly parse: (value: string) => Parsed<Settings>;
    }
  /**
   * A setting whose value is zero or more words (`accept-proxy`), each
   * checked, every problem reported; once per scope, like the others.
   */
  | { readonly name: string; readonly kind: 'words'; readonly key: keyof Settings; readonly parse: (words: readonly string[]) => Checked<Settings> };

/** The access lists of a scope. */
export type AccessList = 'allow' | 'deny';

/** The settings the command line can give as defaults for every service (-a, -t, -v, -w). */
export type CliSetting = 'acp' | 'timeoutSec' | 'prefix' | 'writefile';

export const DIRECTIVE_TABLE: readonly Directive[] = [
  { name: 'standalone', kind: 'file' },
  { name: 'uid', kind: 'setting', key: 'uid', rest: false, parse: uidSetting },
  { name: 'gid', kind: 'setting', key: 'gid', rest: false, parse: gidSetting },
  { name: 'port', kind: 'port' },
  { name: 'interface', kind: 'interface' },
  { name: 'server', kind: 'target' },
  { name: 'exec', kind: 'target' },
  { name: 'acp', kind: 'setting', key: 'acp', rest: true, option: 'acp', parse: (v) => setting('acp', { ok: true, value: v }) },
  { name: 'logname', kind: 'file' },
  { name: 'setenv', kind: 'setting', key: 'prefix', rest: false, option: 'prefix', parse: (v) => setting('prefix', parsePrefix(v)) },
  {
    name: 'timeout',
    kind: 'setting',
    key: 'timeoutSec',
    rest: false,
    option: 'timeoutSec',
    parse: (v) => {
      const r = checkTimeout(v);
      return r.ok ? setting('timeoutSec', r) : { ok: false, error: `invalid timeout ${quote(v)}: expected a number of seconds` };
    },
  },
  { name: 'writefile', kind: 'setting', key: 'writefile', rest: false, option: 'writefile', parse: (v) => setting('writefile', { ok: true, value: v }) },
  { name: 'workers', kind: 'file' },
  { name: 'control', kind: 'file' },
  { name: 'metrics', kind: 'file' },
  { name: 'allow', kind: 'list', key: 'allow', parse: parseAccessPrefix },
  { name: 'deny', kind: 'list', key: 'deny', parse: parseAccessPrefix },
  { name: 'maxconn', kind: 'setting', key: 'maxconn', rest: false, parse: (v) => setting('maxconn', parseLimit('maxconn', v)) },
  { name: 'per-source', kind: 'setting', key: 'perSource', rest: false, parse: (v) => setting('perSource', parseLimit('per-source', v)) },
  { name: 'rate', kind: 'setting', key: 'rate', rest: false, parse: (v) => setting('rate', parseLimit('rate', v)) },
  {
    name: 'handler-timeout',
    kind: 'setting',
    key: 'handlerTimeoutSec',
    rest: false,
    parse: (v) => {
      const r = checkTimeout(v);
      return r.ok ? setting('handlerTimeoutSec', r) : { ok: false, error: `invalid handler-timeout ${quote(v)}: expected a number of seconds` };
    },
  },
  { name: 'keepalive', kind: 'setting', key: 'keepalive', rest: false, parse: (v) => setting('keepalive', parseYesNo('keepalive', v)) },
  { name: 'writefile-max', kind: 'setting', key: 'writefileMax', rest: false, parse: (v) => setting('writefileMax', parseSize('writefile-max', v)) },
  { name: 'no-new-privs', kind: 'setting', key: 'noNewPrivs', rest: false, parse: (v) => setting('noNewPrivs', parseYesNo('no-new-privs', v)) },
  { name: 'rlimit-nproc', kind: 'setting', key: 'rlimitNproc', rest: false, parse: (v) => setting('rlimitNproc', parseRlimit('rlimit-nproc', v, '')) },
  { name: 'rlimit-as', kind: 'setting', key: 'rlimitAs', rest: false, parse: (v) => setting('rlimitAs', parseSize('rlimit-as', v)) },
  { name: 'rlimit-cpu', kind: 'setting', key: 'rlimitCpu', rest: false, parse: (v) => setting('rlimitCpu', parseRlimit('rlimit-cpu', v, ' of seconds')) },
  { name: 'rlimit-nofile', kind: 'setting', key: 'rlimitNofile', rest: false, parse: (v) => setting('rlimitNofile', parseRlimit('rlimit-nofile', v, '')) },
  { name: 'balance', kind: 'setting', key: 'balance', rest: false, parse: (v) => setting('balance', parseBalance(v)) },
  { name: 'loglevel', kind: 'setting', key: 'loglevel', rest: false, parse: (v) => setting('loglevel', parseLogLevel(v)) },
  { name: 'send-proxy', kind: 'setting', key: 'sendProxy', rest: false, parse: (v) => setting('sendProxy', parseSendProxy(v)) },
  { name: 'accept-proxy', kind: 'words', key: 'acceptProxy', parse: parseAcceptProxy },
  { name: 'source', kind: 'setting', key: 'source', rest: false, parse: (v) => setting('source', parseSource(v)) },
];

/** The command line's defaults for the settings of every service, from its -a, -t, -v and -w. */
export function cliDefaults(values: { readonly [K in CliSetting]: Settings[K] | null }): Settings {
  const out: Settings = {};
  for (const d of DIRECTIVE_TABLE) {
    if (d.kind !== 'setting' || d.option === undefined) continue;
    const v = values[d.option];
    if (v !== null) Object.assign(out, { [d.option]: v });
  }
  return out;
}

/** The directive names, in the table's order. */
export const DIRECTIVES: readonly string[] = DIRECTIVE_TABLE.map((d) => d.name);

export function directive(name: string): Directive | undefined {
  return DIRECTIVE_TABLE.find((d) => d.name === name);
}
