/**
 * The only module that loads the C++ addon. It checks the ABI version and
 * gives the rest of the code a typed interface. The addon is required:
 * `native()` throws a NativeLoadError when it cannot be loaded, and the
 * command stops at start with exit 70 and that error's message.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PrivilegeCheckError, SysError } from './errors';

export type PumpEnd = 'eof' | 'idle-timeout' | 'reset' | 'error' | 'aborted';

/** Completion record of one forwarded connection. */
export interface PumpResult {
  readonly end: PumpEnd;
  /** Bytes moved client → server. */
  readonly bytesUp: number;
  /** Bytes moved server → client. */
  readonly bytesDown: number;
  readonly durationMs: number;
  /** Which path moved the bytes: `splice` (kernel pipes: any byte went through one) or `copy` (read/write only: the fallback, or a small session under splice-auto). */
  readonly path: 'splice' | 'copy';
  /**
   * For `reset` and `error`: the failed call, its errno as the kernel gave it.
   * Absent for an `error` no call reported (EPOLLERR without a pending socket
   * error, a write that moved nothing): there is no errno to give.
   */
  readonly error?: SysError;
  /** For `reset` and `error`: the side it happened on. */
  readonly side?: 'client' | 'server';
}

export interface PumpRequest {
  /** Client socket fd, owned by the pump from now on (closed by it). */
  readonly client: number;
  /** Upstream socket fd, owned by the pump from now on. */
  readonly server: number;
  /** Idle timeout in ms; 0 = none. Reset by every byte moved either way. */
  readonly idleMs: number;
  /** Use the read/write path from the start (tests, transcripts). */
  readonly copy?: boolean;
  /**
   * splice-auto (default true): each direction copies through a buffer until one read fills it,
   * then splices; false: splice from the first byte (tests of the splice path).
   */
  readonly auto?: boolean;
}

export interface PumpHandle {
  /** Abort the session: both sockets are reset and closed; `done` runs with `aborted`. */
  abort(): void;
  /** Bytes so far and ms since either side last moved data; null once the session has ended. */
  stats(): LiveBytes | null;
}

/** A live session's bytes so far, and how long no byte moved. */
export interface LiveBytes {
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly idleMs: number;
}

/** A fast-path session with a connection number (native serveSessions). */
export interface FastSessionInfo extends LiveBytes {
  readonly id: number;
  readonly client: string;
  /** The service's listen key. */
  readonly service: string;
  readonly phase: 'connecting' | 'forwarding';
  readonly ageMs: number;
}

/** What native/limits.cc counts for a service (a slot), shared by every worker. */
export interface SlotStats {
  readonly live: number;
  /** By REFUSAL: deny, noAllow, perSource, proxy. */
  readonly refused: [number, number, number, number];
  /** Sessions admitted since the slot was given its listen key. */
  readonly sessions: number;
  /** Bytes each way and the summed duration of the sessions that ended. */
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly durationMs: number;
  /** Ended sessions per duration bucket (DURATION_BUCKETS_MS, then one for longer), not cumulative. */
  readonly durations: readonly number[];
  /** Failed connects by the server's place in the group (the first STATS_SERVERS). */
  readonly connectFailed: readonly number[];
}

/** Upper bounds (ms) of native/limits.cc's duration buckets; a last bucket takes the longer ones. */
export const DURATION_BUCKETS_MS = [1, 10, 100, 1000, 10_000, 60_000, 600_000, 3_600_000] as const;
/** Servers of a group whose failed connects are counted one by one. */
export const STATS_SERVERS = 64;

/**
 * What a handler or ACP process gets before its exec (the shape of
 * table/service.ts Sandbox): PR_SET_NO_NEW_PRIVS, and each limit not null
 * as its soft and hard rlimit (never above tcpproxy's own hard limit).
 */
export interface ChildSandbox {
  readonly noNewPrivs: boolean;
  readonly rlimitNproc: number | null;
  readonly rlimitAs: number | null;
  readonly rlimitCpu: number | null;
  readonly rlimitNofile: number | null;
}

export interface SockAddress {
  readonly address: string;
  readonly port: number;
}

export interface SockName {
  readonly local: SockAddress;
  readonly peer: SockAddress | null;
  readonly stream: boolean;
  readonly listening: boolean;
}

/** A forwarding service compiled for the native fast path (src/forward/fast.ts). */
export interface FastService {
  /** The listen key, for messages. */
  readonly key: string;
  /** The accept line after `connection N: client C on L`: `: server H:P, uid U gid G`. */
  readonly acceptTail: string;
  /** The servers of the group, in the order written. */
  readonly servers: readonly FastServer[];
  readonly balance: 'first' | 'roundrobin' | 'source';
  /** The PROXY header version written to each upstream first; 0: none. */
  readonly sendProxy: 0 | 1 | 2;
  /** The local address upstream connections bind to; null: the kernel's choice. */
  readonly source: string | null;
  /** accept-proxy: who may send the header, as allow rules (empty: anyone); null: no header. */
  readonly acceptProxy: readonly AccessRule[] | null;
  readonly idleMs: number;
  /** The service's place in the shared limits (the master numbers listen keys). */
  readonly slot: number;
  /** The access lists, longest prefix first or not: native finds the longest match. */
  readonly rules: readonly AccessRule[];
  /** TCP keepalive on both sockets. */
  readonly keepalive: boolean;
  /** Limits, 0: none. */
  readonly maxconn: number;
  readonly perSource: number;
  readonly rate: number;
  /** `loglevel`: 0 quiet (no start and end lines), 1 normal, 2 verbose (also the line of the upstream connect). */
  readonly logLevel: 0 | 1 | 2;
}

/** One upstream of a fast-path group. */
export interface FastServer {
  /** An IP literal. */
  readonly address: string;
  readonly port: number;
  /** `server H:P`, before a connect error. */
  readonly text: string;
}

/** One prefix of an allow or deny list, as native matches it; `text` is what a refusal logs (`deny 10.0.0.0/8`). */
export interface AccessRule {
  readonly allow: boolean;
  readonly address: string;
  readonly bits: number;
  readonly text: string;
}

/**
 * What native/proxy.cc makes of the start of a stream (proxyParse): `more`
 * while the bytes are a valid beginning of a PROXY header (v1 or v2) that
 * is not complete, `invalid` with the reason in words for a log line, or
 * `ok`. Addresses are IP text, an IPv4-mapped IPv6 one shown as IPv4.
 */
export type ProxyParsed = { readonly status: 'more' } | ProxyInvalid | ProxyHeaderOk;

export interface ProxyInvalid {
  readonly status: 'invalid';
  /** `no PROXY header`, `malformed PROXY v1 header: bad source port`, `PROXY v2 header: unknown version 3`, ... */
  readonly reason: string;
}

export interface ProxyHeaderOk {
  readonly status: 'ok';
  readonly version: 1 | 2;
  /** Bytes of the header, v2 TLVs included: the client's own bytes start after them. */
  readonly length: number;
  /** v1 UNKNOWN, v2 LOCAL, or a v2 header without an IP stream address (UNSPEC, UNIX, DGRAM): keep the real peer. */
  readonly local: boolean;
  /** The client, as the balancer saw it; null when `local`. */
  readonly source: SockAddress | null;
  /** The address the client connected to; null when `local`. */
  readonly destination: SockAddress | null;
}

/** The end of a proxyRead: the header, why there is none, or no complete header within the time. */
export type ProxyReadResult = ProxyInvalid | ProxyHeaderOk | { readonly status: 'timeout' };

/** Why a client was refused, as native/limits.h counts it. */
export const REFUSAL = { deny: 0, noAllow: 1, perSource: 2, proxy: 3 } as const;
export type Refusal = (typeof REFUSAL)[keyof typeof REFUSAL];

export interface Addon {
  readonly abiVersion: number;
  init(sysError: typeof SysError, checkError: typeof PrivilegeCheckError): void;
  dupCloexec(fd: number): number;
  close(fd: number): void;
  /** Sets O_NONBLOCK (a child with the socket on its stdio cleared it). */
  setNonblock(fd: number): void;
  /** Marks every fd >= first close-on-exec. */
  cloexecFrom(first: number): void;
  /** dup2(fd, target) for target 0, 1 or 2. */
  dupOnto(fd: number, target: number): void;
  /** Local and peer address of an IP socket; null when fd is not one. */
  sockName(fd: number): SockName | null;
  /**
   * setgroups(0), setresgid, setresuid; throws a SysError when a call fails
   * and a PrivilegeCheckError when the ids are not those asked for or root
   * can be regained.
   */
  dropPrivileges(uid: number, gid: number): void;
  /**
   * Replaces the process: stdio kept (O_NONBLOCK cleared), other fds closed,
   * signals reset, in `sandbox` (a session of its own without a controlling
   * terminal, no-new-privs, rlimits). Returns only by throwing.
   */
  execve(file: string, argv: readonly string[], env: readonly string[], sandbox: ChildSandbox): never;
  /** prctl(PR_SET_DUMPABLE, 0), read back; a PrivilegeCheckError ('dumpable') if it did not take. */
  nonDumpable(): void;
  openLog(ident: string, facility: number): void;
  /** Never blocks: a line syslog does not take at once is dropped and counted (and reported with the next one that goes out). */
  syslog(priority: number, line: string): void;
  syslogDropped(): number;
  /** 0 when /dev/log takes a connection now, else the errno of the attempt. */
  syslogProbe(): number;
  /**
   * One sd_notify(3) datagram to `path` ($NOTIFY_SOCKET: a path, or '@' and
   * an abstract name), never blocking; a SysError (sendto) when it could not
   * go out.
   */
  sdNotify(path: string, text: string): void;
  /**
   * The user `name` in the system's user database (getpwnam_r, through
   * nsswitch): its uid and primary gid; null when there is no such user; a
   * SysError when the database cannot be read.
   */
  userByName(name: string): { uid: number; gid: number } | null;
  /** The group `name` in the system's group database (getgrnam_r): its gid, or null; a SysError as userByName. */
  groupByName(name: string): number | null;
  /**
   * TCP keepalive with tcpproxy's timing (native/addon.h: about 7 minutes to declare a peer dead);
   * `on` false turns it off. On a listening socket: what the sockets accepted from it start with.
   */
  setKeepalive(fd: number, on?: boolean): void;
  /**
   * A listening TCP socket (SO_REUSEADDR, SO_REUSEPORT, non-blocking,
   * close-on-exec) on an IP literal, or on the dual-stack wildcard for null.
   */
  listenTcp(address: string | null, port: number, backlog: number): number;
  /**
   * The worker's fast path (native/serve.cc). `serveInit` once, with the
   * callback that gets the log lines (first character: the syslog
   * priority) once per loop turn, with the live fast-path sessions and the
   * connection numbers left.
   */
  serveInit(onBatch: (lines: string[], live: number, idsLeft: number) => void): void;
  /** Accepts on a listening fd (owned from now on) for a compiled service; returns a handle. */
  serveListen(fd: number, service: FastService): number;
  serveUpdate(handle: number, service: FastService): void;
  /** Stops accepting and closes the fd; live sessions go on. */
  serveClose(handle: number): void;
  /** Connection numbers first … first + count - 1 for the fast path. */
  serveIds(first: number, count: number): void;
  /** Resets every fast-path session. */
  serveAbortAll(): void;
  serveStats(): { live: number; listeners: number; idsLeft: number };
  /** The fast path's sessions that have a connection number (connecting or forwarding). */
  serveSessions(): FastSessionInfo[];
  /** Per fast-path listener of a group: the places of the servers this worker has marked down. */
  serveHealth(): { service: string; down: number[] }[];
  /** The log lines not yet delivered by a batch, taken now. */
  serveTake(): string[];
  /**
   * Starts `file` (a path) with `argv` and `env` ("K=V") by clone(CLONE_VM
   * | CLONE_VFORK) and execve: fd 0 `stdin`, fd 1 `stdout` (-1: /dev/null;
   * a socket is made blocking first), fd 2 a new pipe whose read end is
   * returned, no other fd, signals at their defaults, a session and process
   * group of its own without a controlling terminal, `sandbox` applied.
   * `onExit` runs once the child is reaped (through a pidfd on the loop).
   * Throws a SysError `spawn` with the errno of the step that failed,
   * usually the exec's (ENOENT, EACCES, ENOEXEC...).
   */
  spawnChild(
    file: string,
    argv: readonly string[],
    env: readonly string[],
    stdin: number,
    stdout: number,
    sandbox: ChildSandbox,
    onExit: (r: { code?: number; signal?: number; error?: SysError }) => void,
  ): { pid: number; stderr: number };
  pump(req: PumpRequest, done: (r: PumpResult) => void): PumpHandle;
  /**
   * The limits shared by all workers (native/limits.cc): the master creates
   * the region (an fd to pass on), each worker attaches with its index, the
   * master forgets a dead worker's places. A slot is a service.
   */
  limitsCreate(): number;
  limitsAttach(fd: number, worker: number): void;
  /**
   * Takes back a dead worker's places; never blocks. False when the table's lock was held
   * (by a worker that may be stopped): its live-session places are back, its per-source
   * entries not yet, and the call must be repeated (the index kept unused until it returns true).
   */
  limitsForget(worker: number): boolean;
  /** Takes the table's lock and keeps it until this process ends: for tests only. */
  limitsHoldLock(): void;
  /** A live-session place under `maxconn` (0: none); false: the service is full. */
  limitEnter(slot: number, maxconn: number): boolean;
  limitLeave(slot: number): void;
  /** A rate token: 0, or the ms until the next one. */
  rateTake(slot: number, rate: number): number;
  /** Whether a rate token is there, without taking it: 0, or the ms until the next one. */
  ratePeek(slot: number, rate: number): number;
  sourceEnter(slot: number, client: string, max: number): boolean;
  sourceLeave(slot: number, client: string): void;
  refusalCount(slot: number, reason: Refusal): void;
  /** The shared budget of refusal lines (10 a second a service): false once spent (the refusal is then counted for the summary). */
  refusalLogAllowed(slot: number): boolean;
  /**
   * The refusals counted for the summary line, shared by all workers and
   * taken by one process a second: the number to log now; 0: none left; -1:
   * some left, but another process had this second's turn (ask again later).
   * `force` takes them whatever the second (a listener that closes).
   */
  refusalSummary(slot: number, force: boolean): number;
  limitStats(slot: number): SlotStats;
  /** A slot given to a new listen key starts its counts again. */
  limitsSlotReset(slot: number): void;
  /** The live sessions worker `worker` holds, over every service. */
  limitsWorkerLive(worker: number): number;
  /** A session of the slot's service begins (the session code's; the fast path counts its own). */
  statsSession(slot: number): void;
  /** A session of the slot's service ended (the session code's; the fast path counts its own). */
  statsEnd(slot: number, bytesUp: number, bytesDown: number, durationMs: number): void;
  /** A connect to server `server` (its place in the group) failed. */
  statsConnectFailed(slot: number, server: number): void;
  /** The native access-list matcher: null (admitted) or the refusing rule's text. */
  accessCheck(rules: readonly AccessRule[], client: string): string | null;
  /** Parses the start of a stream for a PROXY header (never more than the header is looked at). */
  proxyParse(buf: Uint8Array): ProxyParsed;
  /**
   * The header tcpproxy sends upstream (send-proxy): v1 `PROXY TCP4|TCP6 ...\r\n` or v2 binary
   * with the PROXY command. IPv4-mapped addresses count as IPv4; when the families still differ
   * the IPv4 one is written IPv4-mapped in a TCP6 header. Throws a TypeError for a version other
   * than 1 or 2, an address that is not an IP literal or a port outside 0-65535.
   */
  proxyBuild(version: 1 | 2, source: SockAddress, destination: SockAddress): Buffer;
  /**
   * Reads a PROXY header from a socket on the loop, never a byte past it: sets O_NONBLOCK on `fd`
   * (left so), polls it, and calls `done` once, never from inside this call, with the header, the
   * reason there is none (the parser's, `closed before the end of the PROXY header`, `recv
   * ECONNRESET`...) or `timeout` after `timeoutMs`. The fd stays the caller's and open; after
   * `ok` the next byte read from it is the first after the header. Throws a SysError when the fd
   * cannot be polled (fcntl, uv_poll_init).
   */
  proxyRead(fd: number, timeoutMs: number, done: (r: ProxyReadResult) => void): void;
  /** Live sessions, pipes in use and idle in the pool, the big (1 MiB) pipes of streams, poll wake-ups: for tests and diagnostics. */
  pumpStats(): { sessions: number; pipesBusy: number; pipesIdle: number; pipesBig: number; wakeups: number };
}

const ABI_VERSION = 15;

/** The addon could not be loaded: the message says what failed and how to rebuild. */
export class NativeLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NativeLoadError';
  }
}

const REBUILD = 'rebuild it with "npm rebuild tcpproxy" (needs g++, make and python3)';

let cached: Addon | undefined;

/** The addon file: build/Release/tcpproxy.node of the package (Debug with TCPPROXY_DEBUG_NATIVE=1). */
export function addonPath(): string {
  const kind = process.env['TCPPROXY_DEBUG_NATIVE'] === '1' ? 'Debug' : 'Release';
  // src/sys/native.ts (ts-jest) sits two levels below the package root, dist/src/sys/native.js three.
  const roots = [path.join(__dirname, '..', '..'), path.join(__dirname, '..', '..', '..')];
  const files = roots.map((r) => path.join(r, 'build', kind, 'tcpproxy.node'));
  return files.find((f) => fs.existsSync(f)) ?? (files[files.length - 1] as string);
}

/** The addon; throws NativeLoadError when it is missing, broken or stale. */
export function native(): Addon {
  if (cached) return cached;
  const file = addonPath();
  let addon: Addon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require(file) as Addon;
  } catch (err) {
    const first = (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
    // dlopen's text starts with the file name again.
    const why = first.startsWith(`${file}: `) ? first.slice(file.length + 2) : first;
    throw new NativeLoadError(`cannot load the native addon ${file}: ${why}; ${REBUILD}`);
  }
  if (addon.abiVersion !== ABI_VERSION) {
    throw new NativeLoadError(
      `the native addon ${file} is stale (interface ${addon.abiVersion}, expected ${ABI_VERSION}); ${REBUILD}`,
    );
  }
  addon.init(SysError, PrivilegeCheckError);
  cached = addon;
  return addon;
}
