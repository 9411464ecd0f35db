/**
 * Forwarding through the built CLI, on both engines (TCPPROXY_ENGINE):
 * bulk data both ways, banners, half-close, resets, concurrency, routing by
 * interface, the port default, refused upstreams, the idle timeout, bind
 * failure and IPv6. Everything listens on loopback; ports are ephemeral
 * except where a config file needs a literal one (freePort).
 */
import * as os from 'node:os';
import { Client } from '../helpers/client';
import { assertBuilt, ENGINES, type ListenAddress, type Proxy, runCli, withProxy } from '../helpers/daemon';
import { freePort, freePortOn } from '../helpers/ports';
import { type Digest, digestOf, echoServer, payload, resetServer, sinkServer, speaksFirstServer, startServer, StreamHash } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

const MiB = 1024 * 1024;

// Skipped out loud where the loopback has no IPv6 address (a container without it).
const hasIpv6Loopback = Object.values(os.networkInterfaces()).some((list) => list?.some((i) => i.address === '::1'));
const itIpv6 = hasIpv6Loopback ? it : it.skip;
// eslint-disable-next-line no-console -- says out loud why the IPv6 test is skipped
if (!hasIpv6Loopback) console.warn('forwarding.test.ts: no ::1 on this host, skipping the IPv6 test');

const savedEnv = { ...process.env };

beforeAll(assertBuilt);
/** tmp.config: a config file only its owner can write (tcpproxy refuses others when run as root). */
const tmp = useTempDir('tcpproxy-forwarding-');
cleanUpAfterEach();
afterEach(() => {
  process.env = { ...savedEnv };
});

function onlyAddress(proxy: Proxy): ListenAddress {
  expect(proxy.addresses).toHaveLength(1);
  const a = proxy.addresses[0];
  if (a === undefined) throw new Error('no listening address');
  return a;
}

function byHost(a: ListenAddress, b: ListenAddress): number {
  return a.host < b.host ? -1 : a.host > b.host ? 1 : a.port - b.port;
}

/** Sends `text` and waits for the echo of it. */
async function roundTrip(c: Client, text: string): Promise<void> {
  const before = c.received;
  c.socket.write(text);
  await c.waitBytes(before + Buffer.byteLength(text));
  expect(c.data().subarray(before).toString()).toBe(text);
}

/** Ends our side and waits for the peer's clean FIN. */
async function endAndWaitEof(c: Client, timeoutMs = 10000): Promise<void> {
  c.socket.end();
  await until(() => c.ended || c.closed, 'EOF from the proxy', timeoutMs);
  expect({ ended: c.ended, error: c.error?.code ?? null }).toEqual({ ended: true, error: null });
}

describe.each(ENGINES)('%s engine', (engine) => {
  const env = { TCPPROXY_ENGINE: engine };
  /** Runs `body` with a proxy on this engine that has printed `listeners` "listening on" lines. */
  const proxyOn = (listeners: number, args: readonly string[], body: (p: Proxy) => Promise<void>): Promise<void> =>
    withProxy(args, { env, listeners }, async (p) => {
      await body(p);
      // A missing engine is announced (by a worker, once it starts), and then the
      // other one would have been tested unnoticed.
      expect(p.stderr()).not.toMatch(/engine unavailable/);
    });
  const proxy = (args: readonly string[], body: (p: Proxy) => Promise<void>): Promise<void> => proxyOn(1, args, body);

  it('forwards 50 MB each way at the same time, intact', async () => {
    const up = payload(50 * 1000 * 1000, `${engine}-up`);
    const down = payload(50 * 1000 * 1000, `${engine}-down`);
    const sink = await sinkServer({ send: down });
    await proxy(['-b', '127.0.0.1:0', `127.0.0.1:${sink.port}`], async (p) => {
      const a = onlyAddress(p);
      const c = await Client.connect(a.host, a.port, { keep: false });
      c.socket.end(up);
      await until(() => c.ended || c.closed, () => `the whole download and EOF (have ${c.received} bytes)`, 50000);
      await until(() => sink.received.length === 1, 'the upstream to see the whole upload and EOF', 10000);

      expect(c.error).toBeNull();
      expect(c.digest()).toEqual(digestOf(down));
      expect(sink.received[0]).toEqual(digestOf(up));
    });
  }, 60000);

  it('passes on a banner the upstream sends before the client says anything', async () => {
    const banner = '220 upstream.test ESMTP ready\r\n';
    const upstream = await speaksFirstServer(banner);
    await proxy(['-b', '127.0.0.1:0', `127.0.0.1:${upstream.port}`], async (p) => {
      const a = onlyAddress(p);
      const c = await Client.connect(a.host, a.port);
      await c.waitBytes(banner.length);
      expect(c.data().toString()).toBe(banner);
      await roundTrip(c, 'EHLO client.test\r\n');
      await endAndWaitEof(c);
    });
  }, 20000);

  it('keeps the upstream-to-client direction open after the client half-closes', async () => {
    const request = payload(MiB, `${engine}-half-close-request`);
    const reply = payload(MiB, `${engine}-half-close-reply`);
    const upstreamGot: Digest[] = [];
    const upstream = await startServer((socket) => {
      const hash = new StreamHash();
      socket.on('data', (chunk: Buffer) => hash.update(chunk));
      socket.on('end', () => {
        upstreamGot.push(hash.digest());
        // The reply comes well after the client's FIN: the proxy must not close the
        // client while this direction is still open.
        setTimeout(() => socket.end(reply), 200);
      });
    });
    await proxy(['-b', '127.0.0.1:0', `127.0.0.1:${upstream.port}`], async (p) => {
      const a = onlyAddress(p);
      const c = await Client.connect(a.host, a.port, { keep: false });
      c.socket.end(request);
      await until(() => c.ended || c.closed, 'the reply and EOF after the half-close', 15000);

      expect(upstreamGot).toEqual([digestOf(request)]);
      expect(c.error).toBeNull();
      expect(c.ended).toBe(true);
      expect(c.digest()).toEqual(digestOf(reply));
    });
  }, 30000);

  it('resets the client when the upstream resets', async () => {
    const upstream = await resetServer(1);
    await proxy(['-b', '127.0.0.1:0', `127.0.0.1:${upstream.port}`], async (p) => {
      const a = onlyAddress(p);
      const c = await Client.connect(a.host, a.port);
      c.socket.write('hello');
      await c.waitClosed(10000);

      expect(upstream.resets()).toBe(1);
      // A reset, not a clean FIN: ECONNRESET and no 'end'.
      expect({ ended: c.ended, error: c.error?.code ?? null }).toEqual({ ended: false, error: 'ECONNRESET' });
    });
  }, 20000);

  it('resets the upstream when the client resets', async () => {
    let upstreamEnded = false;
    const upstream = await startServer((socket) => {
      socket.on('end', () => {
        upstreamEnded = true;
      });
      socket.pipe(socket);
    });
    await proxy(['-b', '127.0.0.1:0', `127.0.0.1:${upstream.port}`], async (p) => {
      const a = onlyAddress(p);
      const c = await Client.connect(a.host, a.port);
      await roundTrip(c, 'hello');
      c.socket.resetAndDestroy();
      await until(() => upstream.sockets[0]?.destroyed === true, 'the upstream connection to close', 10000);

      const error = (upstream.errors[0] as NodeJS.ErrnoException | undefined)?.code ?? null;
      expect({ ended: upstreamEnded, error }).toEqual({ ended: false, error: 'ECONNRESET' });
    });
  }, 20000);

  it('keeps 200 concurrent connections apart', async () => {
    const count = 200;
    const size = 64 * 1024;
    const upstream = await echoServer();
    await proxy(['-b', '127.0.0.1:0', `127.0.0.1:${upstream.port}`], async (p) => {
      const a = onlyAddress(p);
      const payloads = Array.from({ length: count }, (_, i) => payload(size, `${engine}-conn-${i}`));
      // Every connection is open before any of them sends.
      const conns = await Promise.all(
        payloads.map(async (data) => ({ data, c: await Client.connect(a.host, a.port, { keep: false, timeoutMs: 10000 }) })),
      );
      for (const { c, data } of conns) c.socket.end(data);
      // On timeout, fall through: the list below says which connections did what.
      await until(() => conns.every(({ c }) => c.ended || c.closed), `all ${count} echoes and EOFs`, 40000).catch(
        () => undefined,
      );

      const wrong = conns.flatMap(({ c, data }, i) => {
        const got = c.digest();
        const same = got.sha256 === digestOf(data).sha256;
        if (c.error === null && c.ended && same) return [];
        const how = c.ended || c.closed ? c.describeEnd() : ' (still open after 40 s)';
        return [`connection ${i}: ${got.bytes} bytes${how}${same ? '' : ', wrong sha256'}`];
      });
      expect(wrong).toEqual([]);
      expect(upstream.sockets).toHaveLength(count);
    });
  }, 60000);

  it('routes one port on two interfaces to two upstreams', async () => {
    const upstreamA = await speaksFirstServer('banner A\n');
    const upstreamB = await speaksFirstServer('banner B\n');
    const port = await freePortOn(['127.0.0.2', '127.0.0.3']);
    const conf = tmp.config(
      [
        `port ${port}`,
        'interface 127.0.0.2',
        `server 127.0.0.1:${upstreamA.port}`,
        'interface 127.0.0.3',
        `server 127.0.0.1:${upstreamB.port}`,
        '',
      ].join('\n'),
    );
    await proxyOn(2, ['-s', '-f', conf], async (p) => {
      expect([...p.addresses].sort(byHost)).toEqual([
        { host: '127.0.0.2', port },
        { host: '127.0.0.3', port },
      ]);
      const ca = await Client.connect('127.0.0.2', port);
      const cb = await Client.connect('127.0.0.3', port);
      await ca.waitBytes('banner A\n'.length);
      await cb.waitBytes('banner B\n'.length);
      expect(ca.data().toString()).toBe('banner A\n');
      expect(cb.data().toString()).toBe('banner B\n');
      await endAndWaitEof(ca);
      await endAndWaitEof(cb);
      expect(upstreamA.sockets).toHaveLength(1);
      expect(upstreamB.sockets).toHaveLength(1);
    });
  }, 20000);

  it('connects to the port the client used when the server has none', async () => {
    const port = await freePortOn(['127.0.0.1', '127.0.0.2']);
    const banner = `upstream on 127.0.0.1:${port}\n`;
    const upstream = await speaksFirstServer(banner, { host: '127.0.0.1', port });
    const conf = tmp.config([`port ${port}`, 'interface 127.0.0.2', 'server 127.0.0.1', ''].join('\n'));
    await proxy(['-s', '-f', conf], async (p) => {
      expect(p.addresses).toEqual([{ host: '127.0.0.2', port }]);
      const c = await Client.connect('127.0.0.2', port);
      await c.waitBytes(banner.length);
      expect(c.data().toString()).toBe(banner);
      await roundTrip(c, 'ping\n');
      await endAndWaitEof(c);
      expect(upstream.sockets).toHaveLength(1);
    });
  }, 20000);

  it('closes a client whose upstream refuses within 2 s and keeps serving the others', async () => {
    const refusing = await freePort('127.0.0.1'); // nothing listens there
    const echo = await echoServer();
    const port = await freePortOn(['127.0.0.2', '127.0.0.3']);
    const conf = tmp.config(
      [
        `port ${port}`,
        'interface 127.0.0.2',
        `server 127.0.0.1:${refusing}`,
        'interface 127.0.0.3',
        `server 127.0.0.1:${echo.port}`,
        '',
      ].join('\n'),
    );
    await proxyOn(2, ['-s', '-f', conf], async (p) => {
      const before = await Client.connect('127.0.0.3', port);
      await roundTrip(before, 'before\n');

      const refused = await Client.connect('127.0.0.2', port);
      await refused.waitClosed(5000);
      expect(refused.lifetimeMs()).toBeLessThan(2000);
      expect(refused.received).toBe(0);

      // The session that was open all along and a new one are both served.
      await roundTrip(before, 'after\n');
      const after = await Client.connect('127.0.0.3', port);
      await roundTrip(after, 'new\n');
      await endAndWaitEof(before);
      await endAndWaitEof(after);
      expect(p.exit()).toBeNull();
    });
  }, 20000);

  it('closes an idle session after the timeout and keeps an active one', async () => {
    const upstream = await echoServer();
    await proxy(['-t', '1', '-b', '127.0.0.1:0', `127.0.0.1:${upstream.port}`], async (p) => {
      const a = onlyAddress(p);
      const idle = await Client.connect(a.host, a.port);
      const active = await Client.connect(a.host, a.port);
      // One byte every 200 ms for 2.6 s: never idle for the 1 s timeout.
      const letters = 'abcdefghijklm';
      let sent = '';
      await new Promise<void>((resolve) => {
        const timer = setInterval(() => {
          const next = letters[sent.length];
          if (next === undefined || active.closed) {
            clearInterval(timer);
            resolve();
            return;
          }
          active.socket.write(next);
          sent += next;
        }, 200);
      });
      if (active.closed) {
        throw new Error(`the active session was closed after ${active.lifetimeMs()} ms${active.describeEnd()}, with "${sent}" sent`);
      }
      await active.waitBytes(letters.length, 5000);
      expect(active.data().toString()).toBe(letters);
      expect(active.closed).toBe(false);

      await idle.waitClosed(5000);
      expect(idle.received).toBe(0);
      expect(idle.lifetimeMs()).toBeGreaterThanOrEqual(800);
      expect(idle.lifetimeMs()).toBeLessThanOrEqual(3000);

      await endAndWaitEof(active);
    });
  }, 20000);

  it('exits 1 naming the address when the port is already in use', async () => {
    const blocker = await startServer((socket) => socket.destroy());
    const r = await runCli(['-D', '-b', `127.0.0.1:${blocker.port}`, '127.0.0.1:1'], { env, timeoutMs: 10000 });

    expect(r.timedOut).toBe(false);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`127.0.0.1:${blocker.port}`);
    expect(r.stderr).toContain('EADDRINUSE');
  }, 20000);

  itIpv6('forwards over IPv6', async () => {
    const upstream = await echoServer({ host: '::1' });
    await proxy(['-b', '[::1]:0', `[::1]:${upstream.port}`], async (p) => {
      const a = onlyAddress(p);
      expect(a.host).toBe('::1');
      const data = payload(256 * 1024, `${engine}-ipv6`);
      const c = await Client.connect('::1', a.port, { keep: false });
      c.socket.end(data);
      await until(() => c.ended || c.closed, 'the echo and EOF', 10000);
      expect(c.error).toBeNull();
      expect(c.digest()).toEqual(digestOf(data));
      expect(upstream.peers).toEqual(['::1']);
    });
  }, 20000);
});
