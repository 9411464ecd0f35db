/**
 * Hardening, idle connections: 9,000 forwarded connections that each did
 * one round trip and then stay idle hold exactly two descriptors each in the
 * worker (the client and the upstream socket: no pipe, no timer fd) and
 * none in the master, on both engines; closing them brings the worker back
 * to its baseline.
 *
 * The echo upstream runs in a child process, so this process holds only
 * the 9,000 client sockets (RLIMIT_NOFILE is 20,000 here).
 */
import * as net from 'node:net';
import { ENGINES, killLaunched, launch, readyWorkers, startProxy } from '../helpers/daemon';
import { fdKinds, showKinds, tcpFdCount } from '../helpers/proc';
import { until } from '../helpers/until';

const IDLE = 9000;
/** Connects in flight at a time (the listen backlog is 511). */
const CONNECTING = 256;

const sockets = new Set<net.Socket>();

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets.clear();
  await killLaunched();
});

/** An echo server in a child process; resolves with its port. */
async function echoChild(): Promise<number> {
  const script = "require('net').createServer((s) => s.pipe(s)).listen(0, '127.0.0.1', function () { console.log(this.address().port); })";
  const child = launch([process.execPath, '-e', script]);
  let port = 0;
  await until(
    () => (port = Number(child.stdout().trim())) > 0 || child.exit() !== null,
    () => `the echo child's port (stderr: ${child.stderr()})`,
    10000,
  );
  if (!(port > 0)) throw new Error(`the echo child ended: ${child.stderr()}`);
  return port;
}

/** Connects, does one 1-byte round trip, and keeps the socket open (idle). */
function idleConnection(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    sockets.add(s);
    const timer = setTimeout(() => reject(new Error('no echo within 20 s')), 20000);
    s.once('connect', () => s.write('x'));
    s.once('data', () => {
      clearTimeout(timer);
      resolve();
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

describe.each(ENGINES)('idle connections (%s engine)', (engine) => {
  test(`${IDLE} idle connections hold two descriptors each in the worker, none in the master`, async () => {
    const up = await echoChild();
    // No control socket: its clients (other tests' daemons probing the default path) would be descriptors of the master too.
    const p = await startProxy(['-S', 'none', '-b', '127.0.0.1:0', `127.0.0.1:${up}`], { TCPPROXY_ENGINE: engine });
    const port = p.addresses[0]?.port ?? 0;
    await until(() => readyWorkers(p.stderr()).length === 1, () => `the worker's ready line; stderr:\n${p.stderr()}`);
    const worker = readyWorkers(p.stderr())[0]?.pid ?? 0;
    // One connection first, so whatever a process opens once (libuv's threads, a first pipe pair) is in the baseline.
    await idleConnection(port);
    for (const s of sockets) s.destroy();
    sockets.clear();
    await until(() => tcpFdCount(worker) === 1, () => `the first connection to close (${showKinds(fdKinds(worker))})`, 10000);
    const base = fdKinds(worker);
    const masterBase = showKinds(fdKinds(p.pid));

    let next = 0;
    await Promise.all(
      Array.from({ length: CONNECTING }, async () => {
        while (next < IDLE) {
          next++;
          await idleConnection(port);
        }
      }),
    );
    expect(sockets.size).toBe(IDLE);
    // Every session is up: the worker holds the listener and two sockets a session.
    await until(() => tcpFdCount(worker) === 1 + 2 * IDLE, () => `${1 + 2 * IDLE} TCP fds in the worker (${showKinds(fdKinds(worker))})`, 30000);
    const loaded = fdKinds(worker);
    const grown = [...loaded].filter(([kind, n]) => n !== (base.get(kind) ?? 0) && kind !== 'tcp');
    // Nothing else grew with the sessions (a few pipes of the pump's pool may be in use at most).
    expect(grown.filter(([kind, n]) => kind !== 'pipe' || n - (base.get(kind) ?? 0) > 4)).toEqual([]);
    expect(showKinds(fdKinds(p.pid))).toBe(masterBase);
    expect(tcpFdCount(p.pid)).toBe(1);

    for (const s of sockets) s.destroy();
    sockets.clear();
    await until(() => tcpFdCount(worker) === 1, () => `the sessions to close (${showKinds(fdKinds(worker))})`, 30000);
    expect(p.exit()).toBeNull();
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
  }, 180000);
});
