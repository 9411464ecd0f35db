/**
 * Listening sockets of standalone mode. The master binds one socket per
 * service (its interface and port; the dual-stack wildcard for a port's
 * any-interface entry), all with SO_REUSEPORT so that both forms of a port
 * coexist and a reload can switch between them. The master only holds these
 * fds: it never polls or accepts on them; its workers do. Holding them keeps
 * the backlog alive while a worker restarts.
 */
import * as fs from 'node:fs';
import { listenKey, type Service } from '../table/service';
import { formatConfigError, StartError, SysError } from '../sys/errors';
import { native } from '../sys/native';
import { listeningSockets, socketInode } from '../sys/procnet';

export interface ListenAddress {
  /** IP literal, or null for every interface (dual-stack wildcard). */
  readonly iface: string | null;
  readonly port: number;
}

/** One bound listening socket, held by the master. */
export interface Listener extends ListenAddress {
  /** `*:25`, `127.0.0.2:25`, `[::1]:25`: the service's listen key (table/service.ts listenKey). */
  readonly key: string;
  readonly fd: number;
  /** Passed by the service manager (socket activation) rather than bound here. */
  readonly inherited: boolean;
}

const BACKLOG = 511;

/** A listening socket inherited from a service manager (systemd Accept=no), matched by its address. */
export interface InheritedListener {
  readonly fd: number;
  readonly address: string;
  readonly port: number;
}

function isWildcard(address: string): boolean {
  return address === '::' || address === '0.0.0.0';
}

/** The inherited socket for an address: the same port and interface; for "any interface", whatever the manager bound. */
function inheritedFor(addr: ListenAddress, inherited: readonly InheritedListener[]): InheritedListener | undefined {
  const onPort = inherited.filter((l) => l.port === addr.port);
  if (addr.iface !== null) return onPort.find((l) => l.address === addr.iface);
  return onPort.find((l) => isWildcard(l.address)) ?? onPort[0];
}

function describeCode(code: string): string {
  switch (code) {
    case 'EADDRINUSE':
      return 'address already in use';
    case 'EADDRNOTAVAIL':
      return 'no such local address';
    case 'EACCES':
      return 'permission denied';
    default:
      return 'bind failed';
  }
}

/** The lowest port anyone may bind (the sysctl net.ipv4.ip_unprivileged_port_start, for IPv6 too); 1024 when unreadable. */
export function unprivilegedPortStart(): number {
  try {
    const n = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'latin1').trim());
    return Number.isInteger(n) && n >= 0 ? n : 1024;
  } catch {
    return 1024;
  }
}

/** `cannot listen on ADDR: CODE (text)`, and for EACCES on a privileged port what lets one bind it. */
export function cannotListenMessage(addr: ListenAddress, code: string, portStart = unprivilegedPortStart()): string {
  const text = `cannot listen on ${listenKey(addr)}: ${code} (${describeCode(code)})`;
  if (code === 'EACCES' && addr.port > 0 && addr.port < portStart) return `${text}: ports below ${portStart} need root or CAP_NET_BIND_SERVICE`;
  return text;
}

function cannotListen(addr: ListenAddress, code: string): StartError {
  return new StartError(cannotListenMessage(addr, code));
}

/**
 * SO_REUSEPORT would let us share a port with another program of the same
 * uid instead of failing: so look first. A socket not ours on the port
 * conflicts when either side is a wildcard or both are the same address.
 */
function foreignHolder(addrs: readonly ListenAddress[], ours: ReadonlySet<number>): ListenAddress | null {
  const ports = new Set(addrs.filter((a) => a.port !== 0).map((a) => a.port));
  if (ports.size === 0) return null;
  const foreign = listeningSockets().filter((s) => ports.has(s.port) && !ours.has(s.inode));
  for (const a of addrs) {
    const clash = foreign.some(
      (f) => f.port === a.port && (a.iface === null || isWildcard(f.address) || f.address === a.iface),
    );
    if (clash) return a;
  }
  return null;
}

/** Closes listening sockets the master holds (a worker's copies stay open until it lets go of them). */
export function closeListeners(listeners: Iterable<Listener>): void {
  const addon = native();
  for (const l of listeners) addon.close(l.fd);
}

/**
 * The `source` addresses of the forwarding services that cannot be bound
 * (a socket bound to ADDR port 0, closed at once): one line for each
 * distinct address that fails, `tcpproxy:FILE:LINE: cannot bind source
 * address ADDR: CODE (text)` at the first line that gives it, in table
 * order; empty when all can. Exec services ignore `source` and are not
 * checked. For the start of standalone mode and each reload.
 */
export function sourceProblems(services: readonly Service[]): string[] {
  const addon = native();
  const tried = new Set<string>();
  const out: string[] = [];
  for (const s of services) {
    const addr = s.proxy.source;
    if (addr === null || s.target.kind !== 'server' || tried.has(addr)) continue;
    tried.add(addr);
    try {
      addon.close(addon.listenTcp(addr, 0, 1));
    } catch (err) {
      if (!(err instanceof SysError)) throw err;
      const message = `cannot bind source address ${addr}: ${err.code} (${describeCode(err.code)})`;
      out.push(s.sourceOrigin === undefined ? `tcpproxy: ${message}` : formatConfigError({ ...s.sourceOrigin, message }));
    }
  }
  return out;
}

/**
 * Binds every address or none: an inherited socket where the service
 * manager passed one, else a new SO_REUSEPORT socket once the /proc probe
 * has found no other program on the port. `held` are the sockets this
 * daemon already holds (a reload): they do not count as foreign. Throws a
 * StartError naming the address on the first failure; the ones already
 * bound are closed.
 */
export function bindListeners(
  addrs: readonly ListenAddress[],
  held: readonly Listener[] = [],
  inherited: readonly InheritedListener[] = [],
): Listener[] {
  const addon = native();
  const plan = addrs.map((a) => ({ a, from: inheritedFor(a, inherited) }));
  const ours = new Set<number>();
  for (const fd of [...held.map((l) => l.fd), ...inherited.map((l) => l.fd)]) {
    const inode = socketInode(fd);
    if (inode !== null) ours.add(inode);
  }
  const clash = foreignHolder(
    plan.filter((p) => p.from === undefined).map((p) => p.a),
    ours,
  );
  if (clash) throw cannotListen(clash, 'EADDRINUSE');
  const out: Listener[] = [];
  try {
    for (const { a, from } of plan) {
      let fd: number;
      if (from) {
        fd = from.fd;
      } else {
        try {
          fd = addon.listenTcp(a.iface, a.port, BACKLOG);
        } catch (err) {
          if (err instanceof SysError) throw cannotListen(a, err.code);
          throw err;
        }
      }
      // `-b ...:0` asks for an ephemeral port: the listener reports the one the kernel chose.
      const port = a.port !== 0 ? a.port : (addon.sockName(fd)?.local.port ?? 0);
      const bound = { iface: a.iface, port };
      out.push({ ...bound, key: listenKey(bound), fd, inherited: from !== undefined });
    }
  } catch (err) {
    closeListeners(out.filter((l) => !l.inherited));
    throw err;
  }
  return out;
}

/**
 * Listening sockets passed by systemd (`LISTEN_FDS`, `LISTEN_PID`, fds from
 * 3). The variables are removed so that handlers do not inherit them.
 */
export function takeInheritedListeners(
  sockName: (fd: number) => { local: { address: string; port: number }; listening: boolean } | null,
): InheritedListener[] {
  const env = process.env;
  const count = Number(env['LISTEN_FDS'] ?? '0');
  const forUs = Number(env['LISTEN_PID'] ?? '0') === process.pid;
  delete env['LISTEN_FDS'];
  delete env['LISTEN_PID'];
  delete env['LISTEN_FDNAMES'];
  if (!forUs || !Number.isInteger(count) || count <= 0) return [];
  const out: InheritedListener[] = [];
  for (let fd = 3; fd < 3 + count; fd++) {
    const sn = sockName(fd);
    if (sn?.listening) out.push({ fd, address: sn.local.address, port: sn.local.port });
  }
  return out;
}
