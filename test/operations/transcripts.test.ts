/**
 * Transcripts (`-w BASE`, `writefile BASE`), as root: one file per
 * connection, BASE.N.log with N the connection number, created by the
 * service identity (uid 65535 gid 65534 by default) with mode 0600. Each
 * chunk is a header line `<ISO time> c>s|s>c <len>` and the raw bytes; the
 * c>s bytes together are exactly what the client sent, the s>c bytes what
 * the upstream sent. A symlink planted at the name is never followed: the
 * next number is taken and the log line names it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { type Proxy, re, startProxy, waitLog } from '../helpers/daemon';
import { writeConfig } from '../helpers/fixtures';
import { freePort } from '../helpers/ports';
import { describeAsRoot, requireRoot } from '../helpers/root';
import { type Digest, digestOf, echoServer, payload, sinkServer } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

const MiB = 1024 * 1024;

beforeAll(requireRoot);
const tmp = useTempDir('tcpproxy-ops-transcripts-', 0o755);
cleanUpAfterEach();

/** A directory uid 65535 may create files in (the transcript's base directory). */
function openDir(name: string): string {
  const dir = path.join(tmp.path, name);
  fs.mkdirSync(dir);
  fs.chmodSync(dir, 0o777);
  return dir;
}

interface Chunk {
  readonly time: string;
  readonly direction: 'c>s' | 's>c';
  readonly bytes: Buffer;
}

const HEADER = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (c>s|s>c) (\d+)$/;

/** Parses a transcript; throws at the first byte that does not fit the format. */
function parseTranscript(buf: Buffer): Chunk[] {
  const out: Chunk[] = [];
  let at = 0;
  while (at < buf.length) {
    const nl = buf.indexOf(0x0a, at);
    if (nl < 0) throw new Error(`transcript: header without a line end at offset ${at}`);
    const line = buf.subarray(at, nl).toString('latin1');
    const m = HEADER.exec(line);
    if (m === null) throw new Error(`transcript: bad header at offset ${at}: ${JSON.stringify(line.slice(0, 80))}`);
    const len = Number(m[3]);
    const start = nl + 1;
    if (start + len > buf.length) throw new Error(`transcript: chunk at offset ${at} wants ${len} bytes, ${buf.length - start} left`);
    out.push({ time: m[1] ?? '', direction: m[2] as Chunk['direction'], bytes: buf.subarray(start, start + len) });
    at = start + len;
  }
  return out;
}

/** The bytes of one direction, concatenated, as a digest; also checks the chunk times. */
function directions(chunks: readonly Chunk[], from: number, to: number): { up: Digest; down: Digest } {
  let last = 0;
  for (const c of chunks) {
    expect(c.bytes.length).toBeGreaterThan(0);
    const t = Date.parse(c.time);
    expect(t).toBeGreaterThanOrEqual(last);
    expect(t).toBeGreaterThanOrEqual(from - 1000);
    expect(t).toBeLessThanOrEqual(to + 1000);
    last = t;
  }
  const pick = (d: Chunk['direction']): Digest => digestOf(Buffer.concat(chunks.filter((c) => c.direction === d).map((c) => c.bytes)));
  return { up: pick('c>s'), down: pick('s>c') };
}

/** Waits for connection `id`'s transcript line and end line; returns the transcript path. */
async function transcriptOf(p: Proxy, id: number): Promise<string> {
  const m = await waitLog(p.stderr, new RegExp(`^connection ${id}: transcript (\\S+)$`));
  await waitLog(p.stderr, new RegExp(`^connection ${id}: end: `));
  return m[1] ?? '';
}

describeAsRoot('transcripts (root)', () => {
  test.each(['-w', 'writefile'] as const)(
    '%s BASE: BASE.N.log, mode 0600, owned by 65535:65534; c>s and s>c are exactly the bytes sent (1 MiB each way)',
    async (how) => {
      const fromUp = payload(MiB, `transcript-down-${how}`);
      const fromClient = payload(MiB, `transcript-up-${how}`);
      const up = await sinkServer({ send: fromUp });
      const dir = openDir(`both-${how}`);
      const base = path.join(dir, 'session');
      let p: Proxy;
      if (how === '-w') {
        p = await startProxy(['-w', base, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`]);
      } else {
        const port = await freePort();
        const conf = writeConfig(tmp.path, 'writefile.conf', `port ${port}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n  writefile ${base}\n`);
        p = await startProxy(['-f', conf]);
      }
      const port = p.addresses[0]?.port ?? 0;
      const from = Date.now();
      const c = await Client.connect('127.0.0.1', port, { keep: false });
      c.socket.end(fromClient);
      await c.waitClosed(20000);
      expect({ got: c.digest(), end: c.describeEnd() }).toEqual({ got: digestOf(fromUp), end: ' (clean end)' });
      await until(() => up.received.length === 1, 'the upstream to see the client FIN', 5000);
      expect(up.received[0]).toEqual(digestOf(fromClient));

      const file = await transcriptOf(p, 1);
      expect(file).toBe(`${base}.1.log`);
      const st = fs.lstatSync(file);
      expect({ file: st.isFile(), mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid }).toEqual({
        file: true,
        mode: '600',
        uid: 65535,
        gid: 65534,
      });
      const { up: sentUp, down: sentDown } = directions(parseTranscript(fs.readFileSync(file)), from, Date.now());
      expect(sentUp).toEqual(digestOf(fromClient));
      expect(sentDown).toEqual(digestOf(fromUp));

      // The next connection gets the next number.
      const c2 = await Client.connect('127.0.0.1', port);
      c2.socket.end('second');
      await c2.waitClosed(10000);
      expect(await transcriptOf(p, 2)).toBe(`${base}.2.log`);
      const second = directions(parseTranscript(fs.readFileSync(`${base}.2.log`)), from, Date.now());
      expect(second.up).toEqual(digestOf(Buffer.from('second')));
      expect(second.down).toEqual(digestOf(fromUp));
      expect(fs.readdirSync(dir).sort()).toEqual(['session.1.log', 'session.2.log']);
      expect(await p.stop()).toMatchObject({ code: 0, signal: null });
    },
  );

  test('a symlink planted at BASE.1.log is not followed: the transcript goes to BASE.1.<random>.log, the target is untouched', async () => {
    const up = await echoServer();
    const dir = openDir('symlink');
    const base = path.join(dir, 'victim');
    // A file uid 65535 could write, so only O_NOFOLLOW/O_EXCL protect it.
    const safe = path.join(tmp.path, 'safe');
    fs.mkdirSync(safe, { mode: 0o755 });
    const target = path.join(safe, 'precious');
    const original = 'precious content\n';
    fs.writeFileSync(target, original, { mode: 0o666 });
    fs.chownSync(target, 65535, 65534);
    const past = new Date(Date.now() - 3600_000);
    fs.utimesSync(target, past, past);
    const before = fs.statSync(target);
    fs.symlinkSync(target, `${base}.1.log`);

    const p = await startProxy(['-w', base, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`]);
    const port = p.addresses[0]?.port ?? 0;
    const from = Date.now();
    const c = await Client.connect('127.0.0.1', port);
    c.socket.end('hello through the proxy\n');
    await c.waitClosed(10000);
    expect(c.data().toString('utf8')).toBe('hello through the proxy\n');

    await waitLog(p.stderr, new RegExp(`^connection 1: transcript ${re(`${base}.1.`)}[0-9a-f]{16}\\.log$`));
    const file = await transcriptOf(p, 1);
    expect(file).toMatch(new RegExp(`^${re(`${base}.1.`)}[0-9a-f]{16}\\.log$`));
    await until(() => fs.statSync(file).size > 0, 'the transcript written', 5000);
    const t = directions(parseTranscript(fs.readFileSync(file)), from, Date.now());
    expect(t.up).toEqual(digestOf(Buffer.from('hello through the proxy\n')));
    expect(t.down).toEqual(digestOf(Buffer.from('hello through the proxy\n')));

    // The symlink and its target are as they were.
    expect(fs.lstatSync(`${base}.1.log`).isSymbolicLink()).toBe(true);
    expect(fs.readlinkSync(`${base}.1.log`)).toBe(target);
    expect(fs.readFileSync(target, 'utf8')).toBe(original);
    const after = fs.statSync(target);
    expect({ size: after.size, mtime: after.mtimeMs, mode: after.mode, uid: after.uid }).toEqual({
      size: before.size,
      mtime: before.mtimeMs,
      mode: before.mode,
      uid: before.uid,
    });
    expect(fs.readdirSync(safe)).toEqual(['precious']);
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
  });

  test('1,000 names pre-created by another user (BASE.1.log to BASE.1000.log) cannot stop the recording', async () => {
    const up = await echoServer();
    const dir = openDir('precreated');
    const base = path.join(dir, 'web');
    for (let n = 1; n <= 1000; n++) {
      const f = `${base}.${n}.log`;
      fs.writeFileSync(f, 'planted\n');
      fs.chownSync(f, 65534, 65534);
    }
    const p = await startProxy(['-w', base, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`]);
    const from = Date.now();
    const c = await Client.connect('127.0.0.1', p.addresses[0]?.port ?? 0);
    c.socket.end('recorded anyway\n');
    await c.waitClosed(10000);
    const file = await transcriptOf(p, 1);
    expect(file).toMatch(new RegExp(`^${re(`${base}.1.`)}[0-9a-f]{16}\\.log$`));
    const t = directions(parseTranscript(fs.readFileSync(file)), from, Date.now());
    expect(t.up).toEqual(digestOf(Buffer.from('recorded anyway\n')));
    expect(fs.readFileSync(`${base}.1.log`, 'utf8')).toBe('planted\n');
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
  });
});
