/**
 * The service table: what tcpproxy does for a connection on (local address,
 * local port). Built from the config file or the command line; looked up by
 * standalone mode for each accepted connection and by inetd mode for fd 0.
 */
import { formatHostPort, normalizeIp, parseServer, plainAddress, type Parsed, type PortResolver, type ServerAddress } from './address';
import { quote } from '../sys/text';

export type Target =
  /** One or more upstreams (`server A B C`), in the order written; `balance` picks the order tried. */
  | { readonly kind: 'server'; readonly servers: readonly ServerAddress[] }
  /** A request handler: the command line split on blanks, argv[0] as written. */
  | { readonly kind: 'exec'; readonly argv: readonly string[] };

/** Where a service was defined, for messages. */
export interface Origin {
  readonly file: string;
  readonly line: number;
}

/**
 * A CIDR prefix of an access list, canonical: the network address as
 * normalizeIp gives it (host bits zero) and its length, `10.0.0.0/8`,
 * `2001:db8::/32`, `127.0.0.7/32`.
 */
export interface Prefix {
  readonly family: 4 | 6;
  readonly address: string;
  readonly bits: number;
}

/** The access lists and limits of a service (`allow`, `deny`, `maxconn`, `per-source`, `rate`). */
export interface Access {
  readonly allow: readonly Prefix[];
  readonly deny: readonly Prefix[];
  /** Live sessions of the service at most; null: no limit. */
  readonly maxconn: number | null;
  /** Live sessions from one client address at most; null: no limit. */
  readonly perSource: number | null;
  /** New sessions per second at most (token bucket, burst the same); null: no limit. */
  readonly rate: number | null;
}

/**
 * What a handler or ACP process is allowed (`no-new-privs`, `rlimit-*`),
 * applied in the child before exec. Limits null: inherited.
 */
export interface Sandbox {
  /** PR_SET_NO_NEW_PRIVS: setuid and file capabilities do not raise privileges. */
  readonly noNewPrivs: boolean;
  readonly rlimitNproc: number | null;
  /** Bytes. */
  readonly rlimitAs: number | null;
  /** Seconds. */
  readonly rlimitCpu: number | null;
  readonly rlimitNofile: number | null;
}

export const DEFAULT_SANDBOX: Sandbox = { noNewPrivs: true, rlimitNproc: null, rlimitAs: null, rlimitCpu: null, rlimitNofile: null };

/** The bounds of a service beyond the access limits (`handler-timeout`, `keepalive`, `writefile-max`). */
export interface Bounds {
  /** Seconds a handler may run before its process group is killed; 0: no bound. */
  readonly handlerTimeoutSec: number;
  /** TCP keepalive on the client and upstream sockets. */
  readonly keepalive: boolean;
  /** Bytes a connection's transcript may grow to, then recording stops (logged). */
  readonly writefileMax: number;
}

/** 100 MiB a transcript. */
export const DEFAULT_WRITEFILE_MAX = 100 * 1024 * 1024;
export const DEFAULT_BOUNDS: Bounds = { handlerTimeoutSec: 0, keepalive: true, writefileMax: DEFAULT_WRITEFILE_MAX };

/**
 * The live sessions a service of handlers or ACPs may have when its config
 * sets no `maxconn`: each session is a process, so an unconfigured service
 * is bounded too.
 */
export const DEFAULT_PROCESS_MAXCONN = 256;

/** The maxconn in force: the configured one, else the default for a service that starts processes, else none. */
export function maxconnOf(s: Service): number | null {
  if (s.access.maxconn !== null) return s.access.maxconn;
  return s.target.kind === 'exec' || s.acp !== null ? DEFAULT_PROCESS_MAXCONN : null;
}

/**
 * `loglevel`: `quiet` logs only the warnings and errors about a service's
 * connections (refusals among them); `normal` the start and end of each
 * connection as well; `verbose` also the upstream address each connection
 * was connected to and the local address it was connected from.
 */
export type LogLevel = 'quiet' | 'normal' | 'verbose';
export const LOG_LEVELS: readonly LogLevel[] = ['quiet', 'normal', 'verbose'];
export const DEFAULT_LOGLEVEL: LogLevel = 'normal';

/** The order a connection tries the servers of a group in (`balance`). */
export type Balance = 'first' | 'roundrobin' | 'source';

/** The PROXY protocol and the upstream side of a service (`send-proxy`, `accept-proxy`, `balance`, `source`). */
export interface Proxying {
  /** The PROXY header version written to the upstream before any client byte; null: none. */
  readonly sendProxy: 1 | 2 | null;
  /**
   * Connections begin with a PROXY v1 or v2 header, sent only by these
   * sources (empty: by any); null: no header is read.
   */
  readonly acceptProxy: readonly Prefix[] | null;
  readonly balance: Balance;
  /** The local address upstream connections are bound to (normalised IP literal); null: the kernel's choice. */
  readonly source: string | null;
}

export const DEFAULT_PROXYING: Proxying = { sendProxy: null, acceptProxy: null, balance: 'first', source: null };

export const NO_ACCESS_RULES: Access = { allow: [], deny: [], maxconn: null, perSource: null, rate: null };

export interface Service {
  readonly port: number;
  /** Normalised IP literal, or null: any interface. */
  readonly iface: string | null;
  readonly target: Target;
  /** Access control program command line, or null. */
  readonly acp: string | null;
  /** Idle timeout in seconds; 0 = none. */
  readonly timeoutSec: number;
  /** Prefix of the handler's environment variables. */
  readonly prefix: string;
  /** Transcript base name, or null. */
  readonly writefile: string | null;
  /** Configured ids (null: the default for the invoking user). */
  readonly uid: number | null;
  readonly gid: number | null;
  readonly access: Access;
  readonly sandbox: Sandbox;
  readonly bounds: Bounds;
  readonly proxy: Proxying;
  /** Which of the lines about its connections are logged (`loglevel`). */
  readonly loglevel: LogLevel;
  readonly origin: Origin;
  /** Where the `server`/`exec` and the `acp` in force were written, when not at `origin`. */
  readonly targetOrigin?: Origin;
  readonly acpOrigin?: Origin;
  /** Where the `source` in force was written (proxy.source not null). */
  readonly sourceOrigin?: Origin;
}

export const DEFAULT_TIMEOUT_SEC = 60;
export const DEFAULT_PREFIX = 'PROXY_';

/**
 * The service for a connection: the entry of the exact local address first,
 * then the port's any-interface entry; null when neither exists.
 */
export function lookupService(services: readonly Service[], localAddress: string, localPort: number): Service | null {
  const addr = normalizeIp(plainAddress(localAddress)) ?? localAddress;
  let any: Service | null = null;
  for (const s of services) {
    if (s.port !== localPort) continue;
    if (s.iface === addr) return s;
    if (s.iface === null && any === null) any = s;
  }
  return any;
}

/**
 * What to listen on: one socket per service, its interface and port (the
 * dual-stack wildcard for an any-interface entry), in table order.
 */
export function listenAddresses(services: readonly Service[]): { iface: string | null; port: number }[] {
  const seen = new Set<string>();
  const out: { iface: string | null; port: number }[] = [];
  for (const s of services) {
    const key = listenKey(s);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ iface: s.iface, port: s.port });
  }
  return out;
}

/** The name of a service's listening socket: `*:25`, `127.0.0.2:25`, `[::1]:25`. */
export function listenKey(a: { readonly iface: string | null; readonly port: number }): string {
  return a.iface === null ? `*:${a.port}` : formatHostPort(a.iface, a.port);
}

/** A short description for log lines: `server host:port` or `exec /path`. */
export function describeTarget(t: Target): string {
  if (t.kind === 'exec') return `exec ${t.argv.join(' ')}`;
  return `server ${t.servers.map(formatServer).join(' ')}`;
}

/** `host`, `host:port`, `[::1]:port`: a server as written in a config. */
export function formatServer(s: ServerAddress): string {
  const h = s.host.includes(':') ? `[${s.host}]` : s.host;
  return s.port === null ? h : `${h}:${s.port}`;
}

/** Splits a handler or ACP command line on runs of blanks: no shell, no quoting. */
export function splitCommand(text: string): string[] {
  return text.split(/[ \t]+/).filter((w) => w !== '');
}

/** The most servers a group (`server A B C`, several server arguments) may list. */
export const MAX_SERVERS = 64;

/** A target, or every problem with its words in word order. */
export type ParsedTarget = { ok: true; value: Target } | { ok: false; errors: string[] };

/**
 * The words of a `server` value or the command line's server arguments: a
 * program when the first starts with `/` or `.` (the rest of the words are
 * its arguments), else a group of one or more `host[:port]`, in the order
 * written. Every bad word, a word listed twice (the same host and port) and
 * more than MAX_SERVERS words are reported, in that order.
 */
export function parseTargetWords(words: readonly string[], resolve: PortResolver): ParsedTarget {
  const first = (words[0] ?? '').trim();
  if (first.startsWith('/') || first.startsWith('.')) {
    return { ok: true, value: { kind: 'exec', argv: words.flatMap((w) => splitCommand(w)) } };
  }
  const errors: string[] = [];
  const servers: ServerAddress[] = [];
  const seen = new Set<string>();
  for (const raw of words.length === 0 ? [''] : words) {
    const word = raw.trim();
    if (/[ \t]/.test(word)) {
      errors.push(`invalid server ${quote(word)}: expected host[:port]`);
      continue;
    }
    const server = parseServer(word, resolve);
    if (!server.ok) {
      errors.push(server.error);
      continue;
    }
    const key = formatServer(server.value);
    if (seen.has(key)) errors.push(`server ${quote(word)} is listed twice`);
    seen.add(key);
    servers.push(server.value);
  }
  if (words.length > MAX_SERVERS) errors.push(`"server" takes at most ${MAX_SERVERS} servers`);
  return errors.length > 0 ? { ok: false, errors } : { ok: true, value: { kind: 'server', servers } };
}

/**
 * A server argument or `server` value as one text: split on blanks, then
 * parseTargetWords; the first problem only.
 */
export function parseTarget(text: string, resolve: PortResolver): Parsed<Target> {
  const r = parseTargetWords(splitCommand(text), resolve);
  return r.ok ? r : { ok: false, error: r.errors[0] ?? 'invalid server' };
}
