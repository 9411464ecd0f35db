/**
 * Access control programs (-a / acp), as root: a grant forwards (and the
 * ACP ran as the service identity, stdin /dev/null, its stderr logged); a
 * deny gives the client exactly what the ACP printed, then the end, and the
 * upstream is never contacted; an ACP running past the timeout (-t) is
 * killed and denies, in about that time; a granted connection leaves its
 * worker able to serve others.
 */
import type * as net from 'node:net';
import { Client } from '../helpers/client';
import { ENGINES, re, startProxy, waitLog } from '../helpers/daemon';
import { handler, uniqueSeconds, writeConfig } from '../helpers/fixtures';
import { freePort, portOf } from '../helpers/ports';
import { findProcesses } from '../helpers/proc';
import { describeAsRoot } from '../helpers/root';
import { digestOf, echoServer, payload, startServer, type Upstream } from '../helpers/servers';
import { cleanUpAfterEach, killTokens, useHandlerFixtures, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

const MiB = 1024 * 1024;
const tokens: string[] = [];

useHandlerFixtures();
const tmp = useTempDir('tcpproxy-acp-');
cleanUpAfterEach(() => killTokens(tokens));

/** An upstream that must never be contacted: counts connections (Upstream.sockets). */
function untouchedUpstream(): Promise<Upstream> {
  return startServer((s) => s.destroy());
}

/** Sends `data`, ends, and waits for the echo and the clean end. */
async function echoRoundTrip(c: Client, data: Buffer): Promise<void> {
  c.socket.end(data);
  await until(() => c.ended || c.closed, 'the end of the echo', 20000);
  expect({ ended: c.ended, error: c.error?.code ?? null }).toEqual({ ended: true, error: null });
  expect(c.digest()).toEqual(digestOf(data));
}

describeAsRoot('access control programs (root)', () => {
  describe.each(ENGINES)('%s engine', (engine) => {
    const env = { TCPPROXY_ENGINE: engine };

    test('granted: forwarded unchanged (sha256 both ways); the ACP ran as the service ids with stdin /dev/null; its stderr is logged', async () => {
      const acp = handler('acp-grant.sh');
      const up = await echoServer();
      const p = await startProxy(['-a', acp, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], env);
      const port = portOf(p);
      const c = await Client.connect('127.0.0.1', port, { keep: false });
      await echoRoundTrip(c, payload(MiB, `acp-grant-${engine}`));
      expect(up.sockets).toHaveLength(1);
      await waitLog(
        p.stderr,
        new RegExp(`^connection 1: acp ${re(acp)}: granted \\(exit 0\\): acp uid=65535 gid=65534 stdin=/dev/null client=127\\.0\\.0\\.1 port=${port}$`),
      );
      await waitLog(p.stderr, new RegExp(`^connection 1: end: client \\S+ on \\S+, server \\S+ from \\S+, ${MiB} bytes up, ${MiB} down, \\d+ ms, eof, `));
    });

    test('"acp" in a port block with uid/gid: the ACP runs as that identity', async () => {
      const acp = handler('acp-grant.sh');
      const up = await echoServer();
      const portNo = await freePort();
      const conf = writeConfig(
        tmp.path,
        `acp-${engine}.conf`,
        `port ${portNo}\n  interface 127.0.0.1\n  uid 4242\n  gid 4343\n  acp ${acp}\n  server 127.0.0.1:${up.port}\n`,
      );
      const p = await startProxy(['-s', '-f', conf], env);
      const c = await Client.connect('127.0.0.1', portNo);
      await echoRoundTrip(c, Buffer.from('hello through the acp\n'));
      await waitLog(p.stderr, new RegExp(`^connection 1: acp ${re(acp)}: granted \\(exit 0\\): acp uid=4242 gid=4343 stdin=/dev/null client=127\\.0\\.0\\.1 port=${portNo}$`));
    });

    test('denied with a message: the client gets exactly the ACP\'s output, then the end; the upstream is never contacted', async () => {
      const acp = handler('acp-deny.sh');
      const up = await untouchedUpstream();
      const p = await startProxy(['-a', acp, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], env);
      const c = await Client.connect('127.0.0.1', portOf(p));
      await c.waitClosed(5000);
      expect({ data: c.data().toString('latin1'), ended: c.ended, error: c.error?.code ?? null }).toEqual({
        data: 'access denied for 127.0.0.1\r\n',
        ended: true,
        error: null,
      });
      await waitLog(p.stderr, new RegExp(`^connection 1: acp ${re(acp)}: denied \\(exit 1\\): policy: 127\\.0\\.0\\.1 is not welcome$`));
      expect(up.sockets).toHaveLength(0);
      // A second client is denied the same way (the worker is fine), and still nothing reaches the upstream.
      const c2 = await Client.connect('127.0.0.1', portOf(p));
      await c2.waitClosed(5000);
      expect(c2.data().toString('latin1')).toBe('access denied for 127.0.0.1\r\n');
      await waitLog(p.stderr, /^connection 2: acp .*: denied \(exit 1\): /);
      expect(up.sockets).toHaveLength(0);
      expect(p.stderr()).not.toMatch(/connection \d+: end: /);
    });

    test('an ACP that runs past -t 1 is killed and denies: the client is closed after about 1 s, the upstream untouched', async () => {
      const token = uniqueSeconds();
      tokens.push(token);
      const up = await untouchedUpstream();
      const acp = handler('sleeper.sh');
      const p = await startProxy(['-t', '1', '-a', `${acp} ${token}`, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], env);
      const c = await Client.connect('127.0.0.1', portOf(p));
      await c.waitClosed(5000);
      expect(c.lifetimeMs()).toBeGreaterThanOrEqual(900);
      expect(c.lifetimeMs()).toBeLessThan(3000);
      expect(c.received).toBe(0);
      await waitLog(p.stderr, new RegExp(`^connection 1: acp ${re(acp)} ${re(token)}: denied \\(timeout\\)$`));
      expect(up.sockets).toHaveLength(0);
      // The ACP itself is gone.
      await until(() => findProcesses(token).length === 0, 'the timed-out ACP to be gone', 2000);
    });

    test('an ACP script whose child runs past -t 1: killed with its children; the client is closed after about 1 s', async () => {
      const token = uniqueSeconds(20);
      tokens.push(token);
      const up = await untouchedUpstream();
      const acp = handler('acp-slow.sh');
      const p = await startProxy(['-t', '1', '-a', `${acp} ${token}`, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], env);
      const c = await Client.connect('127.0.0.1', portOf(p));
      // The verdict comes at the timeout, not when the ACP's child would have finished (20 s).
      await waitLog(p.stderr, new RegExp(`^connection 1: acp ${re(acp)} ${re(token)}: denied \\(timeout\\): checking 127\\.0\\.0\\.1 slowly$`), 4000);
      await c.waitClosed(3000);
      expect(c.lifetimeMs()).toBeGreaterThanOrEqual(900);
      expect(c.lifetimeMs()).toBeLessThan(3000);
      expect(c.received).toBe(0);
      expect(up.sockets).toHaveLength(0);
      // Nothing the ACP started is left running (it held the client socket on its stdout).
      await until(() => findProcesses(token).length === 0, 'the ACP and its child to be gone', 2000);
    });

    test('after a grant, a large download to a client that does not read does not stall the worker', async () => {
      const acp = handler('acp-grant.sh');
      const big = payload(32 * MiB, `acp-big-${engine}`);
      // "BIG\n" → 32 MiB, anything else is echoed.
      const up = await startServer((s: net.Socket) => {
        s.once('data', (first: Buffer) => {
          if (first.toString() === 'BIG\n') s.end(big);
          else {
            s.write(first);
            s.pipe(s);
          }
        });
      });
      const p = await startProxy(['-a', acp, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], env);
      const port = portOf(p);
      const slow = await Client.connect('127.0.0.1', port, { keep: false });
      slow.socket.pause();
      slow.socket.write('BIG\n');
      await until(() => up.sockets.length === 1, 'the upstream connection of the slow client', 5000);
      await waitLog(p.stderr, /^connection 1: acp .*: granted \(exit 0\)/);
      // The same worker serves a second client meanwhile.
      const quick = await Client.connect('127.0.0.1', port);
      quick.socket.write('ping\n');
      await quick.waitBytes(5, 5000);
      expect(quick.data().toString()).toBe('ping\n');
      // And the slow client, once it reads, gets every byte.
      slow.socket.resume();
      await until(() => slow.ended || slow.closed, 'the end of the download', 20000);
      expect(slow.digest()).toEqual(digestOf(big));
    });
  });
});
