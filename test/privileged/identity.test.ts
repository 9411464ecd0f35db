/**
 * Service identities, as root: the default 65535/65534, configured `uid` /
 * `gid` (global default, port block, interface entry), the ids of the
 * workers as the kernel sees them, several identities serving at the same
 * time, and `uid 0` / `gid 0` refused by the config parser.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { CLI, re, runCli, runToExit, startProxy, waitLog, waitWorkers } from '../helpers/daemon';
import { handler, uniqueSeconds, writeConfig } from '../helpers/fixtures';
import { freePort, portOf } from '../helpers/ports';
import { findProcesses, procIds, procStatus } from '../helpers/proc';
import { describeAsRoot } from '../helpers/root';
import { cleanUpAfterEach, killTokens, useHandlerFixtures, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

const tokens: string[] = [];

useHandlerFixtures();
const tmp = useTempDir('tcpproxy-identity-');
cleanUpAfterEach(() => killTokens(tokens));

/** Connects, reads until the handler closes, returns the text. */
async function readAll(portNo: number): Promise<{ text: string; clientPort: number }> {
  const c = await Client.connect('127.0.0.1', portNo);
  const clientPort = c.socket.localPort ?? 0;
  await c.waitClosed(10000);
  return { text: c.data().toString('utf8'), clientPort };
}

/** What ids.sh prints, as a record. */
function parseIds(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^(id-u|id-g|id-G|Uid:|Gid:|Groups:)\s*(.*)$/.exec(line);
    if (m !== null) out[(m[1] ?? '').replace(/:$/, '')] = (m[2] ?? '').trim().replace(/\s+/g, ' ');
  }
  return out;
}

function expectedIds(uid: number, gid: number): Record<string, string> {
  return {
    'id-u': String(uid),
    'id-g': String(gid),
    // With no supplementary groups, id -G prints the effective gid alone.
    'id-G': String(gid),
    Uid: `${uid} ${uid} ${uid} ${uid}`,
    Gid: `${gid} ${gid} ${gid} ${gid}`,
    Groups: '',
  };
}

describeAsRoot('service identities (root)', () => {
  test('without uid/gid a handler runs as 65535/65534 with no supplementary groups', async () => {
    const ids = handler('ids.sh');
    const p = await startProxy(['-b', '127.0.0.1:0', ids]);
    const { text, clientPort } = await readAll(portOf(p));
    expect(parseIds(text)).toEqual(expectedIds(65535, 65534));
    await waitLog(
      p.stderr,
      new RegExp(`^connection 1: client 127\\.0\\.0\\.1:${clientPort} on 127\\.0\\.0\\.1:${portOf(p)}: exec ${re(ids)}, uid 65535 gid 65534$`),
    );
    await waitLog(p.stderr, new RegExp(`^connection 1: end: handler ${re(ids)} pid \\d+ exit 0, \\d+ ms$`));
  });

  test('global uid/gid in the config file: the handler runs as those ids', async () => {
    const portNo = await freePort();
    const conf = writeConfig(tmp.path, 'global.conf', `uid 4242\ngid 4343\nport ${portNo}\n  interface 127.0.0.1\n  exec ${handler('ids.sh')}\n`);
    const p = await startProxy(['-s', '-f', conf]);
    expect(portOf(p)).toBe(portNo);
    const { text } = await readAll(portNo);
    expect(parseIds(text)).toEqual(expectedIds(4242, 4343));
    await waitLog(p.stderr, new RegExp(`^connection 1: client 127\\.0\\.0\\.1:\\d+ on 127\\.0\\.0\\.1:${portNo}: exec .*, uid 4242 gid 4343$`));
  });

  test('uid and gid by name: a user alone brings its primary group, a named gid replaces it', async () => {
    const [a, b] = [await freePort(), await freePort()];
    const conf = writeConfig(
      tmp.path,
      'names.conf',
      `port ${a}\n  interface 127.0.0.1\n  uid daemon\n  exec ${handler('ids.sh')}\n` +
        `port ${b}\n  interface 127.0.0.1\n  uid www-data\n  gid nogroup\n  exec ${handler('ids.sh')}\n`,
    );
    const p = await startProxy(['-s', '-f', conf], undefined, 2);
    // daemon is 1:1 and www-data 33:33, nogroup 65534, on every Debian system (base-passwd).
    expect(parseIds((await readAll(a)).text)).toEqual(expectedIds(1, 1));
    expect(parseIds((await readAll(b)).text)).toEqual(expectedIds(33, 65534));
    await waitLog(p.stderr, new RegExp(`^connection \\d+: client 127\\.0\\.0\\.1:\\d+ on 127\\.0\\.0\\.1:${b}: exec .*, uid 33 gid 65534$`));
  });

  test('a named uid whose primary group is gid 0 is a config error at its line, unless a gid is set', async () => {
    // A user database with such a user (as sync, halt and operator are on some systems), seen in a private mount namespace only.
    const passwd = path.join(tmp.path, 'passwd');
    fs.writeFileSync(passwd, `${fs.readFileSync('/etc/passwd', 'utf8')}tpgid0:x:4711:0::/nonexistent:/usr/sbin/nologin\n`, { mode: 0o644 });
    const run = (conf: string): ReturnType<typeof runToExit> =>
      runToExit(['unshare', '-m', '--propagation', 'private', '--', '/bin/sh', '-c', `mount --bind "$0" /etc/passwd && exec "$@"`, passwd, process.execPath, CLI, '-zz', '-f', conf], {
        timeoutMs: 20000,
      });
    const portNo = await freePort();
    const bad = writeConfig(tmp.path, 'gid0.conf', `port ${portNo}\n  uid tpgid0\n  server 127.0.0.1:9\n`);
    expect(await run(bad)).toEqual({
      code: 2,
      signal: null,
      stdout: '',
      stderr:
        `tcpproxy:${bad}:2: uid tpgid0: the primary group of user "tpgid0" is gid 0, which is not allowed: tcpproxy never serves requests as root; add a "gid" line with another group\n` +
        `tcpproxy:${bad}: 1 error\n`,
    });
    const good = writeConfig(tmp.path, 'gid0-fixed.conf', `gid 65534\nport ${portNo}\n  uid tpgid0\n  server 127.0.0.1:9\n`);
    const ok = await run(good);
    expect({ code: ok.code, stderr: ok.stderr }).toEqual({ code: 0, stderr: '' });
    expect(ok.stdout).toMatch(/\tuid=4711\tgid=65534\t/);
  });

  test('the worker process runs with all four uids and gids of its service, no groups, no capabilities', async () => {
    const [a, b] = [await freePort(), await freePort()];
    const conf = writeConfig(
      tmp.path,
      'workers.conf',
      `port ${a}\n  interface 127.0.0.1\n  uid 4242\n  gid 4343\n  exec ${handler('ids.sh')}\n` +
        `port ${b}\n  interface 127.0.0.1\n  exec ${handler('ids.sh')}\n`,
    );
    const p = await startProxy(['-s', '-f', conf], undefined, 2);
    const [configured] = await waitWorkers(p.stderr, 4242, 4343);
    const [fallback] = await waitWorkers(p.stderr, 65535, 65534);
    if (configured === undefined || fallback === undefined) throw new Error('no worker');
    expect(configured.pid).not.toBe(fallback.pid);
    for (const [w, uid, gid] of [
      [configured, 4242, 4343],
      [fallback, 65535, 65534],
    ] as const) {
      expect(procIds(w.pid)).toEqual({ uid: [uid, uid, uid, uid], gid: [gid, gid, gid, gid], groups: [] });
      const s = procStatus(w.pid);
      expect({
        ppid: s.get('PPid'),
        CapInh: s.get('CapInh'),
        CapPrm: s.get('CapPrm'),
        CapEff: s.get('CapEff'),
        CapAmb: s.get('CapAmb'),
      }).toEqual({
        ppid: String(p.pid),
        CapInh: '0000000000000000',
        CapPrm: '0000000000000000',
        CapEff: '0000000000000000',
        CapAmb: '0000000000000000',
      });
    }
    // The master stays root (it binds, and restarts workers with other ids).
    expect(procIds(p.pid).uid).toEqual([0, 0, 0, 0]);
  });

  test('three identities (port block, global default, interface entry) serve at the same time', async () => {
    const [a, b, c] = [await freePort(), await freePort(), await freePort()];
    const token = uniqueSeconds();
    tokens.push(token);
    const wait = handler('ids-wait.sh');
    const conf = writeConfig(
      tmp.path,
      'three.conf',
      [
        'uid 5252',
        'gid 5353',
        `port ${a}`,
        '  uid 4242',
        '  gid 4343',
        `  exec ${wait} A ${token}`,
        `port ${b}`,
        `  exec ${wait} B ${token}`,
        `port ${c}`,
        '  interface 127.0.0.1',
        '    uid 6262',
        `    exec ${wait} C ${token}`,
        '',
      ].join('\n'),
    );
    const p = await startProxy(['-s', '-f', conf], undefined, 3);
    const expected: Record<string, string> = {
      A: 'service A uid 4242 gid 4343 groups []\n',
      B: 'service B uid 5252 gid 5353 groups []\n',
      // uid from the interface entry, gid from the global default.
      C: 'service C uid 6262 gid 5353 groups []\n',
    };
    const clients: Record<string, Client> = {};
    for (const [label, portNo] of [
      ['A', a],
      ['B', b],
      ['C', c],
    ] as const) {
      const cl = await Client.connect('127.0.0.1', portNo);
      clients[label] = cl;
      const want = expected[label] ?? '';
      await cl.waitBytes(Buffer.byteLength(want));
      expect(cl.data().toString()).toBe(want);
    }
    // All three handlers are alive at once, each with its service's ids.
    const running = findProcesses(token).map((pid) => ({ pid, uid: procIds(pid).uid[0] })).sort((x, y) => (x.uid ?? 0) - (y.uid ?? 0));
    expect(running.map((r) => r.uid)).toEqual([4242, 5252, 6262]);
    for (const cl of Object.values(clients)) expect(cl.closed).toBe(false);
    // Three workers, one per identity.
    await waitWorkers(p.stderr, 4242, 4343);
    await waitWorkers(p.stderr, 5252, 5353);
    await waitWorkers(p.stderr, 6262, 5353);
    for (const [label, cl] of Object.entries(clients)) {
      const before = cl.received;
      cl.socket.write(`go-${label}\n`);
      const want = `bye ${label} go-${label}\n`;
      await cl.waitBytes(before + want.length);
      await cl.waitClosed();
      expect(cl.data().subarray(before).toString()).toBe(want);
    }
    await until(() => findProcesses(token).length === 0, 'the three handlers to exit', 5000);
  });

  test('"uid 0" and "gid 0" are configuration errors: exit 2, nothing served', async () => {
    const portNo = await freePort();
    const conf = writeConfig(tmp.path, 'root.conf', `uid 0\nport ${portNo}\n  gid 0\n  exec ${handler('ids.sh')}\n`);
    const r = await runCli(['-D', '-s', '-f', conf]);
    expect(r.timedOut).toBe(false);
    expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({
      code: 2,
      stdout: '',
      stderr:
        `tcpproxy:${conf}:1: uid 0 is not allowed: tcpproxy never serves requests as root\n` +
        `tcpproxy:${conf}:3: gid 0 is not allowed: tcpproxy never serves requests as root\n` +
        `tcpproxy:${conf}: 2 errors\n`,
    });
  });

  test('"uid 0" alone, inside an interface entry: the exact message, exit 2', async () => {
    const portNo = await freePort();
    const conf = writeConfig(tmp.path, 'root2.conf', `port ${portNo}\n  interface 127.0.0.1\n    uid 0\n    exec ${handler('ids.sh')}\n`);
    const r = await runCli(['-z', '-f', conf]);
    expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({
      code: 2,
      stdout: '',
      stderr: `tcpproxy:${conf}:3: uid 0 is not allowed: tcpproxy never serves requests as root\ntcpproxy:${conf}: 1 error\n`,
    });
  });
});
