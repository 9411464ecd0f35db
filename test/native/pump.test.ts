// native.pump(): forwarding through real loopback sockets, on the splice path
// and on the read/write path, plus the resource rules (no fd or pipe leaks,
// bounded memory, pipes only while data is in flight).
import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { SysError } from '../../src/sys/errors';
import { addonPath, native, type Addon } from '../../src/sys/native';
import { sha256 } from '../helpers/servers';
import { until } from '../helpers/until';
import { PumpRig, fdSnapshot, sink } from './helpers/pump-rig';

type PumpStats = ReturnType<Addon['pumpStats']>;
type PumpResult = Parameters<Parameters<Addon['pump']>[1]>[0];

const MiB = 1024 * 1024;
const addon: Addon = native();
const pumpStats = (): PumpStats => addon.pumpStats();
const addonFile = addonPath();

let rig: PumpRig;
beforeEach(async () => {
  rig = await PumpRig.start(addon);
});
afterEach(async () => {
  await rig.close();
});

function expectReset(errors: NodeJS.ErrnoException[]): void {
  expect(errors.map((e) => e.code)).toContain('ECONNRESET');
}

const tick = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until the pumps stop waking up (no progress possible), then counts wake-ups over 300 ms. */
async function wakeupsWhileStalled(): Promise<number> {
  const deadline = Date.now() + 10000;
  let last = -1;
  while (pumpStats().wakeups !== last) {
    if (Date.now() > deadline) throw new Error('the session never stalled');
    last = pumpStats().wakeups;
    await tick(100);
  }
  const before = pumpStats().wakeups;
  await tick(300); // a measuring window, not a wait for a condition
  return pumpStats().wakeups - before;
}

/** A session that moves 8 MiB of random bytes each way at once; checks both arrive byte-exact. */
async function eightMiBEachWay(opts: { readonly auto?: boolean; readonly copy?: boolean }): Promise<{ r: PumpResult; doneCalls: () => number }> {
  const s = await rig.open(opts);
  const up = crypto.randomBytes(8 * MiB);
  const down = crypto.randomBytes(8 * MiB);
  const atUpstream = sink(s.upstream);
  const atClient = sink(s.client);
  s.client.end(up);
  s.upstream.end(down);
  const [u, c, r] = await Promise.all([atUpstream, atClient, s.result]);
  expect({ up: u.sha256, down: c.sha256 }).toEqual({ up: sha256(up), down: sha256(down) });
  return { r, doneCalls: () => s.doneCalls() };
}

describe.each([
  ['splice', false],
  ['copy', true],
] as const)('%s path', (pathName, copy) => {
  test('moves 8 MiB each way at once, byte-exact', async () => {
    const { r, doneCalls } = await eightMiBEachWay({ auto: false, copy });
    expect(r).toMatchObject({ end: 'eof', bytesUp: 8 * MiB, bytesDown: 8 * MiB, path: pathName });
    expect(r.error).toBeUndefined();
    expect(r.side).toBeUndefined();
    expect(r.durationMs).toBeGreaterThanOrEqual(0);
    expect(doneCalls()).toBe(1);
    // A stream grows into the big pipes (1 MiB), a bounded few of them.
    if (!copy) expect(pumpStats().pipesBig).toBeGreaterThanOrEqual(1);
    expect(pumpStats().pipesBig).toBeLessThanOrEqual(8);
  });

  test('upstream speaks first: a banner queued before the hand-off reaches the client', async () => {
    const s = await rig.open({
      copy,
      auto: false,
      beforePump: (u) => new Promise<void>((resolve) => u.write('220 ready\r\n', () => resolve())),
    });
    const atUpstream = sink(s.upstream);
    const atClient = sink(s.client);
    s.client.once('data', () => s.client.end('QUIT\r\n'));
    s.upstream.once('end', () => s.upstream.end('221 bye\r\n'));
    const [u, c, r] = await Promise.all([atUpstream, atClient, s.result]);
    expect(c.text).toBe('220 ready\r\n221 bye\r\n');
    expect(u.text).toBe('QUIT\r\n');
    expect(r).toMatchObject({ end: 'eof', bytesUp: 6, bytesDown: 20, path: pathName });
  });

  test('client half-close: the upstream answers 1 MiB after the EOF and all of it arrives', async () => {
    const s = await rig.open({ auto: false, copy });
    const reply = crypto.randomBytes(MiB);
    const atUpstream = sink(s.upstream);
    const atClient = sink(s.client);
    s.upstream.once('end', () => s.upstream.end(reply));
    s.client.end('request');
    const [u, c, r] = await Promise.all([atUpstream, atClient, s.result]);
    expect(u.text).toBe('request');
    expect(c.sha256).toBe(sha256(reply));
    expect(r).toMatchObject({ end: 'eof', bytesUp: 7, bytesDown: MiB, path: pathName });
  });

  test('upstream reset: the client sees ECONNRESET, the result says reset by the server', async () => {
    const s = await rig.open({ auto: false, copy });
    s.client.resume();
    s.upstream.write('partial');
    await until(() => s.client.bytesRead === 7, 'the first bytes');
    s.upstream.resetAndDestroy();
    const r = await s.result;
    expect(r).toMatchObject({ end: 'reset', side: 'server', bytesDown: 7, path: pathName });
    expect(r.error).toBeInstanceOf(SysError);
    expect(r.error?.code).toBe('ECONNRESET');
    await until(() => s.clientErrors.length > 0, 'the client error');
    expectReset(s.clientErrors);
  });

  test('client reset: the upstream sees ECONNRESET, the result says reset by the client', async () => {
    const s = await rig.open({ auto: false, copy });
    s.upstream.resume();
    s.client.write('partial');
    await until(() => s.upstream.bytesRead === 7, 'the first bytes');
    s.client.resetAndDestroy();
    const r = await s.result;
    expect(r).toMatchObject({ end: 'reset', side: 'client', bytesUp: 7, path: pathName });
    expect(r.error?.code).toBe('ECONNRESET');
    await until(() => s.upstreamErrors.length > 0, 'the upstream error');
    expectReset(s.upstreamErrors);
  });

  test('idle timeout: both ends are reset after 300 ms without traffic', async () => {
    const s = await rig.open({ auto: false, copy, idleMs: 300 });
    s.client.resume();
    s.upstream.resume();
    const r = await s.result;
    expect(r).toMatchObject({ end: 'idle-timeout', bytesUp: 0, bytesDown: 0, path: pathName });
    expect(r.error).toBeUndefined();
    expect(r.durationMs).toBeGreaterThanOrEqual(290);
    expect(r.durationMs).toBeLessThan(5000);
    await until(() => s.clientErrors.length > 0 && s.upstreamErrors.length > 0, 'both resets');
    expectReset(s.clientErrors);
    expectReset(s.upstreamErrors);
  });

  test('abort(): both ends are reset, done runs once with aborted, abort stays idempotent', async () => {
    const s = await rig.open({ auto: false, copy });
    s.client.resume();
    s.upstream.resume();
    s.handle.abort();
    s.handle.abort();
    const r = await s.result;
    expect(r).toMatchObject({ end: 'aborted', bytesUp: 0, bytesDown: 0, path: pathName });
    expect(r.error).toBeUndefined();
    s.handle.abort();
    await until(() => s.clientErrors.length > 0 && s.upstreamErrors.length > 0, 'both resets');
    expectReset(s.clientErrors);
    expectReset(s.upstreamErrors);
    expect(s.doneCalls()).toBe(1);
  });

  test('a stalled session does not spin: upstream not reading, all buffers full', async () => {
    // Far more than every buffer on the way holds (socket buffers autotune to several MiB each, plus 1 MiB pipes).
    const STALL_TOTAL = 256 * MiB;
    const s = await rig.open({ auto: false, copy });
    const chunk = crypto.randomBytes(MiB);
    let sent = 0;
    const writer = (async () => {
      for (; sent < STALL_TOTAL; sent += MiB) {
        if (!s.client.write(chunk)) await new Promise((resolve) => s.client.once('drain', resolve));
      }
      s.client.end();
    })();
    // The upstream socket has no reader: Node stops reading it at its high-water mark.
    expect(await wakeupsWhileStalled()).toBeLessThanOrEqual(2);
    expect(sent).toBeLessThan(STALL_TOTAL); // really stalled, not finished
    if (!copy) expect(pumpStats().pipesBusy).toBe(1); // the up pipe holds data
    const atUpstream = sink(s.upstream);
    await writer;
    s.upstream.end();
    expect((await atUpstream).bytes).toBe(STALL_TOTAL);
    expect(await s.result).toMatchObject({ end: 'eof', bytesUp: STALL_TOTAL, bytesDown: 0 });
  });

  test('a half-closed session waiting for its upstream does not spin', async () => {
    const s = await rig.open({ auto: false, copy });
    const atClient = sink(s.client);
    const upstreamEnd = new Promise((resolve) => s.upstream.once('end', resolve));
    s.upstream.resume();
    s.client.end('request');
    await upstreamEnd;
    expect(await wakeupsWhileStalled()).toBeLessThanOrEqual(2);
    expect(s.settled()).toBe(false);
    s.upstream.end('late reply');
    expect((await atClient).text).toBe('late reply');
    expect(await s.result).toMatchObject({ end: 'eof', bytesUp: 7, bytesDown: 10 });
  });

  test('1-byte ping-pong, 200 rounds, has no per-message stall', async () => {
    const s = await rig.open({ auto: false, copy });
    s.upstream.on('data', (b: Buffer) => s.upstream.write(b));
    const started = Date.now();
    await new Promise<void>((resolve) => {
      let rounds = 0;
      s.client.on('data', () => {
        rounds++;
        if (rounds === 200) resolve();
        else s.client.write('x');
      });
      s.client.write('x');
    });
    const elapsed = Date.now() - started;
    // SPLICE_F_MORE would cost ~200 ms per hop and message: minutes, not seconds.
    expect(elapsed).toBeLessThan(5000);
    s.client.end();
    s.upstream.end();
    expect(await s.result).toMatchObject({ end: 'eof', bytesUp: 200, bytesDown: 200 });
  });
});

// splice-auto, the pump's default: small messages go by read/write (a read
// that comes back short proves the socket empty, with no call that says
// EAGAIN), a direction whose read fills its buffer splices from then on.
describe('splice-auto (the default)', () => {
  test('a 64 B request and its answer go by read/write: path copy', async () => {
    const s = await rig.open();
    const req = crypto.randomBytes(64);
    const answer = crypto.randomBytes(64);
    const atUpstream = sink(s.upstream);
    const atClient = sink(s.client);
    s.upstream.once('data', () => s.upstream.end(answer));
    s.client.write(req);
    s.client.once('data', () => s.client.end());
    const [u, c, r] = await Promise.all([atUpstream, atClient, s.result]);
    expect({ up: u.sha256, down: c.sha256 }).toEqual({ up: sha256(req), down: sha256(answer) });
    expect(r).toMatchObject({ end: 'eof', bytesUp: 64, bytesDown: 64, path: 'copy' });
  });

  test('8 MiB each way at once: byte-exact, and the streams move over to splice', async () => {
    const { r } = await eightMiBEachWay({});
    expect(r).toMatchObject({ end: 'eof', bytesUp: 8 * MiB, bytesDown: 8 * MiB, path: 'splice' });
  });

  test('bytes and the FIN already queued when the pump starts: both arrive, the FIN is not lost behind a short read', async () => {
    for (let i = 0; i < 20; i++) {
      const p = await rig.pair();
      const atUpstream = sink(p.upstream);
      const atClient = sink(p.client);
      // On loopback the segments are in the proxy's socket by the time the write and shutdown return.
      await new Promise<void>((resolve) => p.client.end(`request ${i}`, resolve));
      p.upstream.once('end', () => p.upstream.end(`answer ${i}`));
      const result = new Promise<PumpResult>((resolve) => addon.pump({ client: p.clientFd, server: p.serverFd, idleMs: 0 }, resolve));
      const [u, c, r] = await Promise.all([atUpstream, atClient, result]);
      expect({ u: u.text, c: c.text, end: r.end, path: r.path }).toEqual({ u: `request ${i}`, c: `answer ${i}`, end: 'eof', path: 'copy' });
    }
  });

  test('1-byte ping-pong, 200 rounds, then a 1 MiB burst and ping-pong again: no stall in either mode', async () => {
    const s = await rig.open();
    s.upstream.on('data', (b: Buffer) => s.upstream.write(b));
    const pingPong = (rounds: number): Promise<void> =>
      new Promise<void>((resolve) => {
        let n = 0;
        const onData = (): void => {
          n++;
          if (n < rounds) {
            s.client.write('x');
            return;
          }
          s.client.off('data', onData);
          resolve();
        };
        s.client.on('data', onData);
        s.client.write('x');
      });
    await pingPong(200);
    const burst = crypto.randomBytes(MiB);
    let echoed = 0;
    await new Promise<void>((resolve) => {
      const onData = (b: Buffer): void => {
        echoed += b.length;
        if (echoed < MiB) return;
        s.client.off('data', onData);
        resolve();
      };
      s.client.on('data', onData);
      s.client.write(burst);
    });
    await pingPong(200);
    s.client.end();
    s.upstream.end();
    expect(await s.result).toMatchObject({ end: 'eof', bytesUp: 400 + MiB, bytesDown: 400 + MiB, path: 'splice' });
  });
});

test('an active session (a byte every 50 ms for 1 s) outlives a 300 ms idle timeout', async () => {
  const s = await rig.open({ idleMs: 300 });
  s.upstream.resume();
  s.client.resume();
  await new Promise<void>((resolve) => {
    let sent = 0;
    const timer = setInterval(() => {
      s.client.write('.');
      if (++sent === 20) {
        clearInterval(timer);
        resolve();
      }
    }, 50);
  });
  await until(() => s.upstream.bytesRead === 20, 'all 20 bytes');
  expect(s.settled()).toBe(false);
  s.client.end();
  s.upstream.end();
  expect(await s.result).toMatchObject({ end: 'eof', bytesUp: 20 });
  expect(s.clientErrors).toEqual([]);
  expect(s.upstreamErrors).toEqual([]);
});

test('a slow upstream reader holds back a 16 MiB push without buffering it in memory', async () => {
  const s = await rig.open();
  const chunk = crypto.randomBytes(64 * 1024);
  const want = crypto.createHash('sha256');
  for (let i = 0; i < 256; i++) want.update(chunk);
  const rss0 = process.memoryUsage().rss;
  let rssMax = rss0;
  const got = crypto.createHash('sha256');
  let received = 0;
  const done = new Promise<void>((resolve) => {
    s.upstream.on('data', (b: Buffer) => {
      got.update(b);
      received += b.length;
      rssMax = Math.max(rssMax, process.memoryUsage().rss);
      // The slow reader: one read, then 10 ms away.
      s.upstream.pause();
      setTimeout(() => s.upstream.resume(), 10);
    });
    s.upstream.once('end', () => resolve());
  });
  for (let i = 0; i < 256; i++) {
    if (!s.client.write(chunk)) await new Promise((resolve) => s.client.once('drain', resolve));
  }
  s.client.end();
  await done;
  s.upstream.end();
  expect(received).toBe(16 * MiB);
  expect(got.digest('hex')).toBe(want.digest('hex'));
  expect(rssMax - rss0).toBeLessThan(64 * MiB);
  expect(await s.result).toMatchObject({ end: 'eof', bytesUp: 16 * MiB, path: 'splice' });
}, 60000);

test('200 sequential connections leave no fd and no pipe behind', async () => {
  const exchange = async (): Promise<void> => {
    const s = await rig.open();
    const atUpstream = sink(s.upstream);
    const atClient = sink(s.client);
    s.upstream.once('end', () => s.upstream.end('pong'));
    s.client.end('ping');
    const [, c, r] = await Promise.all([atUpstream, atClient, s.result]);
    expect(c.text).toBe('pong');
    expect(r.end).toBe('eof');
  };
  await exchange(); // warms up the rig's and the pool's own fds
  await until(() => pumpStats().sessions === 0, 'the warm-up session to end');
  const before = fdSnapshot();
  const idleBefore = pumpStats().pipesIdle;
  for (let i = 0; i < 200; i++) await exchange();
  // Only the pool may keep a pipe pair it did not have before; nothing else stays.
  const pooled = (): number => 2 * (pumpStats().pipesIdle - idleBefore);
  await until(() => fdSnapshot().total === before.total + pooled(), 'fds back to the baseline');
  const after = fdSnapshot();
  expect(after.pipes).toBe(before.pipes + pooled());
  expect(pumpStats()).toMatchObject({ sessions: 0, pipesBusy: 0 });
  expect(pumpStats().pipesIdle).toBeLessThanOrEqual(2); // one pair per direction is all a sequence needs
}, 60000);

test('idle sessions hold their two sockets and no pipe', async () => {
  const n = 300;
  const before = fdSnapshot();
  const idleBefore = pumpStats().pipesIdle;
  const sessions = [];
  for (let i = 0; i < n; i += 50) {
    sessions.push(...(await Promise.all(Array.from({ length: Math.min(50, n - i) }, () => rig.open()))));
  }
  // Move one byte each way through every session, then let them idle.
  await Promise.all(sessions.map(async (s) => {
    const back = new Promise((resolve) => s.client.once('data', resolve));
    s.upstream.once('data', (b: Buffer) => s.upstream.write(b));
    s.client.write('x');
    await back;
  }));
  expect(pumpStats()).toMatchObject({ sessions: n, pipesBusy: 0 });
  // Per session: the pump's two sockets plus the test's client and upstream
  // sockets. Beyond that only the pool's idle pipes (at most 64 pairs).
  const expected = (): number => before.total + 4 * n + 2 * (pumpStats().pipesIdle - idleBefore);
  await until(() => fdSnapshot().total === expected(), 'the fd count of idle sessions');
  expect(pumpStats().pipesIdle).toBeLessThanOrEqual(64);
  for (const s of sessions) s.handle.abort();
  await Promise.all(sessions.map((s) => s.result));
  expect(pumpStats()).toMatchObject({ sessions: 0, pipesBusy: 0 });
}, 60000);

test('argument errors throw TypeError and leave the fds alone', () => {
  const pump = addon.pump?.bind(addon);
  if (!pump) throw new Error('no pump');
  const done = (): void => undefined;
  // The addon's TypeError comes from Node's realm, not jest's sandbox: match the name.
  const typeError = expect.objectContaining({ name: 'TypeError' });
  const before = fdSnapshot().total;
  expect(() => pump({ client: 1, server: 2, idleMs: 0 }, done)).toThrow(typeError);
  expect(() => pump({ client: 10, server: 10, idleMs: 0 }, done)).toThrow(typeError);
  expect(() => pump({ client: 10, server: 11, idleMs: -1 }, done)).toThrow(typeError);
  expect(() => pump({ client: 10, server: 11, idleMs: 0 }, undefined as unknown as typeof done)).toThrow(typeError);
  expect(fdSnapshot().total).toBe(before);
});

test('a worker thread that exits mid-session resets both ends and does not take the process down', async () => {
  const pair = await rig.pair();
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    const addon = require(workerData.file);
    addon.init(class SysError extends Error {});
    addon.pump({ client: workerData.client, server: workerData.server, idleMs: 0 }, () => {
      parentPort.postMessage('done');
    });
    parentPort.postMessage('pumping');
  `;
  const worker = new Worker(code, {
    eval: true,
    workerData: { file: addonFile, client: pair.clientFd, server: pair.serverFd },
  });
  const messages: string[] = [];
  worker.on('message', (m: string) => messages.push(m));
  await until(() => messages.includes('pumping'), 'the worker to start');
  pair.client.resume();
  pair.upstream.resume();
  pair.client.write('hello');
  await until(() => pair.upstream.bytesRead === 5, 'bytes through the worker');
  await worker.terminate();
  await until(() => pair.clientErrors.length > 0 && pair.upstreamErrors.length > 0, 'both resets');
  expectReset(pair.clientErrors);
  expectReset(pair.upstreamErrors);
  expect(messages).toEqual(['pumping']); // no callback into a dead environment
});

test('an exception thrown by done surfaces as an uncaught exception', async () => {
  const script = `
    const net = require('node:net');
    const addon = require(${JSON.stringify(addonFile)});
    addon.init(class SysError extends Error {});
    process.on('uncaughtException', (e) => { console.log('uncaught: ' + e.message); process.exit(0); });
    const accepted = [];
    const server = net.createServer({ pauseOnConnect: true }, (sock) => {
      accepted.push(sock);
      if (accepted.length < 2) return;
      const fds = accepted.map((s) => { const fd = addon.dupCloexec(s._handle.fd); s.destroy(); return fd; });
      addon.pump({ client: fds[0], server: fds[1], idleMs: 0 }, () => { throw new Error('boom'); }).abort();
    });
    server.listen(0, '127.0.0.1', () => {
      for (let i = 0; i < 2; i++) net.connect(server.address().port, '127.0.0.1').on('error', () => {});
    });
  `;
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['-e', script], { timeout: 20000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
  expect(out.trim()).toBe('uncaught: boom');
});

