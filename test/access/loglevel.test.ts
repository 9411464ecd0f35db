/**
 * `loglevel`, through the built CLI with both engines (the native fast path
 * under splice, the session code under js): `quiet` writes no line about an
 * admitted connection while a flood of denied ones is still logged (capped,
 * with its summaries); `verbose` names, for each connection, the server it
 * was connected to and the local port it came from, which is the port the
 * server saw; a quiet and a normal service side by side keep their own.
 */
import { refusals } from '../helpers/access';
import { Client } from '../helpers/client';
import { ENGINES, logLines, re, smallPath, withProxy } from '../helpers/daemon';
import { freePort } from '../helpers/ports';
import { echoServer, payload, sha256 } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

const tmp = useTempDir('tcpproxy-loglevel-');
cleanUpAfterEach();

/** Sends `data` through 127.0.0.1:port (from `from`), half-closes, reads the echo to its end; `ports` gets the client's port. */
async function echo(port: number, data: Buffer, from = '127.0.0.1', ports: number[] = []): Promise<{ bytes: number; sha256: string }> {
  const c = await Client.connect('127.0.0.1', port, { localAddress: from, keep: false });
  ports.push(c.local.port);
  c.socket.end(data);
  await c.waitClosed(15000);
  return c.digest();
}

describe.each(ENGINES)('%s engine', (engine) => {
  const env = { TCPPROXY_ENGINE: engine };

  it('quiet: 20 admitted connections leave no line, a flood of 300 denied ones is logged (lines and summaries add up), a normal service beside it logs its own', async () => {
    const up = await echoServer();
    const [quiet, normal] = [await freePort(), await freePort()];
    const conf = tmp.config([
      'loglevel quiet',
      `port ${quiet}`,
      '  interface 127.0.0.1',
      '  deny 127.0.0.9',
      `  server 127.0.0.1:${up.port}`,
      `port ${normal}`,
      '  interface 127.0.0.1',
      '  loglevel normal',
      `  server 127.0.0.1:${up.port}`,
    ]);
    await withProxy(['-s', '-f', conf], { env, listeners: 2 }, async (p) => {
      for (let i = 0; i < 20; i++) {
        const data = payload(16 * 1024, `quiet-${engine}-${i}`);
        expect(await echo(quiet, data)).toEqual({ bytes: data.length, sha256: sha256(data) });
      }
      const denied = await Promise.all(Array.from({ length: 300 }, () => Client.connect('127.0.0.1', quiet, { localAddress: '127.0.0.9', keep: false })));
      await until(() => denied.every((c) => c.closed), 'every denied client closed', 10000);
      const key = `127.0.0.1:${quiet}`;
      const counted = (): number => {
        const r = refusals(p.stderr(), key);
        return r.lines.length + r.summaries.reduce((a, b) => a + b, 0);
      };
      await until(() => counted() >= 300, () => `refusal lines and summaries adding up to 300 (have ${counted()})`, 5000);
      expect(counted()).toBe(300);
      expect(refusals(p.stderr(), key).lines.every((l) => new RegExp(`^service ${re(key)}: refused 127\\.0\\.0\\.9:\\d+: deny 127\\.0\\.0\\.9/32$`).test(l))).toBe(true);
      // The normal service, after all of that: its accept and end lines.
      const data = payload(1024, `normal-${engine}`);
      expect(await echo(normal, data)).toEqual({ bytes: data.length, sha256: sha256(data) });
      await until(() => logLines(p.stderr()).some((l) => /^connection \d+: end: /.test(l)), 'the end line of the normal service', 5000);
      const about = logLines(p.stderr()).filter((l) => /^connection \d+: /.test(l));
      expect(about).toEqual([
        expect.stringMatching(new RegExp(`^connection \\d+: client 127\\.0\\.0\\.1:\\d+ on 127\\.0\\.0\\.1:${normal}: server 127\\.0\\.0\\.1:${up.port}, uid \\d+ gid \\d+$`)),
        expect.stringMatching(/^connection \d+: end: client 127\.0\.0\.1:\d+ on 127\.0\.0\.1:\d+, server 127\.0\.0\.1:\d+ from 127\.0\.0\.1:\d+, 1024 bytes up, 1024 down, \d+ ms, eof, (copy|js)$/),
      ]);
    });
  });

  it('verbose: each connection names the server it was connected to and the local port it came from, the port the server saw; the end line names client, service, server and that port', async () => {
    const up = await echoServer();
    const port = await freePort();
    const conf = tmp.config([`port ${port}`, '  interface 127.0.0.1', '  loglevel verbose', `  server 127.0.0.1:${up.port}`]);
    await withProxy(['-s', '-f', conf], { env }, async (p) => {
      const clients: number[] = [];
      for (let i = 0; i < 3; i++) {
        const data = payload(4096, `verbose-${engine}-${i}`);
        expect(await echo(port, data, '127.0.0.1', clients)).toEqual({ bytes: data.length, sha256: sha256(data) });
      }
      await until(() => logLines(p.stderr()).filter((l) => /: end: /.test(l)).length === 3, 'three end lines', 5000);
      const seen = up.sockets.map((s) => s.remotePort ?? 0);
      expect(seen).toHaveLength(3);
      const connected = logLines(p.stderr()).flatMap((l) => {
        const m = new RegExp(`^connection (\\d+): connected to 127\\.0\\.0\\.1:${up.port} from 127\\.0\\.0\\.1:(\\d+)$`).exec(l);
        return m === null ? [] : [Number(m[2])];
      });
      expect(connected).toEqual(seen);
      const ends = logLines(p.stderr()).flatMap((l) => /^connection \d+: end: (.*)$/.exec(l)?.[1] ?? []);
      expect(ends).toEqual(
        clients.map((cp, i) =>
          expect.stringMatching(
            new RegExp(
              `^client 127\\.0\\.0\\.1:${cp} on 127\\.0\\.0\\.1:${port}, server 127\\.0\\.0\\.1:${up.port} from 127\\.0\\.0\\.1:${seen[i]}, ` +
                `4096 bytes up, 4096 down, \\d+ ms, eof, ${smallPath(engine)}$`,
            ),
          ),
        ),
      );
      // Between the accept line and the end line of its connection.
      const ids = logLines(p.stderr()).flatMap((l) => /^connection (\d+): (client|connected|end)/.exec(l)?.slice(1, 3).join(' ') ?? []);
      const order = ids.reduce<Record<string, string[]>>((acc, e) => {
        const [id, what] = e.split(' ');
        (acc[id ?? ''] ??= []).push(what ?? '');
        return acc;
      }, {});
      expect(Object.values(order)).toEqual([
        ['client', 'connected', 'end'],
        ['client', 'connected', 'end'],
        ['client', 'connected', 'end'],
      ]);
    });
  });
});
