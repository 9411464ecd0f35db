/**
 * The control socket and `tcpproxy -Z` (issue 15 item 1), through the built
 * CLI as root, on both engines: a daemon with known sessions (one refused,
 * one ended with 1000 bytes each way, one live with 300, one that failed
 * over from a dead server to a live one) shows exactly those numbers in
 * -Z, -ZZ and --json; the socket is mode 0600 and refuses uid 65534; a
 * half-written request neither stalls the daemon nor stays connected past
 * 10 s; a request over 4 KiB and an unknown one get an error; a named socket
 * another daemon answers on fails the start, a stale one is replaced;
 * `control none` has none.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { clientText, echoThrough } from '../helpers/access';
import { Client } from '../helpers/client';
import { CLI, ENGINES, re, readyWorkers, runCli, runToExit, waitLog, withProxy, type Proxy } from '../helpers/daemon';
import { freePort } from '../helpers/ports';
import { requireRoot } from '../helpers/root';
import { digestOf, echoServer, payload, type Upstream } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

beforeAll(requireRoot);
/** Searchable by uid 65534 (mode 0755), so that only the socket's own mode can refuse it. */
const tmp = useTempDir('tcpproxy-status-', 0o755);
cleanUpAfterEach();

/** The cells of an aligned table line (columns are two or more spaces apart). */
function cells(line: string): string[] {
  return line.trim().split(/ {2,}/);
}

/** -Z's output as blocks of lines (the tables), the first being the heading line. */
function blocks(text: string): string[][] {
  return text
    .trimEnd()
    .split('\n\n')
    .map((b) => b.split('\n'));
}

/** The connection number of `c`'s accept line. */
async function connectionOf(p: Proxy, c: Client): Promise<number> {
  const m = await waitLog(p.stderr, new RegExp(`^connection (\\d+): client ${re(clientText(c))} on `));
  return Number(m[1]);
}

async function endLine(p: Proxy, id: number): Promise<void> {
  await waitLog(p.stderr, new RegExp(`^connection ${id}: end: `));
}

interface Setup {
  readonly up: Upstream;
  readonly port: number;
  readonly groupPort: number;
  readonly dead: number;
  readonly conf: string;
  readonly sock: string;
}

async function setup(name: string): Promise<Setup> {
  const up = await echoServer();
  const [port, groupPort, dead] = [await freePort(), await freePort(), await freePort()];
  const sock = path.join(tmp.path, `${name}.sock`);
  const conf = path.join(tmp.path, `${name}.conf`);
  fs.writeFileSync(
    conf,
    [
      `port ${port}`,
      '  interface 127.0.0.1',
      `    server 127.0.0.1:${up.port}`,
      '    deny 127.0.0.9',
      `port ${groupPort}`,
      '  interface 127.0.0.1',
      `    server 127.0.0.1:${dead} 127.0.0.1:${up.port}`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  return { up, port, groupPort, dead, conf, sock };
}

describe.each(ENGINES)('%s engine', (engine) => {
  const env = { TCPPROXY_ENGINE: engine };

  it('-Z, -ZZ and --json show the known sessions, refusals, bytes, servers and the worker', async () => {
    const s = await setup(`known-${engine}`);
    const key = `127.0.0.1:${s.port}`;
    const groupKey = `127.0.0.1:${s.groupPort}`;
    await withProxy(['-f', s.conf, '-S', s.sock], { env, listeners: 2 }, async (p) => {
      // One refused (deny), one ended (1000 bytes each way), one live (300 each way).
      const refused = await Client.connect('127.0.0.1', s.port, { localAddress: '127.0.0.9' });
      await refused.waitClosed(5000);
      await waitLog(p.stderr, new RegExp(`^service ${re(key)}: refused ${re(clientText(refused))}: deny 127\\.0\\.0\\.9/32$`));
      const a = await Client.connect('127.0.0.1', s.port);
      const data = payload(1000, `status-${engine}`);
      expect(await echoThrough(a, data)).toEqual(digestOf(data));
      await endLine(p, await connectionOf(p, a));
      const b = await Client.connect('127.0.0.1', s.port);
      b.socket.write(payload(300, 'live'));
      await b.waitBytes(300);
      const live = await connectionOf(p, b);
      // The group: the dead server fails (marked down), the live one serves.
      const g = await Client.connect('127.0.0.1', s.groupPort);
      const gd = payload(10, 'group');
      expect(await echoThrough(g, gd)).toEqual(digestOf(gd));
      await endLine(p, await connectionOf(p, g));
      const [worker] = readyWorkers(p.stderr());

      const z = await runCli(['-Z', '-S', s.sock]);
      expect({ code: z.code, stderr: z.stderr }).toEqual({ code: 0, stderr: '' });
      const [head, services, refusals, servers, workers, ...rest] = blocks(z.stdout);
      expect(rest).toEqual([]);
      expect(head).toEqual([expect.stringMatching(new RegExp(`^tcpproxy \\d+\\.\\d+\\.\\d+, pid ${p.child.pid}, up \\d+ s$`)) as unknown]);
      expect(services?.map(cells)).toEqual([
        ['SERVICE', 'UID', 'GID', 'LIVE', 'SESSIONS', 'REFUSED', 'BYTES-UP', 'BYTES-DOWN', 'TARGET'],
        [key, '65535', '65534', '1', '2', '1', '1300', '1300', `server 127.0.0.1:${s.up.port}`],
        [groupKey, '65535', '65534', '0', '1', '0', '10', '10', `server 127.0.0.1:${s.dead} 127.0.0.1:${s.up.port}`],
      ]);
      expect(refusals?.map(cells)).toEqual([
        ['SERVICE', 'DENY', 'NO-ALLOW', 'PER-SOURCE', 'PROXY'],
        [key, '1', '0', '0', '0'],
      ]);
      expect(servers?.map(cells)).toEqual([
        ['SERVICE', 'SERVER', 'STATE', 'CONNECT-FAILED'],
        [key, `127.0.0.1:${s.up.port}`, 'up', '0'],
        [groupKey, `127.0.0.1:${s.dead}`, 'down', '1'],
        [groupKey, `127.0.0.1:${s.up.port}`, 'up', '0'],
      ]);
      expect(workers?.map(cells)).toEqual([
        ['WORKER', 'UID', 'GID', 'STATE', 'RSS-KIB', 'SESSIONS'],
        [String(worker?.pid), '65535', '65534', 'ready', expect.stringMatching(/^[1-9]\d*$/) as unknown, '1'],
      ]);
      // Aligned: every line of a table has its numeric columns ending in the same place.
      const rightEdge = (line: string, word: string): number => line.indexOf(word) + word.length;
      expect(rightEdge(services?.[1] ?? '', ' 1300')).toBe(rightEdge(services?.[0] ?? '', 'BYTES-UP'));

      const zz = await runCli(['-ZZ', '-S', s.sock]);
      expect(zz.code).toBe(0);
      const last = blocks(zz.stdout).at(-1);
      expect(last?.map(cells)).toEqual([
        ['CONNECTION', 'CLIENT', 'SERVICE', 'PHASE', 'AGE-S', 'BYTES-UP', 'BYTES-DOWN', 'IDLE-S'],
        [String(live), clientText(b), key, 'forwarding', expect.stringMatching(/^\d+$/) as unknown, '300', '300', expect.stringMatching(/^\d+$/) as unknown],
      ]);

      const j = await runCli(['-ZZ', '--json', '-S', s.sock]);
      expect(j.code).toBe(0);
      const doc = JSON.parse(j.stdout) as Record<string, unknown>;
      expect(doc).toMatchObject({
        pid: p.child.pid,
        services: [
          {
            service: key,
            port: s.port,
            interface: '127.0.0.1',
            uid: 65535,
            gid: 65534,
            live: 1,
            sessions: 2,
            refused: { deny: 1, noAllow: 0, perSource: 0, proxy: 0 },
            bytesUp: 1300,
            bytesDown: 1300,
            servers: [{ server: `127.0.0.1:${s.up.port}`, state: 'up', connectFailed: 0 }],
          },
          {
            service: groupKey,
            sessions: 1,
            servers: [
              { server: `127.0.0.1:${s.dead}`, state: 'down', connectFailed: 1 },
              { server: `127.0.0.1:${s.up.port}`, state: 'up', connectFailed: 0 },
            ],
          },
        ],
        workers: [{ pid: worker?.pid, uid: 65535, gid: 65534, state: 'ready', sessions: 1, answered: true }],
        liveSessions: [{ id: live, client: clientText(b), service: key, phase: 'forwarding', bytesUp: 300, bytesDown: 300 }],
      });

      // The live session ends: its bytes move to the ended ones, nothing is counted twice.
      b.socket.end();
      await b.waitClosed(5000);
      await endLine(p, live);
      const after = JSON.parse((await runCli(['-ZZ', '--json', '-S', s.sock])).stdout) as { services: { live: number; bytesUp: number; bytesDown: number }[]; liveSessions: unknown[] };
      expect({ svc: after.services[0], sessions: after.liveSessions }).toMatchObject({ svc: { live: 0, bytesUp: 1300, bytesDown: 1300 }, sessions: [] });
    });
  });
});

describe('the control socket', () => {
  it('is mode 0600, owned by root, and refuses uid 65534', async () => {
    const s = await setup('mode');
    await withProxy(['-f', s.conf, '-S', s.sock], { listeners: 2 }, async () => {
      const st = fs.statSync(s.sock);
      expect({ socket: st.isSocket(), mode: (st.mode & 0o777).toString(8), uid: st.uid }).toEqual({ socket: true, mode: '600', uid: 0 });
      // As uid 65534 (python, so that nothing of this checkout need be readable by it): the kernel refuses the connect.
      const probe = `import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(${JSON.stringify(s.sock)})\n    print("connected")\nexcept OSError as e:\n    print(e.errno == 13 and "EACCES" or e)\n`;
      const r = await runToExit(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '/usr/bin/python3', '-c', probe]);
      expect(r.stdout).toBe('EACCES\n');
      // And -Z says so in its words (run as root against a socket root cannot open: none here, so a fresh path).
      const missing = await runCli(['-Z', '-S', path.join(tmp.path, 'nobody-here.sock')]);
      expect({ code: missing.code, stderr: missing.stderr }).toEqual({
        code: 1,
        stderr: `tcpproxy: cannot reach the daemon at ${path.join(tmp.path, 'nobody-here.sock')}: no such socket (is the daemon running, with this socket?)\n`,
      });
    });
    // Gone with the daemon.
    expect(fs.existsSync(s.sock)).toBe(false);
  });

  it('a half-written request neither stalls the daemon nor stays past 10 s; long and unknown requests get an error', async () => {
    const s = await setup('slow');
    await withProxy(['-f', s.conf, '-S', s.sock], { listeners: 2 }, async () => {
      const half = net.connect(s.sock);
      let got = '';
      let closedAt: number | null = null;
      half.on('data', (b: Buffer) => (got += b.toString()));
      half.on('error', () => undefined);
      half.on('close', () => (closedAt = Date.now()));
      await new Promise<void>((resolve) => half.once('connect', () => resolve()));
      half.write('stat');
      const since = Date.now();
      // Others are answered meanwhile.
      const z = await runCli(['-Z', '-S', s.sock]);
      expect(z.code).toBe(0);
      expect(z.stdout).toMatch(/^tcpproxy /);
      // The half-written one is dropped after 10 s, with nothing said to it.
      await until(() => closedAt !== null, 'the daemon to drop the half-written request', 16000);
      expect({ got, waited: (closedAt ?? 0) - since >= 9000 }).toEqual({ got: '', waited: true });

      const ask = (text: string): Promise<string> =>
        new Promise((resolve, reject) => {
          const c = net.connect(s.sock, () => c.write(text));
          let out = '';
          c.on('data', (b: Buffer) => (out += b.toString()));
          c.on('end', () => resolve(out));
          c.on('error', reject);
          c.setTimeout(5000, () => reject(new Error(`no answer to ${JSON.stringify(text.slice(0, 20))}`)));
        });
      expect(await ask('a'.repeat(5000))).toBe('{"error":"a request is one line of at most 4096 bytes"}\n');
      expect(await ask('reload\n')).toBe('{"error":"unknown request: this socket answers \\"status\\" and \\"status sessions\\""}\n');
      expect(JSON.parse(await ask('status\n'))).toMatchObject({ services: [{ port: s.port }, { port: s.groupPort }] });
    });
  }, 40000);

  it('a named socket another daemon answers on fails the start; a stale one is replaced', async () => {
    const s = await setup('busy');
    await withProxy(['-f', s.conf, '-S', s.sock], { listeners: 2 }, async () => {
      const second = await runCli(['-D', '-S', s.sock, '-b', '127.0.0.1:0', `127.0.0.1:${s.up.port}`]);
      expect(second.code).toBe(1);
      expect(second.stderr).toContain(`cannot listen on the control socket ${s.sock}: another daemon answers on it\n`);
    });
    // A socket file nobody answers on (a daemon killed with SIGKILL leaves one).
    const stale = path.join(tmp.path, 'stale.sock');
    const r = await runToExit(['python3', '-c', `import socket\ns = socket.socket(socket.AF_UNIX)\ns.bind(${JSON.stringify(stale)})\ns.close()`]);
    expect(r.code).toBe(0);
    expect(fs.statSync(stale).isSocket()).toBe(true);
    await withProxy(['-f', s.conf, '-S', stale], { listeners: 2 }, async () => {
      const z = await runCli(['-Z', '-S', stale]);
      expect(z.code).toBe(0);
    });
  });

  it('`control none` has none, and -Z with that file says so; `control` is checked like every directive', async () => {
    const s = await setup('none');
    const conf = path.join(tmp.path, 'none-control.conf');
    fs.writeFileSync(conf, `control none\n${fs.readFileSync(s.conf, 'utf8')}`, { mode: 0o600 });
    await withProxy(['-f', conf], { listeners: 2 }, async (p) => {
      const z = await runCli(['-Z', '-f', conf]);
      expect({ code: z.code, stderr: z.stderr }).toEqual({
        code: 1,
        stderr: 'tcpproxy: no control socket: "control none", or no runtime directory ($XDG_RUNTIME_DIR) for one; name it with -S\n',
      });
      expect(p.stderr()).not.toMatch(/control socket/);
    });
    const bad = path.join(tmp.path, 'bad-control.conf');
    fs.writeFileSync(bad, `control tcpproxy.sock\ncontrol /run/x.sock\n${fs.readFileSync(s.conf, 'utf8')}`, { mode: 0o600 });
    const r = await runCli(['-zz', '-f', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`tcpproxy:${bad}:1: control must be an absolute path or "none", not "tcpproxy.sock"\n`);
  });

  it('a control path named in the file is the one -Z asks', async () => {
    const s = await setup('named');
    const conf = path.join(tmp.path, 'named-control.conf');
    fs.writeFileSync(conf, `control ${s.sock}\n${fs.readFileSync(s.conf, 'utf8')}`, { mode: 0o600 });
    await withProxy(['-f', conf], { listeners: 2 }, async () => {
      const z = await runCli(['-Z', '--json', '-f', conf]);
      expect(z.code).toBe(0);
      expect(JSON.parse(z.stdout)).toMatchObject({ services: [{ port: s.port }, { port: s.groupPort }] });
      expect(CLI).toBeTruthy();
    });
  });
});
