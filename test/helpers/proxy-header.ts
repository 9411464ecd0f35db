/**
 * PROXY protocol headers by hand, after the protocol's text
 * (haproxy.org/download/2.6/doc/proxy-protocol.txt) and independent of
 * tcpproxy's own code: builders for the test clients (v1 lines, v2 binary
 * headers, the forms a receiver must refuse) and a parser for the upstream
 * servers that receive a header (from tcpproxy's send-proxy or HAProxy's).
 * The parser is checked against HAProxy's headers by the harness self-check
 * of test/interop, so a test that relies on it relies on something a real
 * implementation agrees with.
 */
import * as net from 'node:net';
import { startServer, StreamHash, type Digest, type ListenOptions, type Upstream } from './servers';

export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

/** The 12 bytes every v2 header starts with. */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** The longest v1 line, CRLF included (the protocol's limit). */
export const V1_MAX = 107;

/** An address in its canonical text: IPv4 as it is, IPv6 in the compressed lower-case form (RFC 5952, as inet_ntop). */
export function canonicalAddress(address: string): string {
  if (net.isIPv4(address)) return address;
  if (!net.isIPv6(address)) throw new Error(`not an IP address: ${address}`);
  // The WHATWG URL parser serialises IPv6 hosts the RFC 5952 way.
  return new URL(`http://[${address}]/`).hostname.slice(1, -1);
}

/** `127.0.0.7:41000`, `[::1]:41000`. */
export function formatEndpoint(e: Endpoint): string {
  return net.isIPv6(e.address) ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number));
}

function ipv6Bytes(address: string): Buffer {
  if (!net.isIPv6(address) || address.includes('.')) throw new Error(`not a plain IPv6 address: ${address}`);
  const groups = (s: string): string[] => (s === '' ? [] : s.split(':'));
  const [head = '', tail] = address.split('::');
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function ipv6Text(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return canonicalAddress(groups.join(':'));
}

function family(src: Endpoint, dst: Endpoint): 4 | 6 {
  const f = net.isIPv4(src.address) ? 4 : 6;
  if ((net.isIPv4(dst.address) ? 4 : 6) !== f) throw new Error('a PROXY header needs source and destination of one family');
  return f;
}

/** `PROXY TCP4 SRC DST SPORT DPORT\r\n` (TCP6 for IPv6). */
export function v1Header(src: Endpoint, dst: Endpoint): Buffer {
  const f = family(src, dst);
  return Buffer.from(`PROXY TCP${f} ${src.address} ${dst.address} ${src.port} ${dst.port}\r\n`, 'latin1');
}

/** `PROXY UNKNOWN\r\n`: the receiver keeps the real peer. */
export function v1Unknown(): Buffer {
  return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
}

/** One v2 TLV: type, 16-bit length, value. */
export function tlv(type: number, value: Buffer): Buffer {
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(value.length, 1);
  return Buffer.concat([head, value]);
}

export interface V2Options {
  /** Default 2; anything else is a version the receiver must refuse. */
  readonly version?: number;
  /** Default 'PROXY'; 'LOCAL' (with no addresses: family UNSPEC) means "keep the real peer". */
  readonly command?: 'PROXY' | 'LOCAL';
  /** TLVs after the addresses (counted in the length). */
  readonly tlvs?: Buffer;
}

/** A v2 header: signature, version/command, family (TCP4/TCP6), length, addresses, ports, TLVs. */
export function v2Header(src: Endpoint | null, dst: Endpoint | null, opts: V2Options = {}): Buffer {
  const version = opts.version ?? 2;
  const command = opts.command ?? 'PROXY';
  let fam = 0x00;
  let addresses = Buffer.alloc(0);
  if (src !== null && dst !== null) {
    const f = family(src, dst);
    fam = f === 4 ? 0x11 : 0x21;
    const bytes = f === 4 ? ipv4Bytes : ipv6Bytes;
    const ports = Buffer.alloc(4);
    ports.writeUInt16BE(src.port, 0);
    ports.writeUInt16BE(dst.port, 2);
    addresses = Buffer.concat([bytes(src.address), bytes(dst.address), ports]);
  } else if (command === 'PROXY') {
    throw new Error('v2Header: a PROXY command needs addresses');
  }
  const tlvs = opts.tlvs ?? Buffer.alloc(0);
  const fixed = Buffer.alloc(4);
  fixed[0] = ((version & 0x0f) << 4) | (command === 'LOCAL' ? 0x0 : 0x1);
  fixed[1] = fam;
  fixed.writeUInt16BE(addresses.length + tlvs.length, 2);
  return Buffer.concat([V2_SIGNATURE, fixed, addresses, tlvs]);
}

/** A v2 LOCAL header (health checks): no addresses; the receiver keeps the real peer. */
export function v2Local(): Buffer {
  return v2Header(null, null, { command: 'LOCAL' });
}

export interface ParsedHeader {
  readonly version: 1 | 2;
  /** v1 `UNKNOWN` and v2 `LOCAL` carry no client; so does a v2 family other than TCP over IPv4/IPv6. */
  readonly command: 'PROXY' | 'LOCAL' | 'UNKNOWN';
  readonly source: Endpoint | null;
  readonly destination: Endpoint | null;
  /** The v2 TLV bytes (empty for v1). */
  readonly tlvs: Buffer;
  /** Bytes the header took. */
  readonly length: number;
}

export type ParseResult = { readonly status: 'more' } | { readonly status: 'invalid'; readonly reason: string } | { readonly status: 'ok'; readonly header: ParsedHeader };

const V1_PREFIX = Buffer.from('PROXY ', 'latin1');

function isPrefixOf(buf: Buffer, whole: Buffer): boolean {
  const n = Math.min(buf.length, whole.length);
  return buf.subarray(0, n).equals(whole.subarray(0, n));
}

function parsePort(text: string): number | null {
  if (!/^(0|[1-9]\d{0,4})$/.test(text)) return null;
  const n = Number(text);
  return n <= 65535 ? n : null;
}

function parseV1(buf: Buffer): ParseResult {
  const end = buf.indexOf('\r\n', 0, 'latin1');
  if (end < 0) return buf.length >= V1_MAX ? { status: 'invalid', reason: 'v1 line too long' } : { status: 'more' };
  if (end + 2 > V1_MAX) return { status: 'invalid', reason: 'v1 line too long' };
  const words = buf.subarray(0, end).toString('latin1').split(' ');
  const length = end + 2;
  if (words[1] === 'UNKNOWN') return { status: 'ok', header: { version: 1, command: 'UNKNOWN', source: null, destination: null, tlvs: Buffer.alloc(0), length } };
  if (words.length !== 6) return { status: 'invalid', reason: `v1: ${words.length} words` };
  const [, proto = '', sa = '', da = '', sp = '', dp = ''] = words;
  const want = proto === 'TCP4' ? 4 : proto === 'TCP6' ? 6 : 0;
  if (want === 0) return { status: 'invalid', reason: `v1: protocol ${proto}` };
  if (net.isIP(sa) !== want || net.isIP(da) !== want) return { status: 'invalid', reason: `v1: addresses ${sa} ${da}` };
  const sport = parsePort(sp);
  const dport = parsePort(dp);
  if (sport === null || dport === null) return { status: 'invalid', reason: `v1: ports ${sp} ${dp}` };
  return {
    status: 'ok',
    header: {
      version: 1,
      command: 'PROXY',
      source: { address: canonicalAddress(sa), port: sport },
      destination: { address: canonicalAddress(da), port: dport },
      tlvs: Buffer.alloc(0),
      length,
    },
  };
}

function parseV2(buf: Buffer): ParseResult {
  if (buf.length < 16) return { status: 'more' };
  const vc = buf[12] ?? 0;
  if (vc >> 4 !== 2) return { status: 'invalid', reason: `v2: version ${vc >> 4}` };
  const cmd = vc & 0x0f;
  if (cmd > 1) return { status: 'invalid', reason: `v2: command ${cmd}` };
  const fam = buf[13] ?? 0;
  const len = buf.readUInt16BE(14);
  if (buf.length < 16 + len) return { status: 'more' };
  const body = buf.subarray(16, 16 + len);
  const length = 16 + len;
  const none = { version: 2 as const, source: null, destination: null, length };
  if (cmd === 0) return { status: 'ok', header: { ...none, command: 'LOCAL', tlvs: Buffer.from(body) } };
  const addrLen = fam === 0x11 ? 12 : fam === 0x21 ? 36 : -1;
  if (addrLen < 0) return { status: 'ok', header: { ...none, command: 'UNKNOWN', tlvs: Buffer.alloc(0) } };
  if (len < addrLen) return { status: 'invalid', reason: `v2: length ${len} for family ${fam}` };
  const a = addrLen === 12 ? 4 : 16;
  const text = (b: Buffer): string => (a === 4 ? [...b].join('.') : ipv6Text(b));
  return {
    status: 'ok',
    header: {
      version: 2,
      command: 'PROXY',
      source: { address: text(body.subarray(0, a)), port: body.readUInt16BE(2 * a) },
      destination: { address: text(body.subarray(a, 2 * a)), port: body.readUInt16BE(2 * a + 2) },
      tlvs: Buffer.from(body.subarray(addrLen)),
      length,
    },
  };
}

/** Parses a header at the start of `buf` (v1 or v2): 'more' while it could still become one. */
export function parseHeader(buf: Buffer): ParseResult {
  if (isPrefixOf(buf, V2_SIGNATURE)) return buf.length < V2_SIGNATURE.length ? { status: 'more' } : parseV2(buf);
  if (isPrefixOf(buf, V1_PREFIX)) return buf.length < V1_PREFIX.length ? { status: 'more' } : parseV1(buf);
  return { status: 'invalid', reason: 'no PROXY signature' };
}

/** What a headerServer saw on one connection. */
export interface HeaderConnection {
  /** The remote address of the connection (who connected: tcpproxy, HAProxy). */
  readonly peer: string;
  /** Set once the header is complete. */
  header: ParsedHeader | null;
  /** Set when what arrived is not a header (the connection is then closed). */
  invalid: string | null;
  /** The bytes after the header. */
  readonly rest: StreamHash;
  /** The digest of the bytes after the header, at the connection's FIN. */
  done: Digest | null;
}

export interface HeaderUpstream extends Upstream {
  readonly connections: HeaderConnection[];
}

/**
 * A loopback server that expects a PROXY header first on every connection
 * and records it, then hashes the rest. With `reply`, it answers as soon as
 * the header is complete with reply(header) and ends its side; without, it
 * ends its side after the client's FIN.
 */
export async function headerServer(opts: ListenOptions & { readonly reply?: (h: ParsedHeader) => string } = {}): Promise<HeaderUpstream> {
  const connections: HeaderConnection[] = [];
  const upstream = await startServer((socket) => {
    const conn: HeaderConnection = { peer: socket.remoteAddress ?? '', header: null, invalid: null, rest: new StreamHash(), done: null };
    connections.push(conn);
    let pending: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      if (conn.header !== null) {
        conn.rest.update(chunk);
        return;
      }
      if (conn.invalid !== null) return;
      pending = Buffer.concat([pending, chunk]);
      const r = parseHeader(pending);
      if (r.status === 'more') return;
      if (r.status === 'invalid') {
        conn.invalid = r.reason;
        socket.destroy();
        return;
      }
      conn.header = r.header;
      const after = pending.subarray(r.header.length);
      if (after.length > 0) conn.rest.update(after);
      if (opts.reply !== undefined) socket.end(opts.reply(r.header));
    });
    socket.on('end', () => {
      conn.done = conn.rest.digest();
      if (opts.reply === undefined) socket.end();
    });
  }, opts);
  return Object.assign(upstream, { connections });
}

/** `SRC DST\n` of a parsed header (formatEndpoint each), or `LOCAL\n` / `UNKNOWN\n` when it carries no client: a headerServer reply. */
export function replyAddresses(h: ParsedHeader): string {
  if (h.source === null || h.destination === null) return `${h.command}\n`;
  return `${formatEndpoint(h.source)} ${formatEndpoint(h.destination)}\n`;
}
