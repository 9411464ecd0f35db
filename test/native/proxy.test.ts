// The PROXY protocol in native/proxy.cc: proxyParse (v1 and v2, every
// prefix of a valid header, each class of invalid input with its reason),
// proxyBuild (exact bytes, round trips through the parser) and proxyRead
// over real loopback sockets: it takes the header and not a byte more,
// gives up on garbage, EOF and the timeout, and does not spin while a slow
// client dribbles its header in.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { Worker } from 'node:worker_threads';
import * as fc from 'fast-check';
import {
  addonPath,
  native,
  type Addon,
  type ProxyParsed,
  type ProxyReadResult,
  type SockAddress,
} from '../../src/sys/native';
import { holds, until } from '../helpers/until';

const addon: Addon = native();
const { proxyParse, proxyBuild } = addon;

const SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
const CRLF = Buffer.from('\r\n');
const ep = (address: string, port: number): SockAddress => ({ address, port });

/** A v2 header: signature, ver_cmd, fam, then `body` (its length written before it). */
function v2(verCmd: number, fam: number, body: Buffer, length = body.length): Buffer {
  const head = Buffer.from([verCmd, fam, length >> 8, length & 0xff]);
  return Buffer.concat([SIG, head, body]);
}

function ok(
  version: 1 | 2,
  length: number,
  source: SockAddress | null,
  destination: SockAddress | null,
): ProxyParsed {
  return { status: 'ok', version, length, local: source === null, source, destination };
}

const invalid = (reason: string): ProxyParsed => ({ status: 'invalid', reason });

/** inet_ntop's text of an IP literal, an IPv4-mapped IPv6 one as IPv4 (what the parser shows). */
function canonical(address: string): string {
  const text = new net.SocketAddress({ address, family: net.isIPv6(address) ? 'ipv6' : 'ipv4' }).address;
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/.test(text) ? text.slice(7) : text;
}

describe('proxyParse', () => {
  it.each<[string, Buffer, ProxyParsed]>([
    [
      'v1 TCP4',
      Buffer.from('PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n'),
      ok(1, 45, ep('192.0.2.1', 56324), ep('198.51.100.7', 443)),
    ],
    [
      'v1 TCP6',
      Buffer.from('PROXY TCP6 2001:db8:0:0::1 2001:DB8::2 0 65535\r\n'),
      ok(1, 48, ep('2001:db8::1', 0), ep('2001:db8::2', 65535)),
    ],
    [
      'v1 TCP6 with IPv4-mapped addresses',
      Buffer.from('PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n'),
      ok(1, 37, ep('192.0.2.1', 1), ep('::1', 2)),
    ],
    ['v1 UNKNOWN', Buffer.from('PROXY UNKNOWN\r\n'), ok(1, 15, null, null)],
    [
      'v1 UNKNOWN with anything after it',
      Buffer.from('PROXY UNKNOWN ffff::1 whatever 1 2\r\n'),
      ok(1, 36, null, null),
    ],
    [
      'v2 TCP4',
      v2(0x21, 0x11, Buffer.from('c0000201c6336407dc0401bb', 'hex')),
      ok(2, 28, ep('192.0.2.1', 56324), ep('198.51.100.7', 443)),
    ],
    [
      'v2 TCP6',
      v2(0x21, 0x21, Buffer.from(`20010db8${'00'.repeat(11)}0120010db8${'00'.repeat(11)}0204d20050`, 'hex')),
      ok(2, 52, ep('2001:db8::1', 1234), ep('2001:db8::2', 80)),
    ],
    [
      'v2 TCP4 with TLVs (counted in the length)',
      v2(0x21, 0x11, Buffer.from('7f0000010a0000020001000203000401020304', 'hex')),
      ok(2, 35, ep('127.0.0.1', 1), ep('10.0.0.2', 2)),
    ],
    ['v2 LOCAL', v2(0x20, 0x00, Buffer.alloc(0)), ok(2, 16, null, null)],
    ['v2 LOCAL with an address block', v2(0x20, 0x11, Buffer.alloc(12, 7)), ok(2, 28, null, null)],
    ['v2 PROXY UNSPEC', v2(0x21, 0x00, Buffer.from('0102', 'hex')), ok(2, 18, null, null)],
    ['v2 PROXY UNIX', v2(0x21, 0x31, Buffer.alloc(216)), ok(2, 232, null, null)],
    ['v2 PROXY INET over DGRAM', v2(0x21, 0x12, Buffer.alloc(12, 1)), ok(2, 28, null, null)],
    ['v2 PROXY INET6, UNSPEC transport', v2(0x21, 0x20, Buffer.alloc(36, 1)), ok(2, 52, null, null)],
    ['v2 LOCAL at 4096 bytes in all', v2(0x20, 0x00, Buffer.alloc(4080)), ok(2, 4096, null, null)],
    [
      'v1 of exactly 107 bytes',
      Buffer.from(`PROXY UNKNOWN ${'x'.repeat(91)}\r\n`),
      ok(1, 107, null, null),
    ],
  ])('%s', (_name, header, expected) => {
    expect(proxyParse(header)).toEqual(expected);
    // What follows the header is not looked at.
    expect(proxyParse(Buffer.concat([header, Buffer.from('GET / HTTP/1.0\r\n\r\n')]))).toEqual(expected);
  });

  it.each<[string, Buffer, string]>([
    ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\n'), 'no PROXY header'],
    ['a NUL', Buffer.from([0]), 'no PROXY header'],
    ['v1 prefix broken', Buffer.from('PROXX TCP4'), 'no PROXY header'],
    ['lowercase', Buffer.from('proxy TCP4'), 'no PROXY header'],
    ['v2 signature broken', Buffer.from('0d0a0d0a000d0a5155495420', 'hex'), 'no PROXY header'],
    ['v1 protocol', Buffer.from('PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n'), 'malformed PROXY v1 header: bad protocol'],
    ['v1 protocol, early', Buffer.from('PROXY TCPX'), 'malformed PROXY v1 header: bad protocol'],
    ['v1 protocol lowercase', Buffer.from('PROXY tcp4'), 'malformed PROXY v1 header: bad protocol'],
    ['v1 no protocol', Buffer.from('PROXY \r\n'), 'malformed PROXY v1 header: bad protocol'],
    ['v1 double space', Buffer.from('PROXY  TCP4'), 'malformed PROXY v1 header: bad protocol'],
    [
      'v1 source address',
      Buffer.from('PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n'),
      'malformed PROXY v1 header: bad source address',
    ],
    ['v1 source address, early', Buffer.from('PROXY TCP4 1.2.x'), 'malformed PROXY v1 header: bad source address'],
    [
      'v1 IPv6 source in TCP4',
      Buffer.from('PROXY TCP4 ::1 5.6.7.8 1 2\r\n'),
      'malformed PROXY v1 header: bad source address',
    ],
    [
      'v1 empty source',
      Buffer.from('PROXY TCP4  5.6.7.8 1 2\r\n'),
      'malformed PROXY v1 header: bad source address',
    ],
    [
      'v1 destination address',
      Buffer.from('PROXY TCP6 ::1 1.2.3.4 1 2\r\n'),
      'malformed PROXY v1 header: bad destination address',
    ],
    [
      'v1 source port over 65535',
      Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n'),
      'malformed PROXY v1 header: bad source port',
    ],
    [
      'v1 negative port',
      Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n'),
      'malformed PROXY v1 header: bad source port',
    ],
    [
      'v1 destination port',
      Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 0x10\r\n'),
      'malformed PROXY v1 header: bad destination port',
    ],
    [
      'v1 missing port',
      Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n'),
      'malformed PROXY v1 header: missing fields',
    ],
    ['v1 protocol only', Buffer.from('PROXY TCP4\r\n'), 'malformed PROXY v1 header: missing fields'],
    [
      'v1 trailing space',
      Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n'),
      'malformed PROXY v1 header: too many fields',
    ],
    [
      'v1 CR without LF',
      Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX'),
      'malformed PROXY v1 header: bad destination port',
    ],
    [
      'v1 without CRLF in 107 bytes',
      Buffer.from(`PROXY UNKNOWN ${'x'.repeat(200)}\r\n`),
      'malformed PROXY v1 header: no CRLF within 107 bytes',
    ],
    [
      'v1 of 108 bytes',
      Buffer.from(`PROXY UNKNOWN ${'x'.repeat(92)}\r\n`),
      'malformed PROXY v1 header: no CRLF within 107 bytes',
    ],
    ['v2 version 1', v2(0x11, 0x11, Buffer.alloc(12)), 'PROXY v2 header: unknown version 1'],
    ['v2 version 3, early', Buffer.concat([SIG, Buffer.from([0x31])]), 'PROXY v2 header: unknown version 3'],
    ['v2 command 2', v2(0x22, 0x11, Buffer.alloc(12)), 'PROXY v2 header: unknown command 2'],
    ['v2 command 15, early', Buffer.concat([SIG, Buffer.from([0x2f])]), 'PROXY v2 header: unknown command 15'],
    ['v2 INET block of 11', v2(0x21, 0x11, Buffer.alloc(11)), 'PROXY v2 header: address block too short'],
    ['v2 INET6 block of 35', v2(0x21, 0x21, Buffer.alloc(35)), 'PROXY v2 header: address block too short'],
    ['v2 UNIX block of 215', v2(0x21, 0x31, Buffer.alloc(215)), 'PROXY v2 header: address block too short'],
    [
      'v2 short block, before its bytes',
      v2(0x21, 0x21, Buffer.alloc(0), 20),
      'PROXY v2 header: address block too short',
    ],
    ['v2 family 4', v2(0x21, 0x41, Buffer.alloc(12)), 'PROXY v2 header: unknown address family 4'],
    ['v2 transport 3', v2(0x21, 0x13, Buffer.alloc(12)), 'PROXY v2 header: unknown transport 3'],
    ['v2 of 4097 bytes', v2(0x20, 0x00, Buffer.alloc(4081)), 'PROXY header over 4096 bytes'],
    ['v2 length 65535, before its bytes', v2(0x21, 0x11, Buffer.alloc(0), 0xffff), 'PROXY header over 4096 bytes'],
  ])('%s is invalid', (_name, bytes, reason) => {
    expect(proxyParse(bytes)).toEqual(invalid(reason));
  });

  it('an empty buffer asks for more', () => {
    expect(proxyParse(Buffer.alloc(0))).toEqual({ status: 'more' });
  });

  it('random garbage is never taken for a header', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 200 }), (bytes) => {
        fc.pre(bytes[0] !== 0x50 && bytes[0] !== 0x0d); // neither 'P' nor CR
        expect(proxyParse(bytes)).toEqual(invalid('no PROXY header'));
      }),
      { numRuns: 500 },
    );
  });

  it('argument errors throw TypeError', () => {
    const typeError = expect.objectContaining({ name: 'TypeError' });
    expect(() => proxyParse('PROXY' as unknown as Buffer)).toThrow(typeError);
    expect(() => proxyParse(new Uint16Array(4) as unknown as Buffer)).toThrow(typeError);
  });
});

describe('proxyBuild', () => {
  it.each<[string, 1 | 2, SockAddress, SockAddress, Buffer]>([
    [
      'v1 TCP4',
      1,
      ep('192.0.2.1', 56324),
      ep('198.51.100.7', 443),
      Buffer.from('PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n'),
    ],
    [
      'v1 TCP6',
      1,
      ep('2001:DB8:0:0:0:0:0:1', 1234),
      ep('2001:db8::2', 80),
      Buffer.from('PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\n'),
    ],
    [
      'v1 IPv4-mapped counts as IPv4',
      1,
      ep('::ffff:192.0.2.1', 1),
      ep('10.0.0.1', 0),
      Buffer.from('PROXY TCP4 192.0.2.1 10.0.0.1 1 0\r\n'),
    ],
    [
      'v1 mixed families: TCP6, IPv4 mapped',
      1,
      ep('192.0.2.1', 1),
      ep('::1', 2),
      Buffer.from('PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n'),
    ],
    [
      'v2 TCP4',
      2,
      ep('192.0.2.1', 56324),
      ep('198.51.100.7', 443),
      Buffer.from('0d0a0d0a000d0a515549540a' + '2111000c' + 'c0000201' + 'c6336407' + 'dc04' + '01bb', 'hex'),
    ],
    [
      'v2 TCP6',
      2,
      ep('2001:db8::1', 1234),
      ep('2001:db8::2', 80),
      Buffer.from(
        '0d0a0d0a000d0a515549540a' +
          '21210024' +
          '20010db8000000000000000000000001' +
          '20010db8000000000000000000000002' +
          '04d2' +
          '0050',
        'hex',
      ),
    ],
  ])('%s', (_name, version, source, destination, expected) => {
    expect(proxyBuild(version, source, destination).toString('hex')).toBe(expected.toString('hex'));
  });

  it('argument errors throw TypeError', () => {
    const typeError = expect.objectContaining({ name: 'TypeError' });
    const a = ep('127.0.0.1', 1);
    expect(() => proxyBuild(3 as 1, a, a)).toThrow(typeError);
    expect(() => proxyBuild(1, ep('localhost', 1), a)).toThrow(typeError);
    expect(() => proxyBuild(1, a, ep('127.0.0.1', 65536))).toThrow(typeError);
    expect(() => proxyBuild(2, a, ep('127.0.0.1', 1.5))).toThrow(typeError);
    expect(() => proxyBuild(2, a, null as unknown as SockAddress)).toThrow(typeError);
  });
});

const address = fc.oneof(fc.ipV4(), fc.ipV6());
const endpoint = fc.record({ address, port: fc.integer({ min: 0, max: 65535 }) });
const version = fc.constantFrom<1 | 2>(1, 2);

/** Valid headers of every kind: built ones, v1 UNKNOWN, v2 LOCAL and v2 with TLVs. */
const header = fc.oneof(
  fc.tuple(version, endpoint, endpoint).map(([v, s, d]) => proxyBuild(v, s, d)),
  fc
    .string({ maxLength: 100 })
    .map((s) => Buffer.concat([Buffer.from(`PROXY UNKNOWN ${s.replace(/[\r\n]/g, '')}`).subarray(0, 105), CRLF])),
  fc.uint8Array({ maxLength: 300 }).map((b) => v2(0x20, 0x00, Buffer.from(b))),
  fc.tuple(endpoint, endpoint, fc.uint8Array({ maxLength: 300 })).map(([s, d, tlv]) => {
    const h = Buffer.concat([proxyBuild(2, s, d), tlv]);
    h.writeUInt16BE(h.length - 16, 14);
    return h;
  }),
);

describe('round trips', () => {
  it('proxyParse(proxyBuild(v, s, d)) gives s and d back, both versions, both families', () => {
    fc.assert(
      fc.property(version, endpoint, endpoint, (v, s, d) => {
        const h = proxyBuild(v, s, d);
        expect(proxyParse(h)).toEqual(
          ok(v, h.length, ep(canonical(s.address), s.port), ep(canonical(d.address), d.port)),
        );
      }),
      { numRuns: 2000 },
    );
  });

  it('every prefix of a valid header asks for more; all of it is ok, whatever follows', () => {
    fc.assert(
      fc.property(header, fc.uint8Array({ maxLength: 64 }), (h, trailing) => {
        for (let n = 0; n < h.length; n++) expect(proxyParse(h.subarray(0, n))).toEqual({ status: 'more' });
        const full = proxyParse(Buffer.concat([h, trailing]));
        expect(full).toMatchObject({ status: 'ok', length: h.length });
      }),
      { numRuns: 300 },
    );
  });
});

// ---------------------------------------------------------------- proxyRead

interface Pair {
  /** The accepted side, dup'd out of Node (never read by libuv); closed by cleanup. */
  fd: number;
  client: net.Socket;
}

const opened: Pair[] = [];
let server: net.Server;
const accepted: net.Socket[] = [];

beforeAll(async () => {
  server = net.createServer({ pauseOnConnect: true }, (sock) => accepted.push(sock));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

afterEach(() => {
  for (const p of opened.splice(0)) {
    p.client.destroy();
    addon.close(p.fd);
  }
});

async function pair(): Promise<Pair> {
  const port = (server.address() as net.AddressInfo).port;
  const client = net.connect(port, '127.0.0.1');
  client.setNoDelay(true);
  client.on('error', () => undefined);
  await until(() => accepted.length > 0, 'the connection to be accepted');
  const sock = accepted.shift() as net.Socket;
  const fd = addon.dupCloexec((sock as unknown as { _handle: { fd: number } })._handle.fd);
  sock.destroy();
  const p = { fd, client };
  opened.push(p);
  return p;
}

/** proxyRead as a promise; `calls` counts the callbacks. */
function read(fd: number, timeoutMs = 10000): { result: Promise<ProxyReadResult>; calls: () => number; sync: boolean } {
  let calls = 0;
  let inside = true;
  let sync = false;
  const result = new Promise<ProxyReadResult>((resolve) => {
    addon.proxyRead(fd, timeoutMs, (r) => {
      calls++;
      if (inside) sync = true;
      resolve(r);
    });
  });
  inside = false;
  return { result, calls: () => calls, sync };
}

/** Everything readable from the non-blocking fd up to EOF. */
async function readToEof(fd: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let eof = false;
  await until(
    () => {
      for (;;) {
        const buf = Buffer.alloc(65536);
        let n: number;
        try {
          n = fs.readSync(fd, buf);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return false;
          throw err;
        }
        if (n === 0) {
          eof = true;
          return true;
        }
        chunks.push(buf.subarray(0, n));
      }
    },
    'EOF on the accepted socket',
  );
  expect(eof).toBe(true);
  return Buffer.concat(chunks);
}

/** Writes `bytes` one at a time, `gapMs` apart; resolves after the last. */
function dribble(sock: net.Socket, bytes: Buffer, gapMs: number): Promise<void> {
  return new Promise((resolve) => {
    let i = 0;
    const next = (): void => {
      if (i === bytes.length) return resolve();
      sock.write(bytes.subarray(i, i + 1));
      i++;
      setTimeout(next, gapMs);
    };
    next();
  });
}

const HEADER = proxyBuild(1, ep('203.0.113.9', 40000), ep('127.0.0.1', 8080));
const PARSED = ok(1, HEADER.length, ep('203.0.113.9', 40000), ep('127.0.0.1', 8080));

describe('proxyRead', () => {
  it.each([1, 2] as const)('takes a v%i header sent with the payload and leaves exactly the payload', async (v) => {
    const h = proxyBuild(v, ep('2001:db8::7', 1), ep('::1', 2));
    const payload = Buffer.from(`hello after the v${v} header\r\nPROXY not again\r\n`);
    const p = await pair();
    p.client.end(Buffer.concat([h, payload]));
    const r = read(p.fd);
    expect(r.sync).toBe(false);
    expect(await r.result).toEqual(ok(v, h.length, ep('2001:db8::7', 1), ep('::1', 2)));
    expect((await readToEof(p.fd)).toString('hex')).toBe(payload.toString('hex'));
    expect(r.calls()).toBe(1);
  });

  it('a header already there when it is called is delivered on a later turn, not from inside the call', async () => {
    const p = await pair();
    await new Promise<void>((resolve) => p.client.write(HEADER, () => resolve()));
    const r = read(p.fd);
    expect(r.sync).toBe(false);
    expect(await r.result).toEqual(PARSED);
  });

  it('takes a header written one byte at a time', async () => {
    const p = await pair();
    const r = read(p.fd);
    await dribble(p.client, Buffer.concat([HEADER, Buffer.from('X')]), 5);
    expect(await r.result).toEqual(PARSED);
    p.client.end();
    expect((await readToEof(p.fd)).toString()).toBe('X');
    expect(r.calls()).toBe(1);
  });

  it('gives up on garbage without waiting for more', async () => {
    const p = await pair();
    const r = read(p.fd);
    p.client.write('GET / HTTP/1.1\r\n');
    expect(await r.result).toEqual(invalid('no PROXY header'));
  });

  it('reports a client that closes mid-header', async () => {
    const p = await pair();
    const r = read(p.fd);
    p.client.end(HEADER.subarray(0, 20));
    expect(await r.result).toEqual(invalid('closed before the end of the PROXY header'));
  });

  it('reports a client that resets mid-header', async () => {
    const p = await pair();
    const r = read(p.fd);
    p.client.write(HEADER.subarray(0, 20), () => p.client.resetAndDestroy());
    expect(await r.result).toEqual(invalid('recv ECONNRESET'));
  });

  it('times out, and leaves the fd open', async () => {
    const p = await pair();
    await new Promise<void>((resolve) => p.client.write(HEADER.subarray(0, 10), () => resolve()));
    const start = Date.now();
    const r = read(p.fd, 300);
    expect(await r.result).toEqual({ status: 'timeout' });
    expect(Date.now() - start).toBeGreaterThanOrEqual(250);
    expect(addon.sockName(p.fd)).not.toBeNull();
    // The beginning, there before the call, was taken (it is the header's); the rest comes after it.
    p.client.end(HEADER.subarray(10));
    expect((await readToEof(p.fd)).toString('hex')).toBe(HEADER.subarray(10).toString('hex'));
    await holds(() => r.calls() === 1, 'one callback', 100);
  });

  it('does not spin while a slow client sends its header (one byte every 50 ms)', async () => {
    const p = await pair();
    const cpu = process.cpuUsage();
    const start = process.hrtime.bigint();
    const r = read(p.fd);
    await dribble(p.client, HEADER, 50);
    expect(await r.result).toEqual(PARSED);
    const wallUs = Number(process.hrtime.bigint() - start) / 1000;
    const used = process.cpuUsage(cpu);
    expect(wallUs).toBeGreaterThan(HEADER.length * 40 * 1000);
    // A busy poll loop would use about all of it.
    expect((used.user + used.system) / wallUs).toBeLessThan(0.3);
  }, 20000);

  it('argument errors throw TypeError; an fd that cannot be polled a SysError', () => {
    const typeError = expect.objectContaining({ name: 'TypeError' });
    const done = (): void => undefined;
    expect(() => addon.proxyRead(-1, 100, done)).toThrow(typeError);
    expect(() => addon.proxyRead(1.5, 100, done)).toThrow(typeError);
    expect(() => addon.proxyRead(10, -1, done)).toThrow(typeError);
    expect(() => addon.proxyRead(10, 100, null as unknown as typeof done)).toThrow(typeError);
    const file = fs.openSync(__filename, 'r');
    try {
      expect(() => addon.proxyRead(file, 100, done)).toThrow(expect.objectContaining({ name: 'SysError' }));
    } finally {
      fs.closeSync(file);
    }
  });

  it('a worker thread that exits mid-read does not call back or take the process down; the fd stays open', async () => {
    const p = await pair();
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      const addon = require(workerData.file);
      addon.init(class SysError extends Error {});
      addon.proxyRead(workerData.fd, 60000, () => parentPort.postMessage('done'));
      parentPort.postMessage('reading');
    `;
    const worker = new Worker(code, { eval: true, workerData: { file: addonPath(), fd: p.fd } });
    const messages: string[] = [];
    worker.on('message', (m: string) => messages.push(m));
    await until(() => messages.includes('reading'), 'the worker to start reading');
    await worker.terminate();
    expect(messages).toEqual(['reading']);
    expect(addon.sockName(p.fd)).not.toBeNull();
    // The fd still works here.
    p.client.end(HEADER);
    expect(await read(p.fd).result).toEqual(PARSED);
  });
});
