/**
 * Signals of a standalone daemon (-D, as root). SIGTERM and SIGINT: the
 * ports close at once (new connections are refused), a session already
 * running finishes with every byte inside the grace period, and the
 * process exits 0. SIGHUP re-reads the config file: ports are added and
 * removed while a session on an unchanged port keeps flowing, a new
 * identity gets its own worker, and a broken file or a port that cannot be
 * bound changes nothing. A signal sent the moment the daemon says it is
 * ready (its `listening on` line, its pidfile) is acted on, never fatal; a
 * second SIGTERM during the drain ends every session at once.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { CLI, ENGINES, launch, type Launched, logLines, type Proxy, re, ROOT, runCli, startDaemon, startProxy, waitLog, waitWorkers } from '../helpers/daemon';
import { writeConfig } from '../helpers/fixtures';
import { killTree } from '../helpers/kill';
import { freePort, tryConnect } from '../helpers/ports';
import { alive, descendants } from '../helpers/proc';
import { describeAsRoot, requireRoot } from '../helpers/root';
import { type Digest, digestOf, echoServer, payload, startServer, StreamHash } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';
import { GRACE_MS } from '../../src/process/grace';

const KiB = 1024;
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'operations');

let handler = '';

beforeAll(requireRoot);
// The handler runs as uid 4242: its directory must be searchable and the script readable.
const tmp = useTempDir('tcpproxy-ops-signals-', 0o755);
beforeAll(() => {
  handler = path.join(tmp.path, 'handler.sh');
  fs.copyFileSync(path.join(FIXTURES, 'handler.sh'), handler);
  fs.chmodSync(handler, 0o755);
});
cleanUpAfterEach();

/** Waits until connects to `port` are refused (the listener is closed). */
async function waitRefused(port: number, timeoutMs = 2000): Promise<void> {
  let last = '';
  await until(async () => (last = await tryConnect(port)) === 'ECONNREFUSED', () => `connects to ${port} to be refused (last: ${last})`, timeoutMs);
}

interface SlowUpstream {
  readonly port: number;
  /** What it sent on each connection, once it has ended its side. */
  readonly sent: Digest[];
  /** What it received on each connection, at the client's FIN. */
  readonly received: Digest[];
}

/** Sends `chunks` chunks of 10 KiB, one every `everyMs`, then ends its side; hashes what it receives. */
async function slowUpstream(chunks: number, everyMs: number, seed: string): Promise<SlowUpstream> {
  const sent: Digest[] = [];
  const received: Digest[] = [];
  const up = await startServer((socket) => {
    const out = new StreamHash();
    const got = new StreamHash();
    socket.on('data', (b: Buffer) => got.update(b));
    socket.on('end', () => received.push(got.digest()));
    let n = 0;
    const timer = setInterval(() => {
      if (socket.destroyed) {
        clearInterval(timer);
        return;
      }
      const chunk = payload(10 * KiB, `${seed}-${n}`);
      out.update(chunk);
      socket.write(chunk);
      if (++n === chunks) {
        clearInterval(timer);
        socket.end(() => sent.push(out.digest()));
      }
    }, everyMs);
    socket.on('close', () => clearInterval(timer));
  });
  return { port: up.port, sent, received };
}

/**
 * A session started before the signal finishes with every byte, new
 * connections are refused, and the process exits 0 with its workers gone.
 */
async function drains(sig: 'SIGTERM' | 'SIGINT', chunks: number, engine: string, to: 'master' | 'group' = 'master'): Promise<void> {
  const up = await slowUpstream(chunks, 50, `drain-${sig}-${engine}-${to}`);
  const args = ['-b', '127.0.0.1:0', `127.0.0.1:${up.port}`];
  let pid: number;
  let port: number;
  let stderr: () => string;
  let exit: () => { code: number | null; signal: NodeJS.Signals | null } | null;
  let send: (s: NodeJS.Signals) => void;
  if (to === 'master') {
    const p = await startProxy(args, { TCPPROXY_ENGINE: engine });
    ({ pid, stderr, exit } = p);
    port = p.addresses[0]?.port ?? 0;
    send = (s) => p.child.kill(s);
  } else {
    // Its own process group, as in a terminal: the signal reaches the master and its workers.
    const d = await startDaemon({ args, env: { ...process.env, TCPPROXY_ENGINE: engine }, detached: true });
    port = d.addresses[0]?.port ?? 0;
    pid = d.pid;
    ({ stderr, exit } = d);
    send = (s) => process.kill(-pid, s);
  }
  const c = await Client.connect('127.0.0.1', port, { keep: false });
  await c.waitBytes(10 * KiB); // the session is live in the worker
  const workers = descendants(pid);
  expect(workers.length).toBeGreaterThan(0);

  const signalled = Date.now();
  send(sig);
  await waitLog(stderr, new RegExp(`^${sig}: no new connections; live sessions have ${GRACE_MS / 1000} s to finish$`));
  await waitRefused(port);

  // The client side still flows during the drain.
  const fromClient = payload(64 * KiB, `drain-up-${sig}-${engine}-${to}`);
  c.socket.end(fromClient);
  await c.waitClosed(GRACE_MS + 5000);
  const ended = Date.now();
  await until(() => up.sent.length === 1 && up.received.length === 1, 'the upstream to finish', 5000);
  expect({ got: c.digest(), end: c.describeEnd() }).toEqual({ got: up.sent[0], end: ' (clean end)' });
  expect(c.digest().bytes).toBe(chunks * 10 * KiB);
  expect(up.received[0]).toEqual(digestOf(fromClient));
  expect(ended - signalled).toBeLessThan(GRACE_MS);

  await until(() => exit() !== null, `tcpproxy to exit after ${sig}`, GRACE_MS + 5000);
  expect(exit()).toMatchObject({ code: 0, signal: null });
  const lines = logLines(stderr());
  expect(lines.filter((l) => /^connection 1: end: /.test(l))).toEqual([
    expect.stringMatching(new RegExp(`^connection 1: end: client \\S+ on \\S+, server \\S+ from \\S+, ${64 * KiB} bytes up, ${chunks * 10 * KiB} down, \\d+ ms, eof, `)),
  ]);
  expect(lines[lines.length - 1]).toBe('terminated');
  expect(workers.filter(alive)).toEqual([]);
}

describeAsRoot('SIGTERM and SIGINT drain (root)', () => {
  test.each(ENGINES)('SIGTERM: a live session (30 × 10 KiB over 1.5 s) finishes; new connections are refused; exit 0 (%s engine)', async (engine) => {
    await drains('SIGTERM', 30, engine);
  });

  test('SIGINT: the same, shorter', async () => {
    await drains('SIGINT', 10, 'splice');
  });

  test('SIGINT to the whole process group (Ctrl-C in a terminal): the workers drain too, the session finishes', async () => {
    await drains('SIGINT', 10, 'splice', 'group');
  });

  test('a second SIGTERM during the drain ends every session at once: exit 0, pidfile removed', async () => {
    const up = await slowUpstream(400, 50, 'second-signal');
    const pidfile = path.join(tmp.path, 'second.pid');
    const p = await startProxy(['-pp', pidfile, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`]);
    const c = await Client.connect('127.0.0.1', p.addresses[0]?.port ?? 0, { keep: false });
    await c.waitBytes(10 * KiB);
    const workers = descendants(p.pid);
    p.child.kill('SIGTERM');
    await waitLog(p.stderr, new RegExp(`^SIGTERM: no new connections; live sessions have ${GRACE_MS / 1000} s to finish$`));
    await c.waitBytes(c.received + 10 * KiB); // still flowing
    const t = Date.now();
    p.child.kill('SIGTERM');
    await waitLog(p.stderr, /^SIGTERM again: closing every session now$/);
    await c.waitClosed(3000);
    await until(() => p.exit() !== null, 'tcpproxy to exit after the second SIGTERM', 3000);
    expect(Date.now() - t).toBeLessThan(3000);
    expect(p.exit()).toMatchObject({ code: 0, signal: null });
    expect(c.received).toBeLessThan(400 * 10 * KiB);
    expect(fs.existsSync(pidfile)).toBe(false);
    await until(() => workers.every((w) => !alive(w)), 'the workers to be gone', 3000);
  });

  test('SIGTERM with no session: exits at once, not after the grace period', async () => {
    const up = await echoServer();
    const p = await startProxy(['-b', '127.0.0.1:0', `127.0.0.1:${up.port}`]);
    await waitLog(p.stderr, /^worker uid 65535 gid 65534 ready, pid \d+$/);
    const t = Date.now();
    expect(await p.stop(GRACE_MS + 5000)).toMatchObject({ code: 0, signal: null });
    expect(Date.now() - t).toBeLessThan(3000);
  });
});

describeAsRoot('SIGHUP reload (root)', () => {
  test('a port is added and another removed while a session on an unchanged port flows; a new uid gets its own worker; a broken file changes nothing', async () => {
    const up = await echoServer();
    const [keep, drop, add] = [await freePort(), await freePort(), await freePort()];
    const keepBlock = `port ${keep}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`;
    const conf = writeConfig(tmp.path, 'reload.conf', `${keepBlock}port ${drop}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`);
    const p: Proxy = await startProxy(['-f', conf], {}, 2);
    await waitWorkers(p.stderr, 65535, 65534);

    // A long stream on the port that stays, checked before, during and after.
    const stream = await Client.connect('127.0.0.1', keep, { keep: false });
    const sent = new StreamHash();
    let chunkNo = 0;
    const flow = async (): Promise<void> => {
      const chunk = payload(128 * KiB, `reload-${chunkNo++}`);
      sent.update(chunk);
      stream.socket.write(chunk);
      await stream.waitBytes(sent.bytes, 10000);
    };
    await flow();
    expect(await roundTrip(drop, 'drop before')).toBe('drop before');
    // A session on the port that goes away is not cut by the reload.
    const onDropped = await Client.connect('127.0.0.1', drop);
    onDropped.socket.write('open\n');
    await onDropped.waitBytes(5);

    // Reload: `drop` goes, `add` comes with uid 4242 and a handler.
    fs.writeFileSync(conf, `${keepBlock}port ${add}\n  interface 127.0.0.1\n  uid 4242\n  exec ${handler}\n`);
    p.child.kill('SIGHUP');
    await flow();
    await waitLog(p.stderr, /^SIGHUP: configuration reloaded, serving 2 service\(s\)$/);
    const lines = logLines(p.stderr());
    expect(lines).toContain(`listening on 127.0.0.1:${add}`);
    expect(lines).toContain(`stopped listening on 127.0.0.1:${drop}`);
    await waitWorkers(p.stderr, 4242, 65534);
    await flow();

    expect(await handlerSays(add)).toBe(`id-u 4242\nid-g 65534\ncwd ${ROOT}\nready-fd unset\n`);
    expect(await tryConnect(drop)).toBe('ECONNREFUSED');
    await flow();
    onDropped.socket.end('still here\n');
    await onDropped.waitClosed(10000);
    expect({ data: onDropped.data().toString('utf8'), end: onDropped.describeEnd() }).toEqual({ data: 'open\nstill here\n', end: ' (clean end)' });

    // A broken file: every error is logged, nothing changes.
    const garbage = 'this is not a config\nport 99999\n  server 127.0.0.1:1\nport\n';
    fs.writeFileSync(conf, garbage);
    const expected = await runCli(['-z', '-f', conf]);
    expect(expected.code).toBe(2);
    const errors = expected.stderr.split('\n').filter((l) => l !== '');
    expect(errors.length).toBeGreaterThan(1);
    for (const e of errors) expect(e).toMatch(new RegExp(`^tcpproxy:${re(conf)}(:\\d+)?: `));
    const mark = logLines(p.stderr()).length;
    p.child.kill('SIGHUP');
    await waitLog(p.stderr, /^SIGHUP: configuration has errors: keeping the running one$/);
    const after = logLines(p.stderr()).slice(mark);
    expect(after).toEqual([...errors, 'SIGHUP: configuration has errors: keeping the running one']);
    await flow();
    expect(await handlerSays(add)).toBe(`id-u 4242\nid-g 65534\ncwd ${ROOT}\nready-fd unset\n`);
    expect(await tryConnect(drop)).toBe('ECONNREFUSED');
    // uid 65535 lost a listener (drop): a successor took its other one over; the
    // retired worker carries the stream to its end (no grace deadline), so
    // the identity was started twice, uid 4242 once.
    expect(readyCount(p)).toEqual({ '65535:65534': 2, '4242:65534': 1 });

    // The stream ends with every byte, in order.
    await flow();
    stream.socket.end();
    await stream.waitClosed(10000);
    expect({ got: stream.digest(), end: stream.describeEnd() }).toEqual({ got: sent.digest(), end: ' (clean end)' });
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
  });

  test('a reload whose new port cannot be bound changes nothing: the error is logged, the old ports stay', async () => {
    const up = await echoServer();
    const [keep, drop] = [await freePort(), await freePort()];
    const holder = net.createServer();
    await new Promise<void>((resolve, reject) => {
      holder.once('error', reject);
      holder.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => resolve());
    });
    try {
      const busy = (holder.address() as net.AddressInfo).port;
      const block = (port: number): string => `port ${port}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`;
      const conf = writeConfig(tmp.path, 'busy.conf', block(keep) + block(drop));
      const p = await startProxy(['-f', conf], {}, 2);
      await serving(p);
      // Its ready line too, before the mark: nothing but the reload's own line may follow.
      await waitWorkers(p.stderr, 65535, 65534);
      fs.writeFileSync(conf, block(keep) + block(busy));
      const mark = logLines(p.stderr()).length;
      p.child.kill('SIGHUP');
      await waitLog(p.stderr, /keeping the running configuration$/);
      expect(logLines(p.stderr()).slice(mark)).toEqual([
        `SIGHUP: cannot listen on 127.0.0.1:${busy}: EADDRINUSE (address already in use): keeping the running configuration`,
      ]);
      expect(await roundTrip(keep, 'keep')).toBe('keep');
      expect(await roundTrip(drop, 'drop')).toBe('drop');
      expect(await p.stop()).toMatchObject({ code: 0, signal: null });
    } finally {
      holder.close();
    }
  });

  test('a reload that changes only the identity of a port: new connections go to the new uid; the old worker finishes its live session, then exits', async () => {
    const up = await echoServer();
    const port = await freePort();
    const block = `port ${port}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`;
    const conf = writeConfig(tmp.path, 'identity.conf', block);
    const p = await startProxy(['-f', conf]);
    const [old] = await waitWorkers(p.stderr, 65535, 65534);
    if (old === undefined) throw new Error('no worker');
    const stream = await Client.connect('127.0.0.1', port);
    stream.socket.write('before\n');
    await stream.waitBytes(7);
    await waitLog(p.stderr, /^connection 1: client .*, uid 65535 gid 65534$/);

    fs.writeFileSync(conf, `${block}  uid 4242\n`);
    p.child.kill('SIGHUP');
    await waitLog(p.stderr, /^SIGHUP: configuration reloaded, serving 1 service\(s\)$/);
    const [fresh] = await waitWorkers(p.stderr, 4242, 65534);
    expect(fresh?.pid).not.toBe(old.pid);
    expect(await roundTrip(port, 'new identity')).toBe('new identity');
    // Connection numbers are unique, not consecutive: the new worker has a block of its own.
    const second = await waitLog(p.stderr, /^connection (\d+): client .*, uid 4242 gid 65534$/);
    expect(Number(second[1])).not.toBe(1);
    // No port was added or removed.
    expect(logLines(p.stderr()).filter((l) => /listening on/.test(l))).toEqual([`listening on 127.0.0.1:${port}`]);

    // The retired worker still carries the old session, then goes.
    expect(alive(old.pid)).toBe(true);
    stream.socket.write('during\n');
    await stream.waitBytes(14);
    stream.socket.end('after\n');
    await stream.waitClosed(10000);
    expect(stream.data().toString('utf8')).toBe('before\nduring\nafter\n');
    expect(stream.describeEnd()).toBe(' (clean end)');
    await until(() => !alive(old.pid), `the retired worker ${old.pid} to exit`, 5000);
    expect(logLines(p.stderr()).filter((l) => /ended with|restarting/.test(l))).toEqual([]);
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
  });
});

describeAsRoot('signals sent the moment the daemon says it is ready (root)', () => {
  type Trigger = 'the first "listening on" line' | 'the pidfile appearing';
  const TRIGGERS: readonly Trigger[] = ['the first "listening on" line', 'the pidfile appearing'];

  /**
   * Starts `tcpproxy -D -pp PIDFILE ...args` and calls `fire(pid)` at the
   * trigger, at once: from the stderr data event, or from a watch on the
   * pidfile's directory.
   */
  async function startAndFire(name: string, args: readonly string[], trigger: Trigger, fire: (pid: number) => void): Promise<{ d: Launched; pidfile: string }> {
    const dir = path.join(tmp.path, name);
    fs.mkdirSync(dir);
    const pidfile = path.join(dir, 'tcpproxy.pid');
    let fired = false;
    const once = (pid: number): void => {
      if (fired) return;
      fired = true;
      fire(pid);
    };
    const watcher =
      trigger === 'the pidfile appearing'
        ? fs.watch(dir, () => {
            let text = '';
            try {
              text = fs.readFileSync(pidfile, 'utf8');
            } catch {
              return; // not yet (the temporary file beside it)
            }
            once(Number(text.trim()));
          })
        : null;
    try {
      // Not waiting for anything: onStderr sees the whole stderr so far at each chunk, at once (to signal at a precise moment).
      const d = launch([process.execPath, CLI, '-D', '-pp', pidfile, ...args], {
        stdio: ['ignore', 'ignore', 'pipe'],
        onStderr: (_chunk, err, child) => {
          if (trigger === 'the first "listening on" line' && /^\S+Z tcpproxy: listening on /m.test(err) && child.pid !== undefined) once(child.pid);
        },
      });
      await until(() => fired || d.exit() !== null, () => `${trigger}; stderr:\n${d.stderr()}`, 10000);
      return { d, pidfile };
    } finally {
      watcher?.close();
    }
  }

  test.each(TRIGGERS)('-D: SIGHUP at %s reloads (the daemon must not die of it)', async (trigger) => {
    const up = await echoServer();
    const [port, added] = [await freePort(), await freePort()];
    const block = (p: number): string => `port ${p}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`;
    const name = `race-hup-${trigger.includes('pidfile') ? 'pidfile' : 'listening'}`;
    const conf = writeConfig(tmp.path, `${name}.conf`, block(port));
    const { d, pidfile } = await startAndFire(name, ['-f', conf], trigger, (pid) => {
      fs.writeFileSync(conf, block(port) + block(added));
      process.kill(pid, 'SIGHUP');
    });
    await until(
      () => d.exit() !== null || /^\S+Z tcpproxy: SIGHUP: configuration reloaded/m.test(d.stderr()),
      () => `the reload or the exit; stderr:\n${d.stderr()}`,
      10000,
    );
    expect({ exit: d.exit(), stderr: d.stderr() }).toEqual({
      exit: null,
      stderr: expect.stringMatching(/^\S+Z tcpproxy: SIGHUP: configuration reloaded, serving 2 service\(s\)$/m),
    });
    expect(await roundTrip(added, 'added')).toBe('added');
    expect(await roundTrip(port, 'kept')).toBe('kept');
    expect(await d.stop(GRACE_MS + 5000)).toEqual({ code: 0, signal: null });
    expect(fs.existsSync(pidfile)).toBe(false);
  });

  test.each(TRIGGERS)('-D: SIGTERM at %s: exit 0, pidfile removed', async (trigger) => {
    const up = await echoServer();
    const name = `race-term-${trigger.includes('pidfile') ? 'pidfile' : 'listening'}`;
    const { d, pidfile } = await startAndFire(name, ['-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], trigger, (pid) => process.kill(pid, 'SIGTERM'));
    await until(() => d.exit() !== null, () => `tcpproxy to exit after SIGTERM; stderr:\n${d.stderr()}`, GRACE_MS + 5000);
    expect({ exit: d.exit(), pidfile: fs.existsSync(pidfile) }).toEqual({ exit: { code: 0, signal: null }, pidfile: false });
    const lines = logLines(d.stderr());
    expect(lines[lines.length - 1]).toBe('terminated');
  });

  test('detached: kill -HUP $(cat pidfile) right after the command returns reloads', async () => {
    const up = await echoServer();
    const [port, added] = [await freePort(), await freePort()];
    const pidfile = path.join(tmp.path, 'race-detached.pid');
    const block = (p: number): string => `port ${p}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`;
    const conf = writeConfig(tmp.path, 'race-detached.conf', block(port));
    const r = await runCli(['-pp', pidfile, '-f', conf]);
    expect(r).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const pid = Number(fs.readFileSync(pidfile, 'utf8').trim());
    detached.add(pid);
    fs.writeFileSync(conf, block(port) + block(added));
    process.kill(pid, 'SIGHUP');
    let last = '';
    await until(async () => !alive(pid) || (last = await tryConnect(added)) === 'connected', () => `port ${added} to serve (last: ${last})`, 10000);
    expect(alive(pid)).toBe(true);
    expect(await roundTrip(added, 'added')).toBe('added');
    expect(await roundTrip(port, 'kept')).toBe('kept');
    const workers = descendants(pid);
    process.kill(pid, 'SIGTERM');
    await until(() => !alive(pid) && !fs.existsSync(pidfile) && workers.every((w) => !alive(w)), 'the daemon, its workers and its pidfile to go', 10000);
    detached.delete(pid);
  });
});

/** Detached daemons started here, killed (with their workers) after each test. */
const detached = new Set<number>();
afterEach(() => {
  for (const pid of detached) killTree(pid);
  detached.clear();
});

/**
 * Waits for the `serving` line, printed once the signal handlers are about
 * to be installed (the `listening on` lines come earlier: see the test of
 * signals sent at once).
 */
async function serving(p: Proxy): Promise<void> {
  await waitLog(p.stderr, /^tcpproxy \S+ serving \d+ service\(s\), pid \d+$/);
}

/** How many `ready` lines each identity has. */
function readyCount(p: Proxy): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of p.stderr().matchAll(/^\S+Z tcpproxy: worker uid (\d+) gid (\d+) ready, pid \d+$/gm)) {
    const k = `${m[1]}:${m[2]}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

/** Sends `text` through an echo port and returns what came back. */
async function roundTrip(port: number, text: string): Promise<string> {
  const c = await Client.connect('127.0.0.1', port);
  c.socket.end(text);
  await c.waitClosed(10000);
  expect(c.describeEnd()).toBe(' (clean end)');
  return c.data().toString('utf8');
}

/** What the handler on `port` tells a client. */
async function handlerSays(port: number): Promise<string> {
  const c = await Client.connect('127.0.0.1', port);
  await c.waitClosed(10000);
  return c.data().toString('utf8');
}
