/**
 * Socket activation. Accept=no: the listening sockets arrive as fds 3..
 * with LISTEN_FDS and LISTEN_PID, and `tcpproxy -D -s` uses them instead of
 * binding, matched to its services by address and port (an any-interface
 * service takes whatever the manager bound on its port); the variables are
 * not passed on to handlers. Accept=yes (`systemd-socket-activate --inetd
 * -a`): one tcpproxy per connection, in inetd mode.
 *
 * Two launchers: a python3 one (always: it binds, moves the sockets to fds
 * 3.. and execs tcpproxy with its own pid in LISTEN_PID) and
 * systemd-socket-activate when it is installed.
 */
import { Client } from '../helpers/client';
import { assertBuilt, CLI, killLaunched, type Launched } from '../helpers/daemon';
import { fixture } from '../helpers/fixtures';
import { executable, launchWithSockets, parseWhoami, SOCKET_ACTIVATE, startInGroup, waitEnd, waitListening } from '../helpers/inetd';
import { freePort, freePorts } from '../helpers/ports';
import { digestOf, payload, sinkServer, type SinkUpstream, speaksFirstServer } from '../helpers/servers';
import { twoInterfaces } from '../helpers/scenarios';
import { assertExecutableFixtures, cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

const MB = 1000 * 1000;
const HAVE_SOCKET_ACTIVATE = executable(SOCKET_ACTIVATE);

beforeAll(() => {
  assertBuilt();
  assertExecutableFixtures(['whoami.sh']);
});
const tmp = useTempDir('tcpproxy-activation-');
cleanUpAfterEach(killLaunched);

const activationLine = (host: string, port: number, fd = 3): string =>
  `tcpproxy: socket activation: fd ${fd} listening on ${host}:${port}\n`;

/** Waits for `n` `listening on` lines; fails with the daemon's output if it exits first. */
async function waitStarted(d: Launched, n = 1, timeoutMs = 10000): Promise<void> {
  const count = (): number => [...d.stderr().matchAll(/^\S+Z tcpproxy: listening on /gm)].length;
  await until(
    () => count() >= n || d.exit() !== null,
    () => `${n} "listening on" line(s); stderr:\n${d.stderr()}`,
    timeoutMs,
  );
  if (count() < n) throw new Error(`exited (${JSON.stringify(d.exit())}) before listening:\n${d.stderr()}`);
}

/** Runs `body`; a failure gets the daemon's stderr appended. */
async function withOutput(d: Launched, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (err instanceof Error) err.message += `\n--- ${d.argv.slice(0, 3).join(' ')} ...: stderr ---\n${d.stderr()}`;
    throw err;
  }
}

/** Connects, reads the whole reply until EOF and returns it. */
async function readReply(host: string, port: number, send = ''): Promise<string> {
  const c = await Client.connect(host, port);
  c.socket.end(send);
  await waitEnd(c);
  expect(c.error).toBeNull();
  return c.data().toString();
}

/** Sends `up` and ends; receives `down` until EOF; the sink must have got `up` whole. */
async function bulkBothWays(host: string, port: number, sink: SinkUpstream, up: Buffer, down: Buffer): Promise<void> {
  const c = await Client.connect(host, port, { keep: false });
  c.socket.end(up);
  await until(() => c.ended || c.closed, () => `the whole download and EOF (have ${c.received} bytes)`, 20000);
  await until(() => sink.received.length >= 1, 'the upstream to see the whole upload and EOF');
  expect(c.error).toBeNull();
  expect(c.digest()).toEqual(digestOf(down));
  expect(sink.received[sink.received.length - 1]).toEqual(digestOf(up));
}

describe('python3 launcher (LISTEN_FDS, LISTEN_PID, fds from 3)', () => {
  it('forwards through the inherited socket and says so on stderr', async () => {
    const up = payload(4 * MB, 'launcher-up');
    const down = payload(4 * MB, 'launcher-down');
    const sink = await sinkServer({ send: down });
    const port = await freePort();
    const conf = tmp.config([`port ${port}`, '  interface 127.0.0.1', `    server 127.0.0.1:${sink.port}`]);
    const d = launchWithSockets([{ host: '127.0.0.1', port }], ['-D', '-s', '-f', conf]);
    await withOutput(d, async () => {
      await waitStarted(d);
      expect(d.stderr()).toContain(activationLine('127.0.0.1', port));
      // The socket the launcher made is the one listening, in tcpproxy's process (same pid: execv).
      expect(d.stderr()).toContain(`launcher: pid ${d.pid}, 1 socket(s)`);
      await waitListening(d, [{ host: '127.0.0.1', port }]);
      await bulkBothWays('127.0.0.1', port, sink, up, down);
      expect((await d.stop()).code).toBe(0);
    });
  }, 30000);

  it('a handler started by the daemon sees no LISTEN_ variables and no inherited socket', async () => {
    const port = await freePort();
    const conf = tmp.config([`port ${port}`, '  interface 127.0.0.1', `    exec ${fixture('whoami.sh')}`]);
    const d = launchWithSockets([{ host: '127.0.0.1', port }], ['-D', '-s', '-f', conf]);
    await withOutput(d, async () => {
      await waitStarted(d);
      const who = parseWhoami(await readReply('127.0.0.1', port));
      expect(who.listenEnv).toBe('');
      // The client on 0 and 1 and no other TCP socket (the listening one on fd 3 is not passed on).
      expect(who.tcpFds).toBe('0 1');
      expect({ uid: who.uid, gid: who.gid }).toEqual({ uid: 65535, gid: 65534 });
    });
  }, 30000);

  it('an any-interface service takes the inherited socket on its port instead of binding the wildcard', async () => {
    const upstream = await speaksFirstServer('any interface\n');
    const port = await freePort();
    const conf = tmp.config([`port ${port}`, `  server 127.0.0.1:${upstream.port}`]);
    // Binding [::]:port itself would fail (EADDRINUSE): the launcher's 127.0.0.1:port is listening.
    const d = launchWithSockets([{ host: '127.0.0.1', port }], ['-D', '-s', '-f', conf]);
    await withOutput(d, async () => {
      await waitStarted(d);
      expect(d.stderr()).toContain(activationLine('127.0.0.1', port));
      expect(await readReply('127.0.0.1', port)).toBe('any interface\n');
    });
  }, 30000);

  it('matches two inherited sockets on one port to their interfaces by address, not by fd order', async () => {
    const { port, upstreamA, upstreamB, conf } = await twoInterfaces(tmp);
    // fd 3 is 127.0.0.3, fd 4 is 127.0.0.2: the reverse of the config's order.
    const d = launchWithSockets(
      [
        { host: '127.0.0.3', port },
        { host: '127.0.0.2', port },
      ],
      ['-D', '-s', '-f', conf],
    );
    await withOutput(d, async () => {
      await waitStarted(d, 2);
      expect(d.stderr()).toContain(activationLine('127.0.0.3', port, 3));
      expect(d.stderr()).toContain(activationLine('127.0.0.2', port, 4));
      expect(await readReply('127.0.0.2', port)).toBe('banner A\n');
      expect(await readReply('127.0.0.3', port)).toBe('banner B\n');
      expect([upstreamA.sockets.length, upstreamB.sockets.length]).toEqual([1, 1]);
    });
  }, 30000);

  it('ignores sockets whose LISTEN_PID is another process (and then cannot bind the port they hold)', async () => {
    const port = await freePort();
    const conf = tmp.config([`port ${port}`, '  interface 127.0.0.1', '    server 127.0.0.1:9']);
    const d = launchWithSockets([{ host: '127.0.0.1', port }], ['-D', '-s', '-f', conf], { pidOffset: 1 });
    await withOutput(d, async () => {
      await until(() => d.exit() !== null, 'tcpproxy to give up');
      expect(d.stderr()).not.toContain('socket activation');
      expect(d.stderr()).toMatch(/cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
      expect(d.exit()?.code).toBe(1);
    });
  }, 30000);
});

// CI installs Debian's systemd package for it: there a missing tool fails instead of skipping.
(HAVE_SOCKET_ACTIVATE || process.env['CI'] === 'true' ? describe : describe.skip)(`${SOCKET_ACTIVATE}`, () => {
  it('-l: tcpproxy -D -s uses the socket it is given, and its handlers do not see LISTEN_ variables', async () => {
    const up = payload(4 * MB, 'sa-up');
    const down = payload(4 * MB, 'sa-down');
    const sink = await sinkServer({ send: down });
    const [port, execPort] = (await freePorts(2)) as [number, number];
    const conf = tmp.config([
      `port ${port}`,
      '  interface 127.0.0.1',
      `    server 127.0.0.1:${sink.port}`,
      `port ${execPort}`,
      '  interface 127.0.0.1',
      `    exec ${fixture('whoami.sh')}`,
    ]);
    const d = startInGroup([
      SOCKET_ACTIVATE,
      '-l',
      `127.0.0.1:${port}`,
      '-l',
      `127.0.0.1:${execPort}`,
      process.execPath,
      CLI,
      '-D',
      '-s',
      '-f',
      conf,
    ]);
    await withOutput(d, async () => {
      // systemd-socket-activate listens first and execs tcpproxy (same pid) at the first connection.
      await waitListening(d, [
        { host: '127.0.0.1', port },
        { host: '127.0.0.1', port: execPort },
      ]);
      await bulkBothWays('127.0.0.1', port, sink, up, down);
      expect(d.stderr()).toContain(activationLine('127.0.0.1', port, 3));
      expect(d.stderr()).toContain(activationLine('127.0.0.1', execPort, 4));

      const who = parseWhoami(await readReply('127.0.0.1', execPort));
      expect(who.listenEnv).toBe('');
      expect(who.tcpFds).toBe('0 1');
      expect((await d.stop()).code).toBe(0);
    });
  }, 30000);

  it('--inetd -a (Accept=yes): one tcpproxy per connection, in inetd mode, nothing on stderr', async () => {
    const upstream = await speaksFirstServer('220 upstream\r\n');
    const port = await freePort();
    const d = startInGroup([
      SOCKET_ACTIVATE,
      '--inetd',
      '-a',
      '-l',
      `127.0.0.1:${port}`,
      process.execPath,
      CLI,
      `127.0.0.1:${upstream.port}`,
    ]);
    await withOutput(d, async () => {
      await waitListening(d, [{ host: '127.0.0.1', port }]);
      for (const word of ['one', 'two']) {
        expect(await readReply('127.0.0.1', port, `${word}\r\n`)).toBe(`220 upstream\r\n${word}\r\n`);
      }
      expect(upstream.sockets).toHaveLength(2);
      // tcpproxy logs to syslog only in inetd mode; fd 2 (inherited here) stays silent.
      expect(d.stderr()).not.toMatch(/^tcpproxy/m);
    });
  }, 30000);

  it('--inetd -a: an exec handler becomes the process the activator forked', async () => {
    const port = await freePort();
    const d = startInGroup([SOCKET_ACTIVATE, '--inetd', '-a', '-l', `127.0.0.1:${port}`, process.execPath, CLI, fixture('whoami.sh')]);
    await withOutput(d, async () => {
      await waitListening(d, [{ host: '127.0.0.1', port }]);
      const who = parseWhoami(await readReply('127.0.0.1', port));
      expect(who.ppid).toBe(d.pid);
      expect({ uid: who.uid, gid: who.gid, groups: who.groups }).toEqual({ uid: 65535, gid: 65534, groups: '' });
      expect(who.tcpFds).toBe('0 1');
      expect(who.listenEnv).toBe('');
    });
  }, 30000);
});
