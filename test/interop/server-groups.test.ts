/**
 * Server groups, failover and the outgoing source address (issue 14), as
 * root, on loopback, through the built CLI, on the native fast path and in
 * the session code (helpers/interop FORWARD_PATHS; the roundrobin and
 * balance cases also with a host name):
 *
 * - failover over three servers: the first refused (a free literal port),
 *   the second silent (helpers/peers silentServer: a full accept queue, so
 *   the connect runs into its 10 s bound), the third served; the error line
 *   of each failed attempt and one `down for 10 s` line each, in order;
 * - a down server is tried after the up ones, and `up again` is logged once
 *   when a connection to it succeeds;
 * - `balance roundrobin` spreads 30 connections 10/10/10, `first` sends all
 *   to the first, `source` keeps each client address on one server;
 * - `source 127.0.0.9`: the upstream sees the connection from 127.0.0.9, also
 *   after a failed attempt; an address that cannot be bound fails the start;
 * - send-proxy through a group, and a group from the command line (-b).
 *
 * Each connection is made only after the previous one ended: the counts and
 * the order of the log lines are exact.
 */
import * as net from 'node:net';
import * as os from 'node:os';
import { Client } from '../helpers/client';
import { type Daemon, assertBuilt, logLines, re, runCli, startDaemon, waitLog } from '../helpers/daemon';
import { acceptLine, engineEnv, explained, FORWARD_PATHS, IPV4_PATHS, startTcpproxy, type ForwardPath } from '../helpers/interop';
import { acceptQueue, requirePeers, silentServer } from '../helpers/peers';
import { freePort, freePorts, portOf, tryConnect } from '../helpers/ports';
import { headerServer } from '../helpers/proxy-header';
import { requireRoot } from '../helpers/root';
import { echoServer, speaksFirstServer, type Upstream } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { holds, until } from '../helpers/until';

const CONNECT_BOUND_MS = 10_000;

beforeAll(() => {
  assertBuilt();
  requireRoot();
  requirePeers();
});
const tmp = useTempDir('tcpproxy-interop-groups-');
cleanUpAfterEach();

/** One connection: sends `text`, ends, waits for the echo and EOF; returns what came back. */
async function echoOnce(port: number, text: string, opts: { readonly localAddress?: string; readonly timeoutMs?: number } = {}): Promise<{ back: string; client: Client }> {
  const c = await Client.connect('127.0.0.1', port, opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {});
  c.socket.end(text);
  await until(() => c.ended || c.closed, () => `the echo of ${JSON.stringify(text)} and EOF (have ${JSON.stringify(c.data().toString())})`, opts.timeoutMs ?? 10000);
  return { back: c.data().toString(), client: c };
}

/** The group's lines in tcpproxy's log: connect errors (`connection N: server ...`) and `service KEY: server ...` ones, in order. */
function groupLines(stderr: string, key: string): string[] {
  return logLines(stderr).filter((l) => /^connection \d+: server /.test(l) || l.startsWith(`service ${key}: server `));
}

/** The connection number of the accept line of `c` (client `c`, local 127.0.0.1:port, `target`). */
async function connectionId(tp: Daemon, c: Client, port: number, target: string): Promise<string> {
  const [, id] = await waitLog(tp.stderr, acceptLine({ address: c.local.address, port: c.local.port }, null, { address: '127.0.0.1', port }, target));
  return id ?? '?';
}

describe('harness self-check', () => {
  it('the three servers of the failover case: a free literal port refuses, the silent one never answers, the echo one echoes', async () => {
    const refused = await freePort();
    expect(await tryConnect(refused)).toBe('ECONNREFUSED');
    const silent = await silentServer();
    const probe = net.connect({ host: silent.host, port: silent.port });
    let state = 'connecting';
    probe.once('connect', () => (state = 'connected'));
    probe.once('error', (e: NodeJS.ErrnoException) => (state = e.code ?? 'error'));
    try {
      await holds(() => state === 'connecting', () => `a connect to the silent server to stay unanswered (${state})`, 1500);
    } finally {
      probe.destroy();
    }
    expect(acceptQueue(silent.proc.pid, silent.port)).toBe(1);
    const echo = await echoServer();
    const c = await Client.connect('127.0.0.1', echo.port);
    c.socket.end('x');
    await c.waitClosed();
    expect(c.data().toString()).toBe('x');
    await silent.close();
  });
});

describe.each(FORWARD_PATHS)('failover, $name', (p: ForwardPath) => {
  it('three servers: the first refused, the second silent (its 10 s connect bound), the third served; each failure logged, then "down for 10 s" once', async () => {
    const refused = await freePort();
    const silent = await silentServer();
    const third = await echoServer();
    const port = await freePort();
    const servers = [p.server('127.0.0.1', refused), p.server('127.0.0.1', silent.port), p.server('127.0.0.1', third.port)];
    const tp = await startTcpproxy(tmp, [`port ${port}`, '  interface 127.0.0.1', `    server ${servers.join(' ')}`], p.engine);
    const key = `127.0.0.1:${port}`;
    await explained(() => [tp], async () => {
      const started = Date.now();
      const { back, client } = await echoOnce(port, 'served by the third\n', { timeoutMs: CONNECT_BOUND_MS + 15000 });
      const took = Date.now() - started;
      expect({ back, error: client.error?.code ?? null }).toEqual({ back: 'served by the third\n', error: null });
      expect(took).toBeGreaterThanOrEqual(CONNECT_BOUND_MS - 500);
      expect(took).toBeLessThan(CONNECT_BOUND_MS + 8000);
      expect(third.sockets).toHaveLength(1);
      // The silent server never got past its filler: tcpproxy's SYNs were dropped, not queued.
      expect(acceptQueue(silent.proc.pid, silent.port)).toBe(1);

      const id = await connectionId(tp, client, port, `server ${servers.join(' ')}`);
      const s1 = `127.0.0.1:${refused}`;
      const s2 = `127.0.0.1:${silent.port}`;
      await waitLog(tp.stderr, new RegExp(`^service ${re(key)}: server ${re(s2)}: down for 10 s$`));
      expect(groupLines(tp.stderr(), key)).toEqual([
        `connection ${id}: server ${s1}: connect ECONNREFUSED ${s1}`,
        `service ${key}: server ${s1}: down for 10 s`,
        `connection ${id}: server ${s2}: connect ${s2}: timed out`,
        `service ${key}: server ${s2}: down for 10 s`,
      ]);
    });
  }, 60000);

  it('a down server is tried after the up ones; when a connection to it succeeds again: "up again", once', async () => {
    const [first, second] = (await freePorts(2)) as [number, number];
    const secondUp = await echoServer({ port: second });
    const port = await freePort();
    const s1 = `127.0.0.1:${first}`;
    const s2 = `127.0.0.1:${second}`;
    const tp = await startTcpproxy(tmp, [`port ${port}`, '  interface 127.0.0.1', `    server ${p.server('127.0.0.1', first)} ${p.server('127.0.0.1', second)}`], p.engine);
    const key = `127.0.0.1:${port}`;
    const target = `server ${p.server('127.0.0.1', first)} ${p.server('127.0.0.1', second)}`;
    await explained(() => [tp], async () => {
      // 1: the first refuses (down for 10 s), the second serves.
      const one = await echoOnce(port, 'one');
      expect(one.back).toBe('one');
      const id1 = await connectionId(tp, one.client, port, target);
      await waitLog(tp.stderr, new RegExp(`^service ${re(key)}: server ${re(s1)}: down for 10 s$`));
      // 2: the first is down: the second is tried first, and serves; nothing new is logged about the first.
      const two = await echoOnce(port, 'two');
      expect(two.back).toBe('two');
      expect(secondUp.sockets).toHaveLength(2);
      expect(groupLines(tp.stderr(), key)).toEqual([`connection ${id1}: server ${s1}: connect ECONNREFUSED ${s1}`, `service ${key}: server ${s1}: down for 10 s`]);

      // 3: the first listens now, the second refuses: the second (up) fails and goes down, the first (down) is tried and serves.
      const firstUp = await echoServer({ port: first });
      await secondUp.close();
      const three = await echoOnce(port, 'three');
      expect(three.back).toBe('three');
      expect(firstUp.sockets).toHaveLength(1);
      const id3 = await connectionId(tp, three.client, port, target);
      await waitLog(tp.stderr, new RegExp(`^service ${re(key)}: server ${re(s1)}: up again$`));
      // 4: the first is up, the second down: the first serves, and "up again" is not logged twice.
      const four = await echoOnce(port, 'four');
      expect(four.back).toBe('four');
      expect(firstUp.sockets).toHaveLength(2);
      expect(groupLines(tp.stderr(), key)).toEqual([
        `connection ${id1}: server ${s1}: connect ECONNREFUSED ${s1}`,
        `service ${key}: server ${s1}: down for 10 s`,
        `connection ${id3}: server ${s2}: connect ECONNREFUSED ${s2}`,
        `service ${key}: server ${s2}: down for 10 s`,
        `service ${key}: server ${s1}: up again`,
      ]);
    });
  }, 30000);

  it('send-proxy through a group: the header goes to the server that answered, with the client', async () => {
    const refused = await freePort();
    const up = await headerServer();
    const port = await freePort();
    const tp = await startTcpproxy(
      tmp,
      [`port ${port}`, '  interface 127.0.0.1', '    send-proxy v2', `    server ${p.server('127.0.0.1', refused)} ${p.server('127.0.0.1', up.port)}`],
      p.engine,
    );
    await explained(() => [tp], async () => {
      const c = await Client.connect('127.0.0.1', port, { localAddress: '127.0.0.7' });
      c.socket.end('after the header');
      await until(() => up.connections[0]?.done != null || up.connections[0]?.invalid != null, 'the upstream to see a header, the bytes and EOF');
      expect(up.connections.map((x) => ({ invalid: x.invalid, source: x.header?.source, destination: x.header?.destination }))).toEqual([
        { invalid: null, source: { address: '127.0.0.7', port: c.local.port }, destination: { address: '127.0.0.1', port } },
      ]);
    });
  });

  it('-b with several servers on the command line is a group: the first refused, the second served', async () => {
    const refused = await freePort();
    const echo = await echoServer();
    const tp = await startDaemon({ args: ['-b', '127.0.0.1:0', p.server('127.0.0.1', refused), p.server('127.0.0.1', echo.port)], env: engineEnv(p.engine) });
    const port = portOf(tp);
    const key = `127.0.0.1:${port}`;
    const s1 = `127.0.0.1:${refused}`;
    await explained(() => [tp], async () => {
      const { back, client } = await echoOnce(port, 'via the command line');
      expect(back).toBe('via the command line');
      const id = await connectionId(tp, client, port, `server ${p.server('127.0.0.1', refused)} ${p.server('127.0.0.1', echo.port)}`);
      await waitLog(tp.stderr, new RegExp(`^service ${re(key)}: server ${re(s1)}: down for 10 s$`));
      expect(groupLines(tp.stderr(), key)).toEqual([`connection ${id}: server ${s1}: connect ECONNREFUSED ${s1}`, `service ${key}: server ${s1}: down for 10 s`]);
    });
  });
});

describe.each(IPV4_PATHS)('balance, $name', (p: ForwardPath) => {
  /** Three servers that greet with their letter; tcpproxy with `balance WORD` (or none) over them. */
  async function three(balance: string | null): Promise<{ tp: Daemon; port: number; ups: Upstream[] }> {
    const ups = [await speaksFirstServer('A\n'), await speaksFirstServer('B\n'), await speaksFirstServer('C\n')];
    const port = await freePort();
    const tp = await startTcpproxy(
      tmp,
      [`port ${port}`, '  interface 127.0.0.1', ...(balance === null ? [] : [`    balance ${balance}`]), `    server ${ups.map((u) => p.server('127.0.0.1', u.port)).join(' ')}`],
      p.engine,
    );
    return { tp, port, ups };
  }

  /** The letter of the server that served one connection from `from`. */
  async function servedBy(port: number, from?: string): Promise<string> {
    const { back, client } = await echoOnce(port, 'x', from !== undefined ? { localAddress: from } : {});
    expect(client.error).toBeNull();
    return back.slice(0, 1);
  }

  it('roundrobin spreads 30 connections 10/10/10', async () => {
    const { tp, port, ups } = await three('roundrobin');
    await explained(() => [tp], async () => {
      const letters: string[] = [];
      for (let i = 0; i < 30; i++) letters.push(await servedBy(port));
      expect(ups.map((u) => u.sockets.length)).toEqual([10, 10, 10]);
      expect(['A', 'B', 'C'].map((l) => letters.filter((x) => x === l).length)).toEqual([10, 10, 10]);
      // Rotating: never the same server twice in a row.
      expect(letters.some((l, i) => i > 0 && l === letters[i - 1])).toBe(false);
    });
  }, 60000);

  it('first (the default, and written in any case) sends every connection to the first server while it is up', async () => {
    for (const balance of [null, 'FIRST']) {
      const { tp, port, ups } = await three(balance);
      await explained(() => [tp], async () => {
        for (let i = 0; i < 10; i++) expect(await servedBy(port)).toBe('A');
        expect(ups.map((u) => u.sockets.length)).toEqual([10, 0, 0]);
      });
      await tp.stop();
    }
  });

  it('source: each client address stays on one server', async () => {
    const { tp, port, ups } = await three('source');
    await explained(() => [tp], async () => {
      const seen = new Map<string, Set<string>>();
      for (const from of ['127.0.0.7', '127.0.0.11', '127.0.0.23', '127.0.0.42']) {
        const letters = new Set<string>();
        for (let i = 0; i < 5; i++) letters.add(await servedBy(port, from));
        seen.set(from, letters);
      }
      expect([...seen].filter(([, l]) => l.size !== 1)).toEqual([]);
      expect(ups.reduce((n, u) => n + u.sockets.length, 0)).toBe(20);
    });
  }, 60000);
});

describe.each(FORWARD_PATHS)('source address, $name', (p: ForwardPath) => {
  it('source 127.0.0.9: the upstream sees the connection from 127.0.0.9', async () => {
    const echo = await echoServer();
    const port = await freePort();
    const tp = await startTcpproxy(tmp, [`port ${port}`, '  interface 127.0.0.1', '    source 127.0.0.9', `    server ${p.server('127.0.0.1', echo.port)}`], p.engine);
    await explained(() => [tp], async () => {
      expect((await echoOnce(port, 'from .9')).back).toBe('from .9');
      expect(echo.peers).toEqual(['127.0.0.9']);
    });
  });

  it('source is bound before every attempt: after a refused server the next one sees 127.0.0.9 too', async () => {
    const refused = await freePort();
    const echo = await echoServer();
    const port = await freePort();
    const tp = await startTcpproxy(
      tmp,
      [`port ${port}`, '  source 127.0.0.9', '  interface 127.0.0.1', `    server ${p.server('127.0.0.1', refused)} ${p.server('127.0.0.1', echo.port)}`],
      p.engine,
    );
    await explained(() => [tp], async () => {
      expect((await echoOnce(port, 'after a failure')).back).toBe('after a failure');
      expect(echo.peers).toEqual(['127.0.0.9']);
    });
  });
});

it('a source address that cannot be bound fails the start: exit 1, the message at its line', async () => {
  const addr = '198.51.100.77';
  const local = Object.values(os.networkInterfaces()).some((list) => list?.some((i) => i.address === addr));
  if (local) throw new Error(`${addr} is an address of this host: the test needs one that is not`);
  const port = await freePort();
  const conf = tmp.config([`port ${port}`, '  interface 127.0.0.1', `    source ${addr}`, `    server 127.0.0.1:${await freePort()}`]);
  const r = await runCli(['-D', '-f', conf], { timeoutMs: 10000 });
  expect({ code: r.code, timedOut: r.timedOut }).toEqual({ code: 1, timedOut: false });
  expect(r.stderr).toMatch(new RegExp(`^tcpproxy:${re(conf)}:3: cannot bind source address ${re(addr)}: EADDRNOTAVAIL \\(.+\\)$`, 'm'));
  expect(r.stderr).not.toMatch(/listening on/);
});
