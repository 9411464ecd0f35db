/**
 * Hardening, the bounds set in the config file (issue 13 item 1):
 * `handler-timeout` kills a handler and what it started; `writefile-max`
 * stops a transcript at its size, logged, the connection going on;
 * `keepalive no` leaves the sockets without keepalive.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { ENGINES, killLaunched, readyWorkers, startProxy } from '../helpers/daemon';
import { handler, uniqueSeconds, writeConfig } from '../helpers/fixtures';
import { freePort } from '../helpers/ports';
import { findProcesses, socketInodesOf, tcpSockets, TCP_ESTABLISHED } from '../helpers/proc';
import { describeAsRoot } from '../helpers/root';
import { echoServer } from '../helpers/servers';
import { cleanUpAfterEach, useHandlerFixtures, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

useHandlerFixtures();
const tmp = useTempDir('tcpproxy-bounds-', 0o755);
cleanUpAfterEach(killLaunched);

describeAsRoot('bounds from the config file (root)', () => {
  test('handler-timeout 1: the handler and the child it started are killed after a second, the end line says why', async () => {
    const port = await freePort();
    const secs = uniqueSeconds();
    const conf = writeConfig(tmp.path, 'ht.conf', `port ${port}\n  interface 127.0.0.1\n  handler-timeout 1\n  exec ${handler('fork-sleep.sh')} ${secs}\n`);
    const p = await startProxy(['-s', '-f', conf]);
    const c = await Client.connect('127.0.0.1', port);
    await until(() => findProcesses(secs, 'sleep').length === 2, 'the handler and its child', 10000);
    const started = Date.now();
    await c.waitClosed(10000);
    await until(() => findProcesses(secs, 'sleep').length === 0, 'both sleeps gone', 5000);
    expect(Date.now() - started).toBeLessThan(5000);
    await until(() => /: end: handler \S+ pid \d+ killed after 1 s \(handler-timeout\), \d+ ms$/m.test(p.stderr()), () => `the end line; stderr:\n${p.stderr()}`);
  });

  test.each(ENGINES)('writefile-max 64K (%s engine): the transcript stops at 65,536 bytes, logged, and the connection forwards all 1 MiB', async (engine) => {
    const up = await echoServer();
    const port = await freePort();
    const dir = path.join(tmp.path, `tr-${engine}`);
    fs.mkdirSync(dir, { mode: 0o755 });
    fs.chownSync(dir, 65535, 65534);
    const base = path.join(dir, 'cap');
    const conf = writeConfig(tmp.path, `wm-${engine}.conf`, `port ${port}\n  interface 127.0.0.1\n  writefile ${base}\n  writefile-max 64K\n  server 127.0.0.1:${up.port}\n`);
    const p = await startProxy(['-s', '-f', conf], { TCPPROXY_ENGINE: engine });
    const data = crypto.randomBytes(1 << 20);
    const c = await Client.connect('127.0.0.1', port);
    c.socket.end(data);
    await c.waitClosed(20000);
    expect(c.digest()).toEqual({ bytes: data.length, sha256: crypto.createHash('sha256').update(data).digest('hex') });
    await until(() => /: end: /.test(p.stderr()), 'the end line');
    const file = `${base}.1.log`;
    expect(fs.statSync(file).size).toBe(65536);
    expect(p.stderr()).toContain(`connection 1: transcript ${file}: writefile-max 65536 bytes reached: recording stopped`);
  });
});

describe.each(ENGINES)('keepalive no (%s engine)', (engine) => {
  test('the sockets of a service with keepalive no have no keepalive timer', async () => {
    const up = await echoServer();
    const port = await freePort();
    const conf = writeConfig(tmp.path, `ka-${engine}.conf`, `keepalive no\ntimeout 0\nport ${port}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`);
    const p = await startProxy(['-s', '-f', conf], { TCPPROXY_ENGINE: engine });
    await until(() => readyWorkers(p.stderr()).length === 1, 'the ready line');
    const worker = readyWorkers(p.stderr())[0]?.pid ?? 0;
    const c = await Client.connect('127.0.0.1', port);
    c.socket.write('x');
    await c.waitBytes(1);
    // One entry per inode: /proc/net/tcp read while the table changes can list a socket twice.
    const mine = (): { timer: number }[] => {
      const inodes = socketInodesOf(worker);
      const byInode = new Map(tcpSockets().filter((t) => inodes.has(t.inode) && t.state === TCP_ESTABLISHED).map((t) => [t.inode, t]));
      return [...byInode.values()];
    };
    // The sockets as the wait saw them, not a second reading.
    let seen: { timer: number }[] = [];
    await until(() => (seen = mine()).length === 2, () => `both proxy sockets established (have ${seen.length})`, 5000);
    expect(seen.map((s) => s.timer)).toEqual([0, 0]);
    c.socket.destroy();
  });
});

// The fast path sets the keepalive options once on its listening socket and
// its clients start with them (addon.h); a reload that turns keepalive off,
// or gives the socket to the session code, must leave no client with the
// options of the socket's last taker.
describe.each(ENGINES)('keepalive across reloads (%s engine)', (engine) => {
  test('yes, then no with a host name (the session code), yes again, then no: each client gets what its service says', async () => {
    const up = await echoServer();
    const port = await freePort();
    const conf = writeConfig(tmp.path, `ka-reload-${engine}.conf`, '');
    const write = (keepalive: 'yes' | 'no', host: string): void =>
      fs.writeFileSync(conf, `keepalive ${keepalive}\ntimeout 0\nport ${port}\n  interface 127.0.0.1\n  server ${host}:${up.port}\n`);
    write('yes', '127.0.0.1');
    const p = await startProxy(['-s', '-f', conf], { TCPPROXY_ENGINE: engine });
    await until(() => readyWorkers(p.stderr()).length === 1, 'the ready line');
    const worker = readyWorkers(p.stderr())[0]?.pid ?? 0;
    let reloads = 0;
    const reload = async (keepalive: 'yes' | 'no', host: string): Promise<void> => {
      write(keepalive, host);
      reloads++;
      p.child.kill('SIGHUP');
      await until(
        () => p.stderr().split('SIGHUP: configuration reloaded').length - 1 === reloads,
        () => `reload ${reloads}; stderr:\n${p.stderr()}`,
        10000,
      );
    };
    // The keepalive timer (tr 2, or 0 for none) of the proxy's socket to this client and of the one to the server.
    const timers = async (): Promise<{ client: number; server: number }> => {
      const c = await Client.connect('127.0.0.1', port);
      c.socket.write('x');
      await c.waitBytes(1);
      const local = c.socket.localPort ?? 0;
      let found: { client: number; server: number } | null = null;
      await until(() => {
        const inodes = socketInodesOf(worker);
        const mine = tcpSockets().filter((t) => inodes.has(t.inode) && t.state === TCP_ESTABLISHED);
        const toClient = mine.find((t) => t.remotePort === local);
        const toServer = mine.find((t) => t.remotePort === up.port);
        if (toClient === undefined || toServer === undefined || mine.length !== 2) return false;
        found = { client: toClient.timer, server: toServer.timer };
        return true;
      }, 'the proxy sockets of this client', 5000);
      c.socket.destroy();
      await until(() => tcpSockets().filter((t) => socketInodesOf(worker).has(t.inode) && t.state === TCP_ESTABLISHED).length === 0, 'the sockets to close', 5000);
      return found ?? { client: -1, server: -1 };
    };
    expect(await timers()).toEqual({ client: 2, server: 2 });
    await reload('no', 'localhost');
    expect(await timers()).toEqual({ client: 0, server: 0 });
    await reload('yes', '127.0.0.1');
    expect(await timers()).toEqual({ client: 2, server: 2 });
    await reload('no', '127.0.0.1');
    expect(await timers()).toEqual({ client: 0, server: 0 });
  });
});
