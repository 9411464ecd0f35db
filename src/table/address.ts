/**
 * Parsing of ports and `host[:port]` / `[iface:]port` strings, shared by the
 * command line and the config file. Pure: a port name is looked up through
 * the resolver given (normally /etc/services, see services-db.ts).
 */
import { isIP } from 'node:net';
import { quote } from '../sys/text';

export type PortResolver = (name: string) => number | null;

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

/** A port number (1-65535) or a service name from the resolver. */
export function parsePort(text: string, resolve: PortResolver): Parsed<number> {
  if (text === '') return { ok: false, error: 'empty port' };
  if (/^[0-9]+$/.test(text)) {
    const n = Number(text);
    if (n < 1 || n > 65535) return { ok: false, error: `port ${text} is out of range (1-65535)` };
    return { ok: true, value: n };
  }
  if (/^[A-Za-z][A-Za-z0-9._+-]*$/.test(text)) {
    const n = resolve(text);
    if (n === null) return { ok: false, error: `unknown service name ${quote(text)}` };
    return { ok: true, value: n };
  }
  return { ok: false, error: `invalid port ${quote(text)}` };
}

/** Normalises an IP literal (IPv6 to its compressed lower-case form); null if not an IP. */
export function normalizeIp(text: string): string | null {
  const bare = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  const v = isIP(bare);
  if (v === 4) return bare.split('.').map((p) => String(Number(p))).join('.');
  if (v === 6) {
    try {
      return new URL(`http://[${bare}]/`).hostname.slice(1, -1);
    } catch {
      return null;
    }
  }
  return null;
}

/** Splits `host[:port]`, `[v6]`, `[v6]:port`; a bare IPv6 literal has no port. */
export function splitHostPort(text: string): { host: string; port: string | null } | null {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return null;
    const host = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (rest === '') return { host, port: null };
    if (!rest.startsWith(':')) return null;
    return { host, port: rest.slice(1) };
  }
  const first = text.indexOf(':');
  if (first < 0) return { host: text, port: null };
  if (text.indexOf(':', first + 1) >= 0) return { host: text, port: null }; // bare IPv6
  return { host: text.slice(0, first), port: text.slice(first + 1) };
}

export interface ServerAddress {
  readonly host: string;
  /** null: the port the client connected to. */
  readonly port: number | null;
}

/** `host[:port]` of a `server` directive or the server argument. */
export function parseServer(text: string, resolve: PortResolver): Parsed<ServerAddress> {
  const hp = splitHostPort(text);
  if (!hp || hp.host === '') return { ok: false, error: `invalid server ${quote(text)}: expected host[:port]` };
  const ip = normalizeIp(hp.host);
  if (ip === null && !/^[A-Za-z0-9._-]+$/.test(hp.host)) {
    return { ok: false, error: `invalid server host ${quote(hp.host)}` };
  }
  const host = ip ?? hp.host.toLowerCase();
  if (hp.port === null) return { ok: true, value: { host, port: null } };
  const port = parsePort(hp.port, resolve);
  if (!port.ok) return { ok: false, error: `server ${quote(text)}: ${port.error}` };
  return { ok: true, value: { host, port: port.value } };
}

export interface BindAddress {
  /** Normalised IP literal, or null for every interface. */
  readonly iface: string | null;
  readonly port: number;
}

/** `[interface:]port` of `-b`; the interface must be an IP literal (`[::1]:port` for IPv6). */
export function parseBind(text: string, resolve: PortResolver): Parsed<BindAddress> {
  const hp = splitHostPort(text);
  let ifaceText: string | null;
  let portText: string;
  if (hp === null) return { ok: false, error: `invalid address ${quote(text)}: expected [interface:]port` };
  if (hp.port === null) {
    ifaceText = null;
    portText = hp.host;
  } else {
    ifaceText = hp.host;
    portText = hp.port;
  }
  let iface: string | null = null;
  if (ifaceText !== null) {
    iface = normalizeIp(ifaceText);
    if (iface === null) return { ok: false, error: `invalid interface ${quote(ifaceText)}: expected an IP address` };
  }
  const port = parsePort(portText, resolve);
  if (!port.ok) return { ok: false, error: port.error };
  return { ok: true, value: { iface, port: port.value } };
}

/** The address as it appears in a log line: IPv6 in brackets. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A socket's local or peer address without the IPv4-mapped prefix of a dual-stack socket. */
export function plainAddress(addr: string | undefined): string {
  if (addr === undefined) return '';
  return addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4 ? addr.slice(7) : addr;
}
