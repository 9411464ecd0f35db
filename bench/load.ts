/**
 * The benchmark's load generator, run as its own process (pinned to the load
 * CPU by the parent) and driven over IPC:
 *
 * - `connrate`: connect, write 64 B, read the 64 B echo, close; `concurrency`
 *   such loops for `durationMs`. Warms up first, then sends `ready` and waits
 *   for `go`, so the parent can sample the proxy's CPU around the measured
 *   part only. With `halfClose` (a handler such as /bin/cat, which echoes
 *   until EOF): the write side is shut right after the 64 B, and the loop
 *   reads the echo up to the peer's EOF. With `proxyHeader` (the
 *   accept-proxy variant) each connection's 64 B go after a PROXY v2 header,
 *   in the same write, as a load balancer in front would send them.
 * - `rtt`: one connection, 64-byte ping-pong, `rounds` timed round trips
 *   after `warmup` untimed ones → p50 / p99 in µs.
 * - `open`: opens `n` more idle connections (each does one 64 B echo so the
 *   path is known to be live end to end, then stays idle); `close` drops them.
 */
import * as net from 'node:net';

export type LoadCmd =
  | { type: 'connrate'; port: number; durationMs: number; concurrency: number; warmupMs: number; halfClose?: boolean; proxyHeader?: boolean }
  | { type: 'rtt'; port: number; rounds: number; warmup: number }
  | { type: 'open'; port: number; n: number; concurrency: number }
  | { type: 'close' }
  | { type: 'go' };

export type LoadMsg =
  | { type: 'ready' }
  | { type: 'connrate'; done: number; errors: number; seconds: number; firstError: string | null }
  | { type: 'rtt'; rounds: number; p50Us: number; p99Us: number; meanUs: number; error: string | null }
  | { type: 'opened'; total: number; failed: number; lost: number; firstError: string | null }
  | { type: 'closed' };

const HOST = '127.0.0.1';
const PAYLOAD = Buffer.alloc(64, 0x61);
const TIMEOUT_MS = 10_000;

/**
 * A PROXY protocol v2 header (PROXY command, TCP over IPv4) naming
 * 127.0.0.1:`srcPort` → 127.0.0.1:`dstPort`: 16 bytes, then 12 of addresses and ports.
 */
export function proxyV2Header(srcPort: number, dstPort: number): Buffer {
  const b = Buffer.alloc(28);
  Buffer.from('0d0a0d0a000d0a515549540a', 'hex').copy(b, 0);
  b[12] = 0x21;
  b[13] = 0x11;
  b.writeUInt16BE(12, 14);
  b.set([127, 0, 0, 1, 127, 0, 0, 1], 16);
  b.writeUInt16BE(srcPort, 24);
  b.writeUInt16BE(dstPort, 26);
  return b;
}

function send(m: LoadMsg): void {
  process.send?.(m);
}

let goResolve: (() => void) | null = null;
function waitGo(): Promise<void> {
  return new Promise((r) => {
    goResolve = r;
  });
}

/**
 * One connect / 64 B echo / close cycle; resolves with null or the error
 * text. `halfClose`: shut the write side with the 64 B (the peer echoes until
 * EOF, then closes); else close once the echo is in.
 */
/**
 * The header and the 64 B, built once per port: every connection sends the
 * same header (a made-up source port, 40000), so that the load does no more
 * work per connection than without one and the rate measures the proxy.
 */
const proxied = new Map<number, Buffer>();
function proxiedPayload(port: number): Buffer {
  let b = proxied.get(port);
  if (b === undefined) {
    b = Buffer.concat([proxyV2Header(40000, port), PAYLOAD]);
    proxied.set(port, b);
  }
  return b;
}

function oneConnection(port: number, halfClose: boolean, proxyHeader: boolean): Promise<string | null> {
  return new Promise((resolve) => {
    let got = 0;
    let err: string | null = null;
    const s = net.connect({ host: HOST, port });
    s.setNoDelay(true);
    s.setTimeout(TIMEOUT_MS, () => {
      err ??= 'timeout';
      s.destroy();
    });
    s.on('connect', () => {
      const out = proxyHeader ? proxiedPayload(port) : PAYLOAD;
      if (halfClose) s.end(out);
      else s.write(out);
    });
    s.on('data', (d) => {
      got += d.length;
      if (got >= PAYLOAD.length && !halfClose) s.end();
    });
    s.on('error', (e) => {
      err ??= (e as NodeJS.ErrnoException).code ?? e.message;
    });
    s.on('close', () => resolve(err ?? (got >= PAYLOAD.length ? null : `short echo (${got} B)`)));
  });
}

async function connrate(c: Extract<LoadCmd, { type: 'connrate' }>): Promise<void> {
  const run = async (ms: number): Promise<{ done: number; errors: number; seconds: number; firstError: string | null }> => {
    let done = 0;
    let errors = 0;
    let firstError: string | null = null;
    const t0 = process.hrtime.bigint();
    const deadline = Date.now() + ms;
    const loop = async (): Promise<void> => {
      while (Date.now() < deadline) {
        const e = await oneConnection(c.port, c.halfClose === true, c.proxyHeader === true);
        if (e === null) done++;
        else {
          errors++;
          firstError ??= e;
        }
      }
    };
    await Promise.all(Array.from({ length: c.concurrency }, loop));
    return { done, errors, firstError, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
  };
  await run(c.warmupMs);
  send({ type: 'ready' });
  await waitGo();
  send({ type: 'connrate', ...(await run(c.durationMs)) });
}

async function rtt(c: Extract<LoadCmd, { type: 'rtt' }>): Promise<void> {
  const s = net.connect({ host: HOST, port: c.port });
  s.setNoDelay(true);
  const fail = (error: string): void => send({ type: 'rtt', rounds: 0, p50Us: NaN, p99Us: NaN, meanUs: NaN, error });
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
  } catch (e) {
    fail((e as Error).message);
    return;
  }
  const lat = new Float64Array(c.rounds);
  let error: string | null = null;
  const pingPong = (n: number, record: boolean): Promise<void> =>
    new Promise((resolve) => {
      let i = 0;
      let got = 0;
      let t = process.hrtime.bigint();
      const timer = setTimeout(() => {
        error ??= 'timeout';
        finish();
      }, TIMEOUT_MS + n);
      const onData = (d: Buffer): void => {
        got += d.length;
        if (got < PAYLOAD.length) return;
        got -= PAYLOAD.length;
        if (record) lat[i] = Number(process.hrtime.bigint() - t) / 1000;
        i++;
        if (i >= n) return finish();
        t = process.hrtime.bigint();
        s.write(PAYLOAD);
      };
      const onEnd = (): void => {
        error ??= `connection closed after ${i} rounds`;
        finish();
      };
      const finish = (): void => {
        clearTimeout(timer);
        s.off('data', onData);
        s.off('close', onEnd);
        resolve();
      };
      s.on('data', onData);
      s.on('close', onEnd);
      s.on('error', (e) => {
        error ??= e.message;
      });
      s.write(PAYLOAD);
    });
  await pingPong(c.warmup, false);
  send({ type: 'ready' });
  await waitGo();
  if (error === null) await pingPong(c.rounds, true);
  s.destroy();
  if (error !== null) return fail(error);
  const sorted = Array.from(lat).sort((a, b) => a - b);
  const q = (p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
  send({
    type: 'rtt',
    rounds: sorted.length,
    p50Us: q(0.5),
    p99Us: q(0.99),
    meanUs: sorted.reduce((a, b) => a + b, 0) / sorted.length,
    error: null,
  });
}

const idle: net.Socket[] = [];
let lost = 0;
let closing = false;

/** Opens one idle connection: connect, one 64 B echo, then nothing. */
function openIdle(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    let got = 0;
    let settled = false;
    const s = net.connect({ host: HOST, port });
    s.setNoDelay(true);
    const settle = (e: string | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (e === null) idle.push(s);
      else s.destroy();
      resolve(e);
    };
    const timer = setTimeout(() => settle('timeout'), TIMEOUT_MS);
    s.on('connect', () => s.write(PAYLOAD));
    s.on('data', (d) => {
      got += d.length;
      if (got >= PAYLOAD.length) settle(null);
    });
    s.on('error', (e) => settle((e as NodeJS.ErrnoException).code ?? e.message));
    s.on('close', () => {
      if (!settled) settle(`closed after ${got} B`);
      else if (!closing) lost++;
    });
  });
}

async function open(c: Extract<LoadCmd, { type: 'open' }>): Promise<void> {
  closing = false;
  let left = c.n;
  let failed = 0;
  let firstError: string | null = null;
  const loop = async (): Promise<void> => {
    while (left > 0) {
      left--;
      const e = await openIdle(c.port);
      if (e !== null) {
        failed++;
        firstError ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: c.concurrency }, loop));
  send({ type: 'opened', total: idle.length, failed, lost, firstError });
}

function close(): void {
  closing = true;
  for (const s of idle) s.destroy();
  idle.length = 0;
  lost = 0;
  send({ type: 'closed' });
}

function main(): void {
  process.on('message', (m: LoadCmd) => {
    switch (m.type) {
      case 'go':
        goResolve?.();
        goResolve = null;
        return;
      case 'connrate':
        void connrate(m);
        return;
      case 'rtt':
        void rtt(m);
        return;
      case 'open':
        void open(m);
        return;
      case 'close':
        close();
        return;
    }
  });
  process.on('disconnect', () => process.exit(0));
}

if (require.main === module) main();
