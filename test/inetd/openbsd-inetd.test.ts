/**
 * inetd mode under a real openbsd-inetd (/usr/sbin/inetd -d, foreground,
 * private inetd.conf, loopback only): tcpproxy is started by inetd as root
 * with the accepted connection on fds 0, 1 and 2, finds its service by the
 * socket's local address, drops to the service ids, then forwards or becomes
 * the handler (same pid: its parent is inetd). CI installs openbsd-inetd
 * (.ci/run); without it these tests fail with the fix.
 */
import { Client } from '../helpers/client';
import { assertBuilt, ENGINES, killLaunched } from '../helpers/daemon';
import { fixture } from '../helpers/fixtures';
import { executable, INETD, type Inetd, parseWhoami, startInetd, tcpproxyService, waitEnd } from '../helpers/inetd';
import { freePort, freePorts } from '../helpers/ports';
import { digestOf, payload, sinkServer, speaksFirstServer } from '../helpers/servers';
import { twoInterfaces } from '../helpers/scenarios';
import { assertExecutableFixtures, cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

const MB = 1000 * 1000;

beforeAll(() => {
  assertBuilt();
  if (!executable(INETD)) throw new Error(`${INETD} is missing: apt-get install -y openbsd-inetd`);
  assertExecutableFixtures(['whoami.sh']);
});
/** Holds inetd.conf and the tcpproxy config files (tmp.config: only root can read or write them). */
const tmp = useTempDir('tcpproxy-inetd-');
cleanUpAfterEach(killLaunched);

/** A failure message with inetd's debug output (it shows what it started and how that ended). */
async function withInetd(inetd: Inetd, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (err instanceof Error) err.message += `\n--- inetd -d ${inetd.conf}: stderr ---\n${inetd.stderr()}`;
    throw err;
  }
}

describe.each(ENGINES)('forwarding, %s engine', (engine) => {
  it('forwards 10 MB each way at the same time, intact, and exits 0', async () => {
    const up = payload(10 * MB, `inetd-${engine}-up`);
    const down = payload(10 * MB, `inetd-${engine}-down`);
    const sink = await sinkServer({ send: down });
    const port = await freePort();
    const conf = tmp.config([`port ${port}`, `  server 127.0.0.1:${sink.port}`]);
    const inetd = await startInetd(tmp.path, [tcpproxyService('127.0.0.1', port, ['-f', conf], { TCPPROXY_ENGINE: engine })]);
    await withInetd(inetd, async () => {
      const c = await Client.connect('127.0.0.1', port, { keep: false });
      c.socket.end(up);
      await until(() => c.ended || c.closed, () => `the whole download and EOF (have ${c.received} bytes)`, 30000);
      await until(() => sink.received.length === 1, 'the upstream to see the whole upload and EOF', 10000);

      expect(c.error).toBeNull();
      expect(c.digest()).toEqual(digestOf(down));
      expect(sink.received[0]).toEqual(digestOf(up));
      // The upstream connection came from the proxy, as the service's ids (not the client itself).
      expect(sink.sockets).toHaveLength(1);

      await until(() => inetd.started().length === 1 && inetd.reaped().size === 1, 'inetd to reap tcpproxy');
      const pid = inetd.started()[0] ?? -1;
      expect(inetd.reaped().get(pid)).toBe(0);
    });
  }, 60000);
});

it('serves a server argument on whatever port inetd accepted the connection', async () => {
  const upstream = await speaksFirstServer('220 upstream\r\n');
  const [p1, p2] = (await freePorts(2)) as [number, number];
  const inetd = await startInetd(tmp.path, [
    tcpproxyService('127.0.0.1', p1, [`127.0.0.1:${upstream.port}`]),
    tcpproxyService('127.0.0.1', p2, [`127.0.0.1:${upstream.port}`]),
  ]);
  await withInetd(inetd, async () => {
    for (const port of [p1, p2]) {
      const c = await Client.connect('127.0.0.1', port);
      await c.waitBytes('220 upstream\r\n'.length);
      c.socket.end('QUIT\r\n');
      await waitEnd(c);
      expect(c.error).toBeNull();
      expect(c.data().toString()).toBe('220 upstream\r\nQUIT\r\n');
    }
    expect(upstream.sockets).toHaveLength(2);
  });
}, 30000);

it('becomes the handler: same pid, inetd its parent, the service ids, no groups, only the client socket', async () => {
  const port = await freePort();
  const conf = tmp.config([`port ${port}`, `  exec ${fixture('whoami.sh')}`]);
  const inetd = await startInetd(tmp.path, [tcpproxyService('127.0.0.1', port, ['-f', conf])]);
  await withInetd(inetd, async () => {
    const c = await Client.connect('127.0.0.1', port);
    await waitEnd(c);
    expect(c.error).toBeNull();
    const who = parseWhoami(c.data().toString());
    // execve, not spawn: the handler is the process inetd started (its `PID execv` line)
    // and inetd is its parent.
    expect(inetd.started()).toEqual([who.pid]);
    expect(who.ppid).toBe(inetd.pid);
    // inetd started tcpproxy as root; tcpproxy dropped to the default service ids, with no supplementary groups.
    expect({ uid: who.uid, gid: who.gid, groups: who.groups }).toEqual({ uid: 65535, gid: 65534, groups: '' });
    // The client on fds 0 and 1; fd 2 is not the socket (inetd put it there; tcpproxy moved it to /dev/null).
    expect(who.tcpFds).toBe('0 1');
    await until(() => inetd.reaped().has(who.pid), 'inetd to reap the handler');
    expect(inetd.reaped().get(who.pid)).toBe(0);
  });
}, 30000);

it('uses the configured uid and gid of the service', async () => {
  const port = await freePort();
  const conf = tmp.config([`port ${port}`, '  uid 4242', '  gid 4343', `  exec ${fixture('whoami.sh')}`]);
  const inetd = await startInetd(tmp.path, [tcpproxyService('127.0.0.1', port, ['-f', conf])]);
  await withInetd(inetd, async () => {
    const c = await Client.connect('127.0.0.1', port);
    await waitEnd(c);
    const who = parseWhoami(c.data().toString());
    expect({ uid: who.uid, gid: who.gid, groups: who.groups }).toEqual({ uid: 4242, gid: 4343, groups: '' });
  });
}, 30000);

it('routes by the local address of the socket: one port on two interfaces, two upstreams', async () => {
  const { port, upstreamA, upstreamB, conf } = await twoInterfaces(tmp);
  const inetd = await startInetd(tmp.path, [
    tcpproxyService('127.0.0.2', port, ['-f', conf]),
    tcpproxyService('127.0.0.3', port, ['-f', conf]),
  ]);
  await withInetd(inetd, async () => {
    const got: Record<string, string> = {};
    for (const host of ['127.0.0.3', '127.0.0.2', '127.0.0.3']) {
      const c = await Client.connect(host, port);
      await c.waitBytes('banner X\n'.length);
      c.socket.end();
      await waitEnd(c);
      expect(c.error).toBeNull();
      got[host] = (got[host] ?? '') + c.data().toString();
    }
    expect(got).toEqual({ '127.0.0.2': 'banner A\n', '127.0.0.3': 'banner B\nbanner B\n' });
    expect([upstreamA.sockets.length, upstreamB.sockets.length]).toEqual([1, 2]);
  });
}, 30000);

it('closes a connection on a port the config does not list at once, with no data, and exits 1', async () => {
  const upstream = await speaksFirstServer('should not be seen\n');
  const [listed, unlisted] = (await freePorts(2)) as [number, number];
  const conf = tmp.config([`port ${listed}`, `  server 127.0.0.1:${upstream.port}`]);
  const inetd = await startInetd(tmp.path, [tcpproxyService('127.0.0.1', unlisted, ['-f', conf])]);
  await withInetd(inetd, async () => {
    const c = await Client.connect('127.0.0.1', unlisted);
    // tcpproxy is a fresh node process: its start-up is most of these 2 s.
    await waitEnd(c, 2000);
    expect(c.received).toBe(0);
    expect(upstream.sockets).toHaveLength(0);
    await until(() => inetd.reaped().size === 1, 'inetd to reap tcpproxy');
    expect([...inetd.reaped().values()]).toEqual([1]);
  });
}, 30000);
