/**
 * Listening sockets belong to services, connections to workers (as root):
 * a port's any-interface entry and its interface entries each get a socket
 * and each reach their own service, also after a SIGHUP that switches a
 * port between the two forms; a port another program holds (even with
 * SO_REUSEPORT, which would let the two share it) fails the start with
 * exit 1; the master never holds an accepted connection during a load run;
 * a worker killed under a connect loop costs no connection made while it
 * restarts.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { ENGINES, logLines, re, runCli, startProxy, waitLog, waitWorkers, type Proxy } from '../helpers/daemon';
import { writeConfig } from '../helpers/fixtures';
import { freePortOn } from '../helpers/ports';
import { socketInodesOf, tcpSockets, TCP_LISTEN } from '../helpers/proc';
import { describeAsRoot, requireRoot } from '../helpers/root';
import { echoServer, payload, sha256, startServer, type Upstream } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';
import { native } from '../../src/sys/native';

beforeAll(requireRoot);
const tmp = useTempDir('tcpproxy-listeners-', 0o755);
const holders: number[] = [];
cleanUpAfterEach(() => {
  for (const fd of holders.splice(0)) native().close(fd);
});

/** An upstream that greets each client with its name and a newline, then echoes. */
function named(name: string): Promise<Upstream> {
  return startServer((socket) => {
    socket.write(`${name}\n`);
    socket.pipe(socket);
  });
}

/** Connects to host:port, returns the first line the other end sends (or the error code). */
function greeting(host: string, port: number, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    let got = '';
    const done = (v: string): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(`timeout (got ${JSON.stringify(got)})`), timeoutMs);
    s.on('data', (d: Buffer) => {
      got += d.toString('utf8');
      const nl = got.indexOf('\n');
      if (nl >= 0) done(got.slice(0, nl));
    });
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message));
    s.once('end', () => done(`end (got ${JSON.stringify(got)})`));
  });
}

/** Who answers on each address of `port`. */
async function answers(port: number): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const host of ['127.0.0.1', '127.0.0.2', '127.0.0.3', '::1']) out[host] = await greeting(host, port);
  return out;
}

/**
 * Watches `pid`'s sockets: each socket inode is classified once, when first
 * seen (the /proc/net tables are read only then), so the watch stays cheap.
 * Returns the TCP states seen and the number of samples.
 */
function watchTcpStates(pid: number): { stop(): Promise<{ states: number[]; samples: number }> } {
  const known = new Map<number, number | null>();
  let samples = 0;
  let running = true;
  const loop = (async (): Promise<void> => {
    while (running) {
      const fresh = [...socketInodesOf(pid)].filter((i) => !known.has(i));
      if (fresh.length > 0) {
        const states = new Map(tcpSockets().map((t) => [t.inode, t.state] as const));
        for (const i of fresh) known.set(i, states.get(i) ?? null);
      }
      samples++;
      await new Promise<void>((resolve) => setTimeout(resolve, 2));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      const states = [...new Set([...known.values()].filter((s): s is number => s !== null))];
      return { states, samples };
    },
  };
}

describe.each(ENGINES)('per-service listeners (root, %s engine)', (engine) => {
  test('a port with an any-interface entry and interface entries: each connection reaches the service of its local address; a SIGHUP switches the port between the two forms and back', async () => {
    const [any, two, three] = [await named('any'), await named('two'), await named('three')];
    const port = await freePortOn(['127.0.0.1', '127.0.0.2', '127.0.0.3', '::1']);
    const mixed = `port ${port}\n  server 127.0.0.1:${any.port}\n  interface 127.0.0.2\n    server 127.0.0.1:${two.port}\n`;
    const conf = writeConfig(tmp.path, `mixed-${engine}.conf`, mixed);
    const p = await startProxy(['-f', conf], { TCPPROXY_ENGINE: engine }, 2);
    expect(logLines(p.stderr()).filter((l) => l.startsWith('listening on'))).toEqual([`listening on *:${port}`, `listening on 127.0.0.2:${port}`]);
    expect(await answers(port)).toEqual({ '127.0.0.1': 'any', '127.0.0.2': 'two', '127.0.0.3': 'any', '::1': 'any' });

    // Interface entries only: the wildcard goes, 127.0.0.3 comes; 127.0.0.1 and ::1 are refused.
    const reload = async (text: string, n: number): Promise<void> => {
      const mark = logLines(p.stderr()).filter((l) => l.startsWith('SIGHUP: configuration reloaded')).length;
      fs.writeFileSync(conf, text);
      p.child.kill('SIGHUP');
      await until(
        () => logLines(p.stderr()).filter((l) => l.startsWith('SIGHUP: configuration reloaded')).length > mark,
        () => `reload ${n}; stderr:\n${p.stderr()}`,
        10000,
      );
    };
    await reload(`port ${port}\n  interface 127.0.0.2\n    server 127.0.0.1:${two.port}\n  interface 127.0.0.3\n    server 127.0.0.1:${three.port}\n`, 1);
    expect(logLines(p.stderr())).toContain(`stopped listening on *:${port}`);
    expect(logLines(p.stderr())).toContain(`listening on 127.0.0.3:${port}`);
    // The wildcard closes for good once the replaced worker has let go of its copy too.
    await until(async () => (await greeting('127.0.0.1', port)) === 'ECONNREFUSED', 'the wildcard socket to close', 10000);
    expect(await answers(port)).toEqual({ '127.0.0.1': 'ECONNREFUSED', '127.0.0.2': 'two', '127.0.0.3': 'three', '::1': 'ECONNREFUSED' });

    // Back to the any-interface form only.
    await reload(`port ${port}\n  server 127.0.0.1:${any.port}\n`, 2);
    expect(await answers(port)).toEqual({ '127.0.0.1': 'any', '127.0.0.2': 'any', '127.0.0.3': 'any', '::1': 'any' });
    // And to the mixed form again.
    await reload(mixed, 3);
    expect(await answers(port)).toEqual({ '127.0.0.1': 'any', '127.0.0.2': 'two', '127.0.0.3': 'any', '::1': 'any' });
    expect(logLines(p.stderr()).filter((l) => /ended with|cannot listen/.test(l))).toEqual([]);
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
  });

  test('a reload that turns a forwarding service into a handler and back: the same socket serves each in turn', async () => {
    const fwd = await named('forwarded');
    const port = await freePortOn(['127.0.0.1']);
    const forward = `port ${port}\n  interface 127.0.0.1\n  server 127.0.0.1:${fwd.port}\n`;
    const conf = writeConfig(tmp.path, `switch-${engine}.conf`, forward);
    const p = await startProxy(['-f', conf], { TCPPROXY_ENGINE: engine });
    await waitWorkers(p.stderr, 65535, 65534);
    expect(await greeting('127.0.0.1', port)).toBe('forwarded');
    let reloads = 0;
    const reload = async (text: string): Promise<void> => {
      reloads++;
      fs.writeFileSync(conf, text);
      p.child.kill('SIGHUP');
      await until(
        () => logLines(p.stderr()).filter((l) => l.startsWith('SIGHUP: configuration reloaded')).length >= reloads,
        () => `reload ${reloads}; stderr:\n${p.stderr()}`,
        10000,
      );
    };
    await reload(`port ${port}\n  interface 127.0.0.1\n  exec /bin/echo handled\n`);
    expect(await greeting('127.0.0.1', port)).toBe('handled');
    await reload(forward);
    expect(await greeting('127.0.0.1', port)).toBe('forwarded');
    // One socket all along, and one worker: the listener changed hands inside it.
    expect(logLines(p.stderr()).filter((l) => /listening on|ready, pid/.test(l))).toEqual([
      `listening on 127.0.0.1:${port}`,
      expect.stringMatching(/^worker uid 65535 gid 65534 ready, pid \d+$/),
    ]);
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
  });

  test('a worker SIGKILLed under a connect loop: every connection made while it restarts is served, none refused', async () => {
    const up = await echoServer();
    const p: Proxy = await startProxy(['-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], { TCPPROXY_ENGINE: engine });
    const port = p.addresses[0]?.port ?? 0;
    const [first] = await waitWorkers(p.stderr, 65535, 65534);
    if (first === undefined) throw new Error('no worker');
    const results: string[] = [];
    let stop = false;
    let killedAt = -1;
    const loop = (async (): Promise<void> => {
      for (let i = 0; !stop; i++) {
        const want = payload(64, `loop-${i}`);
        results.push(await echoOnce(port, want));
      }
    })();
    await until(() => results.length >= 20, 'the connect loop to get going', 10000);
    killedAt = results.length;
    process.kill(first.pid, 'SIGKILL');
    const [, again] = await waitWorkers(p.stderr, 65535, 65534, 2);
    if (again === undefined) throw new Error('no restarted worker');
    // Some more after the restart, then stop.
    const restartedAt = results.length;
    await until(() => results.length >= restartedAt + 20, 'connections after the restart', 10000);
    stop = true;
    await loop;
    // A connection the dead worker had accepted may be lost; every other one is served.
    const failed = results.map((r, i) => ({ r, i })).filter(({ r }) => r !== 'ok');
    expect(failed.length).toBeLessThanOrEqual(1);
    for (const f of failed) expect(f.i).toBeGreaterThanOrEqual(killedAt - 1);
    expect(results.filter((r) => r === 'ECONNREFUSED')).toEqual([]);
    expect(results.length).toBeGreaterThan(killedAt + 20);
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
  });
});

/** One connection: sends `data`, expects it echoed; 'ok' or what went wrong. */
function echoOnce(port: number, data: Buffer, timeoutMs = 10000): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (v: string): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done('timeout'), timeoutMs);
    s.once('connect', () => s.write(data));
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      size += d.length;
      if (size >= data.length) done(sha256(Buffer.concat(chunks)) === sha256(data) ? 'ok' : 'wrong bytes');
    });
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message));
    s.once('end', () => done(`end after ${size} bytes`));
  });
}

describeAsRoot('a port another program holds (root)', () => {
  test.each([
    ['the same address, held with SO_REUSEPORT', '127.0.0.2', '127.0.0.2'],
    ['the wildcard, held with SO_REUSEPORT', null, '127.0.0.2'],
    ['an interface of the port tcpproxy wants for every address', '127.0.0.3', null],
  ] as const)('%s: exit 1 with the address in the message', async (_what, held, wanted) => {
    const addon = native();
    // Held the way tcpproxy binds its own: SO_REUSEPORT, as root, so a bind alone would succeed.
    const fd = addon.listenTcp(held, 0, 16);
    holders.push(fd);
    const port = addon.sockName(fd)?.local.port ?? 0;
    const conf = writeConfig(
      tmp.path,
      'held.conf',
      wanted === null ? `port ${port}\n  server 127.0.0.1:9\n` : `port ${port}\n  interface ${wanted}\n    server 127.0.0.1:9\n`,
    );
    const r = await runCli(['-D', '-f', conf]);
    const where = wanted === null ? `*:${port}` : `${wanted}:${port}`;
    // With -D the start error is a log line: the time, then the message.
    expect({ code: r.code, stderr: r.stderr }).toEqual({
      code: 1,
      stderr: expect.stringMatching(new RegExp(`^\\S+Z tcpproxy: cannot listen on ${re(where)}: EADDRINUSE \\(address already in use\\)\n$`)),
    });
  });

  test('the master holds only listening sockets during a load run: every accepted connection is in the worker', async () => {
    const up = await echoServer();
    const p = await startProxy(['-b', '127.0.0.1:0', `127.0.0.1:${up.port}`]);
    const port = p.addresses[0]?.port ?? 0;
    await waitLog(p.stderr, /^worker uid 65535 gid 65534 ready, pid \d+$/);
    const watch = watchTcpStates(p.pid);
    const rounds: string[] = [];
    for (let batch = 0; batch < 10; batch++) {
      rounds.push(...(await Promise.all(Array.from({ length: 40 }, (_, i) => echoOnce(port, payload(4096, `load-${batch}-${i}`))))));
    }
    const { states, samples } = await watch.stop();
    expect(rounds.filter((r) => r !== 'ok')).toEqual([]);
    expect(samples).toBeGreaterThan(10);
    // Only the listener: no accepted (ESTABLISHED) or closing socket was ever the master's.
    expect(states).toEqual([TCP_LISTEN]);
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
  });
});
