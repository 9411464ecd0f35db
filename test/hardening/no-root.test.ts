/**
 * Hardening, no root: while 200 long connections are open (half through an
 * exec-handler service, half through a forwarding service, of different
 * identities), every process that holds a client connection's socket,
 * except the master (it accepts them), runs with non-zero real, effective,
 * saved and filesystem uid and gid, in every thread.
 *
 * Client sockets are found in the kernel: the TCP sockets of /proc/net/tcp
 * and tcp6 whose local port is a proxy port, mapped by inode to the
 * /proc/PID/fd links that hold them.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { killLaunched, readyWorkers, startProxy } from '../helpers/daemon';
import { writeConfig } from '../helpers/fixtures';
import { freePort } from '../helpers/ports';
import { comm, holders, TCP_ESTABLISHED, tcpSockets, threadIds } from '../helpers/proc';
import { requireRoot } from '../helpers/root';
import { closeAllServers, echoServer } from '../helpers/servers';
import { until } from '../helpers/until';

const PER_SERVICE = 100;
let tmp = '';
const sockets = new Set<net.Socket>();

beforeAll(() => {
  requireRoot();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tcpproxy-no-root-'));
});

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets.clear();
  await killLaunched();
  await closeAllServers();
});

afterAll(() => {
  if (tmp !== '') fs.rmSync(tmp, { recursive: true, force: true });
});

/** Inodes of the established TCP sockets whose local port is one of `ports` (the proxy's side of client connections). */
function clientSocketInodes(ports: readonly number[]): Set<number> {
  return new Set(
    tcpSockets()
      .filter((s) => ports.includes(s.localPort) && s.state === TCP_ESTABLISHED && s.inode !== 0)
      .map((s) => s.inode),
  );
}

/** Connects, sends a line and waits for its echo: the path is live end to end. Resolves with the open socket. */
function liveConnection(port: number, text: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    sockets.add(s);
    let got = '';
    const timer = setTimeout(() => reject(new Error(`no echo of ${JSON.stringify(text)} on port ${port} within 20 s (got ${JSON.stringify(got)})`)), 20000);
    s.setEncoding('utf8');
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('data', (d: string) => {
      got += d;
      if (got === text) {
        clearTimeout(timer);
        resolve(s);
      }
    });
    s.write(text);
  });
}

test(`no client socket is held by a process with a zero uid or gid (${2 * PER_SERVICE} long connections, exec and forwarding)`, async () => {
  const up = await echoServer();
  const [execPort, fwdPort] = [await freePort(), await freePort()];
  const conf = writeConfig(
    tmp,
    'no-root.conf',
    `port ${execPort}\n  interface 127.0.0.1\n  uid 4242\n  gid 4343\n  exec /bin/cat\n` +
      `port ${fwdPort}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`,
  );
  const p = await startProxy(['-s', '-f', conf], {}, 2);
  await until(() => readyWorkers(p.stderr()).length === 2, () => `two workers; stderr:\n${p.stderr()}`);
  const workers = readyWorkers(p.stderr());

  const open: Promise<net.Socket>[] = [];
  for (let i = 0; i < PER_SERVICE; i++) {
    open.push(liveConnection(execPort, `exec ${i}\n`));
    open.push(liveConnection(fwdPort, `forward ${i}\n`));
  }
  await Promise.all(open);

  const inodes = clientSocketInodes([execPort, fwdPort]);
  expect(inodes.size).toBe(2 * PER_SERVICE);
  const held = holders(inodes);
  // Every client socket is held by some process (none is lost or orphaned).
  expect([...inodes].filter((i) => !held.has(i))).toEqual([]);

  const pids = new Set<number>();
  for (const set of held.values()) for (const pid of set) pids.add(pid);
  pids.delete(p.pid); // the master: it accepts them, then hands them over
  const report = [...pids].map((pid) => ({ pid, comm: comm(pid), threads: threadIds(pid) }));
  const rooted = report.flatMap((r) =>
    r.threads.filter((t) => t.uid.length !== 4 || t.gid.length !== 4 || t.uid.includes(0) || t.gid.includes(0)).map((t) => ({ comm: r.comm, ...t })),
  );
  expect(rooted).toEqual([]);

  // Who holds them: the two workers and one cat per exec connection, with the service ids.
  const workerPids = workers.map((w) => w.pid);
  const cats = report.filter((r) => r.comm === 'cat');
  expect(cats).toHaveLength(PER_SERVICE);
  for (const c of cats) expect(c.threads.map((t) => [t.uid, t.gid])).toEqual(c.threads.map(() => [[4242, 4242, 4242, 4242], [4343, 4343, 4343, 4343]]));
  const others = report.filter((r) => r.comm !== 'cat').map((r) => r.pid);
  expect(others.every((pid) => workerPids.includes(pid))).toBe(true);
  const fwdWorker = workers.find((w) => w.uid === 65535);
  expect(fwdWorker).toBeDefined();
  expect(others).toContain(fwdWorker?.pid);
  // eslint-disable-next-line no-console
  console.log(
    `no-root: ${inodes.size} client sockets held by ${pids.size} processes besides the master ` +
      `(${cats.length} cat, workers ${others.join(', ')}); the master holds ${[...held.values()].filter((s) => s.has(p.pid)).length}`,
  );
}, 90000);
