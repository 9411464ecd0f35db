/**
 * PROXY protocol, server groups and the source address in inetd mode
 * (issue 14), as root, on loopback:
 *
 * - under a real openbsd-inetd with HAProxy in front (send-proxy and
 *   send-proxy-v2, from 127.0.0.8): tcpproxy accept-proxy becomes the exec
 *   handler, which sees HAProxy's client 127.0.0.7 in PROXY_CLIENT;
 * - started directly with the accepted socket on fds 0, 1 and 2
 *   (helpers/inetd serveOneConnection), on both engines: a hand-written
 *   header's client reaches nginx through send-proxy v1|v2 (IPv4 and IPv6),
 *   a header split over several segments, a header and 10 MiB in one write
 *   (sha256 at the upstream), garbage, an untrusted source and a slowloris
 *   header refused (the refusal lines go to syslog, the only log in inetd
 *   mode: the test owns /dev/log, helpers/syslog), a group from the command
 *   line (the first refused), `source 127.0.0.9`.
 */
import { Client } from '../helpers/client';
import { assertBuilt, ENGINES, re } from '../helpers/daemon';
import { executable, INETD, type Inetd, type Served, serveOneConnection, startInetd, tcpproxyService, waitEnd } from '../helpers/inetd';
import { explained, ipv6Cases, literal, nameOf, proxyVars } from '../helpers/interop';
import { nginxAddresses, PROXY_ADDRESSES, requirePeers, startHaproxy, startNginx } from '../helpers/peers';
import { freePort } from '../helpers/ports';
import { type Endpoint, formatEndpoint, headerServer, type HeaderUpstream, v1Header, v2Header } from '../helpers/proxy-header';
import { requireRoot } from '../helpers/root';
import { digestOf, echoServer, payload } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { SyslogSink } from '../helpers/syslog';
import { holds, until } from '../helpers/until';

const MiB = 1024 * 1024;
const TIMEOUT_TEXT = 'no complete PROXY header within 5 s';
const SRC: Endpoint = { address: '192.0.2.7', port: 5555 };
const DST: Endpoint = { address: '198.51.100.1', port: 80 };

const FAMILIES = [
  { name: 'IPv4', local: '127.0.0.1', client: '127.0.0.7', src: SRC },
  ...(ipv6Cases('interop/inetd.test.ts') ? [{ name: 'IPv6', local: '::1', client: '::1', src: { address: '2001:db8::7', port: 5555 } }] : []),
] as const;

let sink: SyslogSink | null = null;

beforeAll(() => {
  assertBuilt();
  requireRoot();
  requirePeers();
  if (!executable(INETD)) throw new Error(`${INETD} is missing: apt-get install -y openbsd-inetd`);
});
const tmp = useTempDir('tcpproxy-interop-inetd-');
beforeAll(async () => {
  // Waits while a concurrent run of the syslog tests owns /dev/log (see SyslogSink.open).
  sink = await SyslogSink.open('auto', 120000);
}, 150000);
cleanUpAfterEach();
afterAll(async () => {
  await sink?.close();
});

function theSink(): SyslogSink {
  if (sink === null) throw new Error('no syslog sink');
  return sink;
}

/** What tcpproxy (pid) sent to syslog so far. */
function messagesOf(pid: number): string[] {
  return theSink()
    .records()
    .filter((r) => r.pid === pid)
    .map((r) => r.message);
}

/** tcpproxy's exit code (or signal), bounded. */
async function exitOf(s: Served, timeoutMs = 10000): Promise<number | string> {
  await until(() => s.proxy.exit() !== null, `tcpproxy ${s.proxy.argv.slice(2).join(' ')} to exit`, timeoutMs);
  const e = s.proxy.exit();
  return e?.signal ?? e?.code ?? '?';
}

/** A failure message with tcpproxy's syslog messages. */
async function withSyslog(s: Served, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (err instanceof Error) err.message += `\n--- syslog of pid ${s.proxy.pid} ---\n${messagesOf(s.proxy.pid).join('\n')}`;
    throw err;
  }
}

/** The upstream's first connection has ended (or was refused), or tcpproxy exited without ever connecting. */
function upstreamDone(up: HeaderUpstream, s: Served): boolean {
  const c = up.connections[0];
  return c?.done != null || c?.invalid != null || (c === undefined && s.proxy.exit() !== null);
}

// ===================================================================== harness

describe('harness self-check', () => {
  it('HAProxy (source 127.0.0.8) → openbsd-inetd → tcpproxy exec handler, no PROXY protocol: PROXY_CLIENT is HAProxy', async () => {
    const port = await freePort();
    const conf = tmp.config([`port ${port}`, '  exec /usr/bin/env']);
    const inetd = await startInetd(tmp.path, [tcpproxyService('127.0.0.1', port, ['-f', conf])]);
    const hx = await startHaproxy(tmp.path, [{ bind: { host: '127.0.0.1' }, servers: [{ host: '127.0.0.1', port, source: '127.0.0.8' }] }]);
    const logs = { argv: ['syslog of the services inetd started'], stderr: () => inetd.started().flatMap(messagesOf).join('\n') };
    await explained(() => [inetd, hx, logs], async () => {
      const bind = hx.binds[0] as { host: string; port: number };
      const c = await Client.connect(bind.host, bind.port, { localAddress: '127.0.0.7' });
      await waitEnd(c);
      expect(proxyVars(c.data().toString())).toMatchObject({ PROXY_CLIENT: '127.0.0.8', PROXY_INTERFACE: '127.0.0.1', PROXY_PORT: String(port) });
      await until(() => inetd.reaped().size === 1, 'inetd to reap the handler');
    });
  }, 30000);

  it.each(ENGINES)('fds 0, 1 and 2 (%s engine) → tcpproxy → nginx without proxy_protocol: nginx sees tcpproxy; exit 0', async (engine) => {
    const nx = await startNginx(tmp.path, [{ listen: { host: '127.0.0.1' }, proxyProtocol: false, returns: '$remote_addr\\n' }]);
    const nport = (nx.binds[0] as { port: number }).port;
    const s = await serveOneConnection([`127.0.0.1:${nport}`], { env: { ...process.env, TCPPROXY_ENGINE: engine }, localAddress: '127.0.0.7' });
    await explained(() => [nx], async () => {
      await waitEnd(s.client);
      expect(s.client.data().toString()).toBe('127.0.0.1\n');
      expect(await exitOf(s)).toBe(0);
    });
  });
});

// ================================================================ openbsd-inetd

describe('openbsd-inetd with HAProxy in front', () => {
  it.each([1, 2] as const)('send-proxy v%d → inetd → tcpproxy accept-proxy → exec handler: PROXY_CLIENT is the client HAProxy saw', async (v) => {
    const port = await freePort();
    const conf = tmp.config([`port ${port}`, '  accept-proxy 127.0.0.8', '  exec /usr/bin/env']);
    const inetd: Inetd = await startInetd(tmp.path, [tcpproxyService('127.0.0.1', port, ['-f', conf])]);
    const hx = await startHaproxy(tmp.path, [{ bind: { host: '127.0.0.1' }, servers: [{ host: '127.0.0.1', port, sendProxy: v, source: '127.0.0.8' }] }]);
    // The syslog of the tcpproxy processes inetd started (it reaches the sink when the sink owns /dev/log).
    const logs = { argv: ['syslog of the services inetd started'], stderr: () => inetd.started().flatMap(messagesOf).join('\n') };
    await explained(() => [inetd, hx, logs], async () => {
      const bind = hx.binds[0] as { host: string; port: number };
      const c = await Client.connect(bind.host, bind.port, { localAddress: '127.0.0.7' });
      await waitEnd(c);
      expect(proxyVars(c.data().toString())).toEqual({
        PROXY_CLIENT: '127.0.0.7',
        PROXY_CLIENTNAME: await nameOf('127.0.0.7'),
        PROXY_INTERFACE: '127.0.0.1',
        PROXY_PORT: String(port),
      });
      await until(() => inetd.started().length === 1 && inetd.reaped().size === 1, 'inetd to reap the handler');
      expect(inetd.reaped().get(inetd.started()[0] ?? -1)).toBe(0);
    });
  }, 30000);
});

// ============================================================ fd 0 (direct runs)

describe.each(ENGINES)('fds 0, 1 and 2, %s engine', (engine) => {
  const env = { ...process.env, TCPPROXY_ENGINE: engine };

  /** Serves one connection (from `from`, to `host`) with a config of one any-interface service on its port: `lines` in the port block. */
  async function serve(lines: readonly string[], opts: { readonly from?: string; readonly host?: string } = {}): Promise<{ s: Served; port: number; key: string }> {
    const host = opts.host ?? '127.0.0.1';
    const port = await freePort(host);
    const conf = tmp.config([`port ${port}`, ...lines.map((l) => `  ${l}`)]);
    const s = await serveOneConnection(['-f', conf], {
      env,
      port,
      host,
      localAddress: opts.from ?? (host === '::1' ? '::1' : '127.0.0.7'),
      ...(theSink().mode === 'bind-mount' ? { syslog: theSink() } : {}),
    });
    return { s, port, key: `*:${port}` };
  }

  /** The refusal of a served connection: closed with no byte, exactly the one syslog line, tcpproxy exits, the upstream never contacted. */
  async function expectRefused(s: Served, key: string, reason: string | RegExp, upstreamConnections: () => number, withinMs: number): Promise<void> {
    await waitEnd(s.client, withinMs);
    expect(s.client.received).toBe(0);
    const peer = formatEndpoint({ address: s.client.local.address, port: s.client.local.port });
    const start = `service ${key}: refused ${peer}: `;
    const r = await theSink().waitFor((x) => x.pid === s.proxy.pid && x.message.startsWith(start), start, 5000);
    const got = r.message.slice(start.length);
    if (typeof reason === 'string') expect(got).toBe(reason);
    else expect(got).toMatch(reason);
    await exitOf(s);
    expect(messagesOf(s.proxy.pid).filter((m) => m.includes(peer))).toEqual([r.message]);
    expect(upstreamConnections()).toBe(0);
  }

  describe.each(FAMILIES)('$name', (f) => {
    it.each([1, 2] as const)('accept-proxy + send-proxy v%d → nginx: the header\'s client comes back; the destination is the socket\'s', async (v) => {
      const nx = await startNginx(tmp.path, [{ listen: { host: f.local }, proxyProtocol: true, returns: PROXY_ADDRESSES }]);
      const nport = (nx.binds[0] as { port: number }).port;
      const { s, port } = await serve(['accept-proxy', `send-proxy v${v}`, `server ${literal(f.local, nport)}`], { host: f.local });
      await explained(() => [nx], () =>
        withSyslog(s, async () => {
          s.client.socket.write(f.name === 'IPv4' ? v1Header(SRC, DST) : v2Header(f.src, { address: '2001:db8::1', port: 80 }));
          await waitEnd(s.client);
          expect(s.client.data().toString()).toBe(nginxAddresses(f.src, { address: f.local, port }));
          expect(await exitOf(s)).toBe(0);
        }),
      );
    });
  });

  it('a v2 header split over several segments, then 10 MiB after another header in one write: intact at the upstream', async () => {
    const up = await headerServer();
    const { s, port } = await serve(['accept-proxy', 'send-proxy v2', `server 127.0.0.1:${up.port}`]);
    await withSyslog(s, async () => {
      const header = v2Header(SRC, DST);
      s.client.socket.setNoDelay(true);
      let from = 0;
      for (const cut of [7, 13, 16, 23]) {
        s.client.socket.write(header.subarray(from, cut));
        from = cut;
        await holds(() => up.connections.length === 0 && !s.client.closed, 'no upstream connection with a partial header', 150);
      }
      const data = payload(10 * MiB, `inetd-split-${engine}`);
      s.client.socket.end(Buffer.concat([header.subarray(from), data]));
      await until(() => upstreamDone(up, s), 'the upstream to see a header, 10 MiB and EOF', 30000);
      const got = up.connections[0];
      expect({ invalid: got?.invalid, source: got?.header?.source, destination: got?.header?.destination }).toEqual({
        invalid: null,
        source: SRC,
        destination: { address: '127.0.0.1', port },
      });
      expect(got?.done).toEqual(digestOf(data));
      expect(await exitOf(s)).toBe(0);
    });
  }, 60000);

  it('a v1 header and 10 MiB after it in one write: sha256 of the 10 MiB at the upstream', async () => {
    const up = await headerServer();
    const { s } = await serve(['accept-proxy', 'send-proxy v1', `server 127.0.0.1:${up.port}`]);
    await withSyslog(s, async () => {
      const data = payload(10 * MiB, `inetd-one-write-${engine}`);
      s.client.socket.end(Buffer.concat([v1Header(SRC, DST), data]));
      await until(() => upstreamDone(up, s), 'the upstream to see a header, 10 MiB and EOF', 30000);
      expect(up.connections[0]?.header?.source).toEqual(SRC);
      expect(up.connections[0]?.done).toEqual(digestOf(data));
      expect(await exitOf(s)).toBe(0);
    });
  }, 60000);

  it('garbage instead of a header: refused at once, logged, nothing forwarded', async () => {
    const echo = await echoServer();
    const { s, key } = await serve(['accept-proxy', `server 127.0.0.1:${echo.port}`]);
    await withSyslog(s, async () => {
      s.client.socket.write('GET / HTTP/1.0\r\n\r\n');
      await expectRefused(s, key, new RegExp(`^(?!${re(TIMEOUT_TEXT)}$).+`), () => echo.sockets.length, 3000);
    });
  });

  it('an untrusted source: refused at once with "untrusted PROXY source", nothing forwarded', async () => {
    const echo = await echoServer();
    const { s, key } = await serve(['accept-proxy 127.0.0.8', `server 127.0.0.1:${echo.port}`], { from: '127.0.0.7' });
    await withSyslog(s, async () => {
      s.client.socket.write(v1Header(SRC, DST));
      await expectRefused(s, key, 'untrusted PROXY source', () => echo.sockets.length, 3000);
    });
  });

  it('a slowloris header (1 byte a second): cut off after 5 s, logged, nothing forwarded', async () => {
    const echo = await echoServer();
    const { s, key } = await serve(['accept-proxy', `server 127.0.0.1:${echo.port}`]);
    await withSyslog(s, async () => {
      const header = v1Header(SRC, DST);
      let sent = 0;
      const c = s.client;
      const drip = setInterval(() => {
        if (c.closed || c.ended || sent >= header.length) return;
        c.socket.write(header.subarray(sent, sent + 1));
        sent++;
      }, 1000);
      try {
        c.socket.write(header.subarray(0, 1));
        sent = 1;
        await waitEnd(c, 9000);
      } finally {
        clearInterval(drip);
      }
      const lived = Date.now() - c.connectedAt;
      expect(lived).toBeGreaterThanOrEqual(4500);
      expect(lived).toBeLessThan(8000);
      await expectRefused(s, key, TIMEOUT_TEXT, () => echo.sockets.length, 1000);
    });
  }, 30000);

  it('several servers on the command line are a group: the first refused, the second served; exit 0', async () => {
    const refused = await freePort();
    const echo = await echoServer();
    const s = await serveOneConnection([`127.0.0.1:${refused}`, `127.0.0.1:${echo.port}`], {
      env,
      ...(theSink().mode === 'bind-mount' ? { syslog: theSink() } : {}),
    });
    await withSyslog(s, async () => {
      s.client.socket.end('through the second');
      await waitEnd(s.client);
      expect(s.client.data().toString()).toBe('through the second');
      expect(echo.sockets).toHaveLength(1);
      const line = new RegExp(`^connection \\d+: server ${re(`127.0.0.1:${refused}`)}: connect ECONNREFUSED ${re(`127.0.0.1:${refused}`)}$`);
      await theSink().waitFor((r) => r.pid === s.proxy.pid && line.test(r.message), String(line));
      expect(await exitOf(s)).toBe(0);
    });
  });

  it('source 127.0.0.9: the upstream sees the connection from 127.0.0.9', async () => {
    const echo = await echoServer();
    const { s } = await serve(['source 127.0.0.9', `server 127.0.0.1:${echo.port}`]);
    await withSyslog(s, async () => {
      s.client.socket.end('from .9');
      await waitEnd(s.client);
      expect(s.client.data().toString()).toBe('from .9');
      expect(echo.peers).toEqual(['127.0.0.9']);
      expect(await exitOf(s)).toBe(0);
    });
  });
});
