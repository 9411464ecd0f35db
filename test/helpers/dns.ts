/**
 * A DNS server over UDP on loopback for the name lookup tests: it answers
 * each question with what the test's function gives (PTR, A, AAAA records,
 * NXDOMAIN) or, for 'silent', never answers, as a reverse zone whose
 * servers are unreachable. Every question is recorded. Only what c-ares
 * and glibc send is understood: one question per query; the rest of the
 * query (an EDNS record) is ignored.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';

export type DnsRecord = { readonly type: 'PTR'; readonly name: string } | { readonly type: 'A' | 'AAAA'; readonly address: string };

export interface DnsQuestion {
  /** Lower case, without the final dot: `7.2.0.192.in-addr.arpa`. */
  readonly name: string;
  readonly type: string;
}

/** The records for a question; null: NXDOMAIN; 'silent': no answer at all. */
export type DnsAnswerer = (q: DnsQuestion) => readonly DnsRecord[] | null | 'silent';

export interface DnsServer {
  readonly host: string;
  readonly port: number;
  /** `127.0.0.1:5353`, for Resolver.setServers. */
  readonly address: string;
  readonly questions: DnsQuestion[];
  close(): Promise<void>;
}

const TYPES: Readonly<Record<number, string>> = { 1: 'A', 12: 'PTR', 28: 'AAAA' };
const TYPE_CODES: Readonly<Record<DnsRecord['type'], number>> = { A: 1, PTR: 12, AAAA: 28 };

/** `a.b` → the wire form of the name (length-prefixed labels, then 0). */
function encodeName(name: string): Buffer {
  const labels = name.replace(/\.$/, '').split('.').filter((l) => l !== '');
  return Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([Buffer.byteLength(l)]), Buffer.from(l)])), Buffer.from([0])]);
}

function encodeAddress(address: string): Buffer {
  if (net.isIPv4(address)) return Buffer.from(address.split('.').map(Number));
  if (!net.isIPv6(address) || address.includes('.')) throw new Error(`dnsServer: not a plain IPv6 address: ${address}`);
  const groups = (s: string): string[] => (s === '' ? [] : s.split(':'));
  const [head = '', tail] = address.split('::');
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function rdata(r: DnsRecord): Buffer {
  return r.type === 'PTR' ? encodeName(r.name) : encodeAddress(r.address);
}

/** The question of a query and where it ends, or null if it cannot be read. */
function parseQuestion(msg: Buffer): { q: DnsQuestion; end: number } | null {
  if (msg.length < 12 || msg.readUInt16BE(4) !== 1) return null;
  const labels: string[] = [];
  let at = 12;
  for (;;) {
    const len = msg[at];
    if (len === undefined || len > 63) return null;
    at++;
    if (len === 0) break;
    labels.push(msg.subarray(at, at + len).toString('latin1'));
    at += len;
  }
  if (at + 4 > msg.length) return null;
  const type = msg.readUInt16BE(at);
  return { q: { name: labels.join('.').toLowerCase(), type: TYPES[type] ?? String(type) }, end: at + 4 };
}

function reply(query: Buffer, end: number, records: readonly DnsRecord[] | null): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(query.readUInt16BE(0), 0);
  // QR, the query's RD, RA; rcode 3 (NXDOMAIN) for null.
  header.writeUInt16BE(0x8080 | (query.readUInt16BE(2) & 0x0100) | (records === null ? 3 : 0), 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records?.length ?? 0, 6);
  const answers = (records ?? []).map((r) => {
    const data = rdata(r);
    const rr = Buffer.alloc(12);
    rr.writeUInt16BE(0xc00c, 0); // the question's name
    rr.writeUInt16BE(TYPE_CODES[r.type], 2);
    rr.writeUInt16BE(1, 4); // IN
    rr.writeUInt32BE(60, 6);
    rr.writeUInt16BE(data.length, 10);
    return Buffer.concat([rr, data]);
  });
  return Buffer.concat([header, query.subarray(12, end), ...answers]);
}

/** Starts the server on `host` (default 127.0.0.1), port `port` (default ephemeral). */
export function dnsServer(answer: DnsAnswerer, host = '127.0.0.1', port = 0): Promise<DnsServer> {
  const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  const questions: DnsQuestion[] = [];
  sock.on('message', (msg, peer) => {
    const parsed = parseQuestion(msg);
    if (parsed === null) return;
    questions.push(parsed.q);
    const records = answer(parsed.q);
    if (records === 'silent') return;
    sock.send(reply(msg, parsed.end, records), peer.port, peer.address);
  });
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(port, host, () => {
      const p = sock.address().port;
      resolve({
        host,
        port: p,
        address: net.isIPv6(host) ? `[${host}]:${p}` : `${host}:${p}`,
        questions,
        close: () => new Promise<void>((done) => sock.close(() => done())),
      });
    });
  });
}

/** The PTR name of an IPv4 address: `7.2.0.192.in-addr.arpa`. */
export function ptrName4(address: string): string {
  return `${address.split('.').reverse().join('.')}.in-addr.arpa`;
}

/** The PTR name of an IPv6 address: nibbles in reverse, then `ip6.arpa`. */
export function ptrName6(address: string): string {
  return `${[...encodeAddress(address).toString('hex')].reverse().join('.')}.ip6.arpa`;
}
