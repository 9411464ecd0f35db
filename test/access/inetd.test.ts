/**
 * Access lists and limits in inetd mode (issue 12), as root, on both
 * engines: the test accepts a connection and starts tcpproxy with it on
 * fds 0, 1 and 2 (helpers/inetd serveOneConnection). allow/deny apply: a
 * refused client is closed with no byte, the refusal line goes to syslog
 * (the only log in inetd mode: the test owns /dev/log, helpers/syslog),
 * tcpproxy exits 0 and the upstream is never contacted. maxconn,
 * per-source and rate cannot work across one-connection processes: the
 * connection is served and one warning names those that are set.
 */
import { clientText, echoThrough, howEnded } from '../helpers/access';
import { assertBuilt, ENGINES } from '../helpers/daemon';
import { type Served, serveOneConnection, waitEnd } from '../helpers/inetd';
import { freePort } from '../helpers/ports';
import { describeAsRoot } from '../helpers/root';
import { digestOf, echoServer, payload } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { SyslogSink } from '../helpers/syslog';
import { until } from '../helpers/until';

let sink: SyslogSink | null = null;

beforeAll(assertBuilt);
const tmp = useTempDir('tcpproxy-access-inetd-');
beforeAll(async () => {
  // Waits while a concurrent run of the syslog tests owns /dev/log (see SyslogSink.open).
  sink = await SyslogSink.open('auto', 120000);
}, 150000);
cleanUpAfterEach();
afterAll(async () => {
  await sink?.close();
});

function theSink(): SyslogSink {
  if (sink === null) throw new Error('no syslog sink');
  return sink;
}

/** The messages tcpproxy (pid) sent to syslog so far. */
function messagesOf(pid: number): string[] {
  return theSink()
    .records()
    .filter((r) => r.pid === pid)
    .map((r) => r.message);
}

/** tcpproxy's exit code (or signal), bounded. */
async function exitOf(s: Served, timeoutMs = 10000): Promise<number | string> {
  await until(() => s.proxy.exit() !== null, `tcpproxy ${s.proxy.argv.slice(2).join(' ')} to exit`, timeoutMs);
  const e = s.proxy.exit();
  return e?.signal ?? e?.code ?? '?';
}

describeAsRoot('inetd mode (root)', () => {
  describe.each(ENGINES)('%s engine', (engine) => {
    const env = { ...process.env, TCPPROXY_ENGINE: engine };
    /** Serves one connection from `from` with a config of one any-interface service on its port, `lines` in the port block. */
    async function serve(from: string, upstream: number, lines: readonly string[]): Promise<{ s: Served; port: number }> {
      const port = await freePort();
      const conf = tmp.config([`port ${port}`, ...lines.map((l) => `  ${l}`), `  server 127.0.0.1:${upstream}`]);
      const s = await serveOneConnection(['-f', conf], {
        env,
        port,
        localAddress: from,
        ...(theSink().mode === 'bind-mount' ? { syslog: theSink() } : {}),
      });
      return { s, port };
    }

    test.each([
      ['127.0.0.5', ['allow 127.0.0.0/8', 'deny 127.0.0.0/24'], 'deny 127.0.0.0/24'],
      ['127.0.0.7', ['allow 10.0.0.0/8'], 'no allow matched'],
      ['127.0.0.7', ['deny 127.0.0.0/8', 'allow 127.0.0.6/31'], 'admitted'],
    ] as const)('from %s with %j: %s', async (from, lines, verdict) => {
      const up = await echoServer();
      const { s, port } = await serve(from, up.port, lines);
      const c = s.client;
      const key = `*:${port}`;
      try {
        if (verdict === 'admitted') {
          const data = payload(256 * 1024, `inetd-${engine}`);
          expect(await echoThrough(c, data)).toEqual(digestOf(data));
          expect(await exitOf(s)).toBe(0);
          expect(up.sockets).toHaveLength(1);
          expect(messagesOf(s.proxy.pid).filter((m) => m.includes(' refused '))).toEqual([]);
          return;
        }
        await waitEnd(c, 5000);
        expect({ bytes: c.received, end: howEnded(c) }).toEqual({ bytes: 0, end: expect.stringMatching(/^(eof|ECONNRESET)$/) as unknown });
        const line = `service ${key}: refused ${clientText(c)}: ${verdict}`;
        await theSink().waitFor((r) => r.pid === s.proxy.pid && r.message === line, line);
        expect(await exitOf(s)).toBe(0);
        expect(up.sockets).toHaveLength(0);
        expect(messagesOf(s.proxy.pid)).toEqual([line]);
      } catch (err) {
        if (err instanceof Error) err.message += `\n--- syslog of pid ${s.proxy.pid} ---\n${messagesOf(s.proxy.pid).join('\n')}`;
        throw err;
      }
    });

    test.each([
      [['maxconn 2', 'rate 5'], 'maxconn, rate'],
      [['per-source 3'], 'per-source'],
      [['rate 1', 'per-source 1', 'maxconn 1'], 'maxconn, per-source, rate'],
    ] as const)('%j: served, and one warning: "%s ignored in inetd mode"', async (limits, names) => {
      const up = await echoServer();
      const { s, port } = await serve('127.0.0.7', up.port, ['allow 127.0.0.0/8', ...limits]);
      const warning = `service *:${port}: ${names} ignored in inetd mode (each connection is its own process): use inetd's own limits`;
      const data = payload(64 * 1024, `inetd-limits-${engine}`);
      expect(await echoThrough(s.client, data)).toEqual(digestOf(data));
      expect(await exitOf(s)).toBe(0);
      await theSink().waitFor((r) => r.pid === s.proxy.pid && r.message === warning, warning);
      expect(messagesOf(s.proxy.pid).filter((m) => m.includes('ignored in inetd mode'))).toEqual([warning]);
      expect(up.sockets).toHaveLength(1);
    });
  });
});
