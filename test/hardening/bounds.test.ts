/**
 * Hardening, bounded resources (issue 13 item 1), written as the attacks:
 * thousands of connections to an exec service cannot start more than its
 * maxconn (256 by default) handlers; client and upstream sockets carry TCP
 * keepalive, so a dead peer ends even with `timeout 0`; a handler cannot
 * forge log lines with control characters.
 */
import * as net from 'node:net';
import { Client, destroyAllClients } from '../helpers/client';
import { ENGINES, killLaunched, readyWorkers, startProxy } from '../helpers/daemon';
import { handler, uniqueSeconds } from '../helpers/fixtures';
import { killProcesses } from '../helpers/kill';
import { allPids, comm, descendants, findProcesses, socketInodesOf, tcpSockets, TCP_ESTABLISHED, TCP_LISTEN } from '../helpers/proc';
import { describeAsRoot } from '../helpers/root';
import { closeAllServers, echoServer } from '../helpers/servers';
import { holds, until } from '../helpers/until';

const sockets = new Set<net.Socket>();
const tokens: string[] = [];
afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets.clear();
  destroyAllClients();
  await killLaunched();
  for (const t of tokens.splice(0)) killProcesses(t);
  await closeAllServers();
});

const ATTACK = 5000;
const DEFAULT_MAXCONN = 256;
/** Kernel TCP state (include/net/tcp_states.h). */
const TCP_TIME_WAIT = 6;

/** The worker's handler processes (`cat`), children of the worker. */
function handlers(worker: number): number[] {
  return descendants(worker).filter((pid) => comm(pid) === 'cat');
}

describeAsRoot('bounds (root)', () => {
  test(`${ATTACK} connections to an exec service: at most ${DEFAULT_MAXCONN} handlers, the host's pids bounded; full again, a waiting client is served once exactly one handler ends`, async () => {
    const p = await startProxy(['-b', '127.0.0.1:0', '/bin/cat']);
    const port = p.addresses[0]?.port ?? 0;
    await until(() => readyWorkers(p.stderr()).length === 1, () => `the worker's ready line; stderr:\n${p.stderr()}`);
    const worker = readyWorkers(p.stderr())[0]?.pid ?? 0;
    const pidsBefore = allPids().length;
    for (let i = 0; i < ATTACK; i++) {
      const s = net.connect({ host: '127.0.0.1', port });
      s.on('error', () => {});
      sockets.add(s);
    }
    await until(() => handlers(worker).length >= DEFAULT_MAXCONN, () => `${DEFAULT_MAXCONN} handlers (have ${handlers(worker).length})`, 60000);
    await holds(
      () => handlers(worker).length <= DEFAULT_MAXCONN && allPids().length <= pidsBefore + DEFAULT_MAXCONN + 20,
      () => `at most ${DEFAULT_MAXCONN} handlers (have ${handlers(worker).length}, pids ${allPids().length - pidsBefore} more than before)`,
      2000,
    );
    expect(p.stderr()).toContain(`service 127.0.0.1:${port}: maxconn ${DEFAULT_MAXCONN} reached: new connections wait`);
    for (const s of sockets) s.destroy();
    sockets.clear();
    // The handlers see EOF and end; what waited in the queue is taken and ends too. Drained
    // means no connection to the port is left in the kernel either (in the accept queue, or
    // half-open behind a full one): a client of the next step must not queue behind one.
    const left = (): number => tcpSockets().filter((t) => t.localPort === port && t.state !== TCP_LISTEN && t.state !== TCP_TIME_WAIT).length;
    await until(() => handlers(worker).length === 0 && left() === 0, () => `the attack's connections to end (${handlers(worker).length} handlers, ${left()} sockets left)`, 90000);

    // Full again, with live clients only: one more waits, and is served once exactly one ends.
    const full = await Promise.all(Array.from({ length: DEFAULT_MAXCONN }, () => Client.connect('127.0.0.1', port, { timeoutMs: 20000 })));
    await until(() => handlers(worker).length === DEFAULT_MAXCONN, () => `${DEFAULT_MAXCONN} handlers again (have ${handlers(worker).length})`, 60000);
    const running = new Set(handlers(worker));
    const c = await Client.connect('127.0.0.1', port, { timeoutMs: 20000 });
    c.socket.write('ping\n');
    await holds(() => c.received === 0 && handlers(worker).length === DEFAULT_MAXCONN, () => `the extra client waiting (${c.received} bytes back, ${handlers(worker).length} handlers)`, 500);
    full[0]?.socket.destroy();
    await c.waitBytes(5, 20000);
    expect(c.data().toString()).toBe('ping\n');
    // One handler ended, the fresh client's took its place; the other 255 still run.
    const now = handlers(worker);
    expect({ handlers: now.length, kept: now.filter((pid) => running.has(pid)).length }).toEqual({ handlers: DEFAULT_MAXCONN, kept: DEFAULT_MAXCONN - 1 });
    c.socket.destroy();
    for (const f of full) f.socket.destroy();
  }, 300000);

  test(`an ACP service without maxconn: at most ${DEFAULT_MAXCONN} ACPs at once; when one ends, a waiting client gets the next`, async () => {
    const token = uniqueSeconds();
    tokens.push(token);
    const up = await echoServer();
    const p = await startProxy(['-a', `${handler('sleeper.sh')} ${token}`, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`]);
    const port = p.addresses[0]?.port ?? 0;
    // After `exec sleep`, each ACP is sleep(1) with the test's unique argument.
    const acps = (): number[] => findProcesses(token, 'sleep');
    for (let i = 0; i < DEFAULT_MAXCONN + 44; i++) {
      const s = net.connect({ host: '127.0.0.1', port });
      s.on('error', () => {});
      sockets.add(s);
    }
    await until(() => acps().length >= DEFAULT_MAXCONN, () => `${DEFAULT_MAXCONN} ACPs (have ${acps().length})`, 60000);
    await holds(() => acps().length === DEFAULT_MAXCONN, () => `${DEFAULT_MAXCONN} ACPs at most (have ${acps().length})`, 1000);
    expect(p.stderr()).toContain(`service 127.0.0.1:${port}: maxconn ${DEFAULT_MAXCONN} reached: new connections wait`);
    const before = new Set(acps());
    const [first] = before;
    if (first !== undefined) process.kill(first, 'SIGKILL');
    // Its client is denied; one of the 44 waiting gets an ACP of its own.
    await until(() => !acps().includes(first ?? 0) && acps().length === DEFAULT_MAXCONN, () => `a new ACP in its place (have ${acps().length})`, 20000);
    expect(acps().filter((pid) => !before.has(pid))).toHaveLength(1);
  }, 120000);

  test('a handler cannot forge log lines: control characters (C0 and C1) in what it writes to stderr are escaped', async () => {
    const p = await startProxy(['-b', '127.0.0.1:0', handler('stderr-controls.sh')]);
    const port = p.addresses[0]?.port ?? 0;
    const c = await Client.connect('127.0.0.1', port);
    await c.waitClosed(10000);
    expect(c.data().toString()).toBe('ok\n');
    await until(() => /: end: handler /.test(p.stderr()), 'the end line');
    const line = p.stderr().split('\n').find((l) => l.includes('forged')) ?? '';
    expect(line).toMatch(/^\S+Z tcpproxy: connection \d+: \S*stderr-controls\.sh: forged\\x1b\[2Jline\\x0dover\\x07 \\x9b2J end$/);
    // eslint-disable-next-line no-control-regex
    expect(p.stderr()).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
  });
});

describe.each(ENGINES)('keepalive (%s engine)', (engine) => {
  test('the proxy sets TCP keepalive on the client and the upstream socket: a keepalive timer of about 300 s on both', async () => {
    const up = await echoServer();
    const p = await startProxy(['-t', '0', '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], { TCPPROXY_ENGINE: engine });
    const port = p.addresses[0]?.port ?? 0;
    await until(() => readyWorkers(p.stderr()).length === 1, 'the ready line');
    const worker = readyWorkers(p.stderr())[0]?.pid ?? 0;
    const c = await Client.connect('127.0.0.1', port);
    c.socket.write('x');
    await c.waitBytes(1);
    const proxySockets = (): { timer: number; ticks: number }[] => {
      const mine = socketInodesOf(worker);
      return tcpSockets()
        .filter((t) => mine.has(t.inode) && t.state === TCP_ESTABLISHED)
        .map((t) => ({ timer: t.timer, ticks: t.timerTicks }));
    };
    // Both sockets idle: each has its keepalive timer (tr 2), first probe within 300 s (clock ticks of 1/100 s).
    await until(() => proxySockets().length === 2 && proxySockets().every((s) => s.timer === 2), () => `keepalive timers on both sockets: ${JSON.stringify(proxySockets())}`, 5000);
    for (const s of proxySockets()) {
      expect(s.ticks).toBeGreaterThan(250 * 100);
      expect(s.ticks).toBeLessThanOrEqual(300 * 100);
    }
    c.socket.destroy();
  });
});
