/**
 * inetd mode without inetd: the test accepts a connection itself and starts
 * tcpproxy with the accepted socket on fds 0, 1 and 2 (what inetd's `nowait`
 * does). Faster than the real inetd, so the finer points live here: the
 * server argument and exec forms, the handler's environment (-y, -v), access
 * control, half-close, reset and idle timeout through fd 0, exit statuses,
 * and that nothing is ever written to fd 2 (the client socket).
 */
import * as dns from 'node:dns';
import { assertBuilt, ENGINES, killLaunched } from '../helpers/daemon';
import { fixture } from '../helpers/fixtures';
import { parseWhoami, type Served, serveOneConnection, waitEnd } from '../helpers/inetd';
import { freePort } from '../helpers/ports';
import { type Digest, digestOf, payload, resetServer, sinkServer, speaksFirstServer, startServer, StreamHash } from '../helpers/servers';
import { assertExecutableFixtures, cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

const MB = 1000 * 1000;
/** PATH of a handler started with -y (src/session/handler.ts SAFE_PATH, documented in the man page). */
const SAFE_PATH = '/usr/local/bin:/usr/bin:/bin';

beforeAll(() => {
  assertBuilt();
  assertExecutableFixtures(['whoami.sh', 'acp-deny.sh']);
});
const tmp = useTempDir('tcpproxy-inetd-direct-');
cleanUpAfterEach(killLaunched);

/** tcpproxy's exit, bounded; a failure shows what it printed (to the pipes it never has here: empty). */
async function exitOf(s: Served, timeoutMs = 10000): Promise<number | string> {
  await until(() => s.proxy.exit() !== null, `tcpproxy ${s.proxy.argv.slice(2).join(' ')} to exit`, timeoutMs);
  const e = s.proxy.exit();
  return e?.signal ?? e?.code ?? '?';
}

/** What the client's name resolves to for PROXY_CLIENTNAME: getnameinfo, lower-cased, else the address. */
function expectedClientName(address: string): Promise<string> {
  return new Promise((resolve) =>
    dns.lookupService(address, 0, (err, host) => resolve(err || !host ? address : host.toLowerCase())),
  );
}

function envLines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '').sort();
}

describe.each(ENGINES)('%s engine', (engine) => {
  const env = { ...process.env, TCPPROXY_ENGINE: engine };

  it('forwards the connection on fd 0 to the server argument, 10 MB each way, and exits 0', async () => {
    const up = payload(10 * MB, `direct-${engine}-up`);
    const down = payload(10 * MB, `direct-${engine}-down`);
    const sink = await sinkServer({ send: down });
    const s = await serveOneConnection([`127.0.0.1:${sink.port}`], { env });
    const c = s.client;
    c.socket.end(up);
    await until(() => c.ended || c.closed, () => `the whole download and EOF (have ${c.received} bytes)`, 30000);
    await until(() => sink.received.length === 1, 'the upstream to see the whole upload and EOF');

    expect(c.error).toBeNull();
    expect(c.digest()).toEqual(digestOf(down));
    expect(sink.received[0]).toEqual(digestOf(up));
    expect(await exitOf(s)).toBe(0);
  }, 60000);

  it('keeps the upstream-to-client direction open after the client half-closes', async () => {
    const reply = payload(256 * 1024, `direct-${engine}-reply`);
    const got: Digest[] = [];
    const upstream = await startServer((socket) => {
      const hash = new StreamHash();
      socket.on('data', (chunk: Buffer) => hash.update(chunk));
      socket.on('end', () => {
        got.push(hash.digest());
        // Well after the client's FIN: the proxy must not have closed the client meanwhile.
        setTimeout(() => socket.end(reply), 200);
      });
    });
    const s = await serveOneConnection([`127.0.0.1:${upstream.port}`], { env });
    s.client.socket.end('request');
    await waitEnd(s.client);

    expect(got).toEqual([digestOf(Buffer.from('request'))]);
    expect({ ended: s.client.ended, error: s.client.error?.code ?? null }).toEqual({ ended: true, error: null });
    expect(s.client.digest()).toEqual(digestOf(reply));
    expect(await exitOf(s)).toBe(0);
  }, 30000);

  it('resets the client when the upstream resets (no other copy of the socket keeps it open)', async () => {
    const upstream = await resetServer(1);
    const s = await serveOneConnection([`127.0.0.1:${upstream.port}`], { env });
    // The upstream connection exists before anything is sent.
    await until(() => upstream.sockets.length === 1, 'tcpproxy to connect upstream');
    s.client.socket.write('hello');
    await s.client.waitClosed();

    expect(upstream.resets()).toBe(1);
    expect({ ended: s.client.ended, error: s.client.error?.code ?? null }).toEqual({ ended: false, error: 'ECONNRESET' });
    await exitOf(s);
  }, 30000);
});

it('closes both sides after the idle timeout (-t) and exits', async () => {
  const upstream = await startServer((socket) => socket.resume());
  const s = await serveOneConnection(['-t', '1', `127.0.0.1:${upstream.port}`]);
  await until(() => upstream.sockets.length === 1, 'tcpproxy to connect upstream');
  const start = Date.now();
  await waitEnd(s.client, 10000);
  expect(Date.now() - start).toBeGreaterThanOrEqual(500);
  expect(s.client.received).toBe(0);
  await until(() => upstream.sockets[0]?.closed === true || upstream.sockets[0]?.readableEnded === true, 'the upstream side to be closed too');
  await exitOf(s);
}, 30000);

it('runs an exec handler with the connection on fds 0 and 1: "/bin/echo hi"', async () => {
  // The program and its arguments are one word (man page, SYNOPSIS: "quote them for the shell").
  const s = await serveOneConnection(['/bin/echo hi']);
  await waitEnd(s.client);
  expect(s.client.error).toBeNull();
  expect(s.client.data().toString()).toBe('hi\n');
  expect(await exitOf(s)).toBe(0);
});

it('becomes the handler (execve: same pid) as the default service ids', async () => {
  const s = await serveOneConnection([fixture('whoami.sh')]);
  await waitEnd(s.client);
  const who = parseWhoami(s.client.data().toString());
  expect(who.pid).toBe(s.proxy.pid);
  expect(who.ppid).toBe(process.pid);
  expect({ uid: who.uid, gid: who.gid, groups: who.groups }).toEqual({ uid: 65535, gid: 65534, groups: '' });
  expect(who.tcpFds).toBe('0 1');
  expect(await exitOf(s)).toBe(0);
});

it('-y: the handler gets exactly PATH and the PROXY_ variables', async () => {
  const s = await serveOneConnection(['-y', '/usr/bin/env'], { env: { ...process.env, TCPPROXY_TEST_MARKER: 'x' } });
  await waitEnd(s.client);
  expect(envLines(s.client.data().toString())).toEqual(
    [
      `PATH=${SAFE_PATH}`,
      `PROXY_PORT=${s.port}`,
      'PROXY_INTERFACE=127.0.0.1',
      'PROXY_CLIENT=127.0.0.1',
      `PROXY_CLIENTNAME=${await expectedClientName('127.0.0.1')}`,
    ].sort(),
  );
  expect(await exitOf(s)).toBe(0);
});

it('-v: the variables get the given prefix; without -y the environment is passed on', async () => {
  const s = await serveOneConnection(['-v', 'TCP_', '/usr/bin/env'], { env: { ...process.env, TCPPROXY_TEST_MARKER: 'x' } });
  await waitEnd(s.client);
  const lines = envLines(s.client.data().toString());
  expect(lines).toEqual(
    expect.arrayContaining([`TCP_PORT=${s.port}`, 'TCP_INTERFACE=127.0.0.1', 'TCP_CLIENT=127.0.0.1', 'TCPPROXY_TEST_MARKER=x']),
  );
  expect(lines.filter((l) => l.startsWith('PROXY_'))).toEqual([]);
});

it('an ACP that refuses: the client gets exactly its output, then EOF; the upstream is never contacted', async () => {
  const upstream = await speaksFirstServer('upstream banner\n');
  const s = await serveOneConnection(['-a', fixture('acp-deny.sh'), `127.0.0.1:${upstream.port}`]);
  await waitEnd(s.client);
  expect({ ended: s.client.ended, error: s.client.error?.code ?? null }).toEqual({ ended: true, error: null });
  expect(s.client.data().toString()).toBe('denied\n');
  await exitOf(s);
  expect(upstream.sockets).toHaveLength(0);
});

it('an ACP in front of a handler (the client on fd 0 itself): a refusal reaches the client, the handler never runs', async () => {
  // The ACP's stdout is fd 0 here, and its stdin /dev/null: the spawn must not let one overwrite the other.
  const s = await serveOneConnection(['-a', fixture('acp-deny.sh'), '/bin/echo handler ran']);
  await waitEnd(s.client);
  expect(s.client.data().toString()).toBe('denied\n');
  await exitOf(s);
});

it('an ACP that grants (exit 0): the connection is forwarded', async () => {
  const upstream = await speaksFirstServer('upstream banner\n');
  const s = await serveOneConnection(['-a', '/bin/true', `127.0.0.1:${upstream.port}`]);
  await s.client.waitBytes('upstream banner\n'.length);
  s.client.socket.end('bye\n');
  await waitEnd(s.client);
  expect(s.client.data().toString()).toBe('upstream banner\nbye\n');
  expect(await exitOf(s)).toBe(0);
});

it('a config file without the port: the client is closed at once with no data, exit 1', async () => {
  const upstream = await speaksFirstServer('should not be seen\n');
  const port = await freePort();
  const conf = tmp.config([`port ${port}`, `  server 127.0.0.1:${upstream.port}`]);
  // serveOneConnection listens on another ephemeral port, so `port` cannot be the one it uses.
  const s = await serveOneConnection(['-f', conf]);
  expect(s.port).not.toBe(port);
  await waitEnd(s.client, 5000);
  expect(s.client.received).toBe(0);
  expect(await exitOf(s)).toBe(1);
  expect(upstream.sockets).toHaveLength(0);
});

it('a config file with the port (any interface) serves the connection', async () => {
  const upstream = await speaksFirstServer('hello from upstream\n');
  const port = await freePort();
  const conf = tmp.config([`port ${port}`, `  server 127.0.0.1:${upstream.port}`]);
  const s = await serveOneConnection(['-f', conf], { port });
  await s.client.waitBytes('hello from upstream\n'.length);
  s.client.socket.end();
  await waitEnd(s.client);
  expect(s.client.data().toString()).toBe('hello from upstream\n');
  expect(await exitOf(s)).toBe(0);
});

it('never writes to fd 2 (the client): a config error goes to syslog only, the client sees no data', async () => {
  const conf = tmp.config(['port 1', '  sever 127.0.0.1:1']);
  const s = await serveOneConnection(['-f', conf]);
  await waitEnd(s.client, 5000);
  expect(s.client.data().toString()).toBe('');
  expect(await exitOf(s)).toBe(2);
});

it('never writes to fd 2 (the client): a handler that does not exist goes to syslog only', async () => {
  const s = await serveOneConnection(['/nonexistent/handler']);
  await waitEnd(s.client, 5000);
  expect(s.client.data().toString()).toBe('');
  expect(await exitOf(s)).toBe(2);
});
