/**
 * The sandbox of handlers and ACPs, as root, written as the attacks it
 * stops: a setuid-root copy of id(1) run by a handler keeps the service's
 * euid (no-new-privs, the default; `no-new-privs no` gives euid 0, which
 * shows the copy really is setuid root); a handler started by a daemon that
 * has a controlling terminal has none (it could push input into a root
 * shell with TIOCSTI otherwise) and leads a session of its own; the rlimit-*
 * directives are the handler's and the ACP's limits. The same in inetd mode,
 * where tcpproxy becomes the handler.
 *
 * The handlers are the programs themselves (`/bin/cat /proc/self/stat`, not a
 * script): what they print is the state of the handler process.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { assertBuilt, killLaunched, startDaemon, terminalWrapper, type Daemon } from '../helpers/daemon';
import { serveOneConnection, waitEnd } from '../helpers/inetd';
import { freePorts } from '../helpers/ports';
import { mountOptions, parseLimits, parseStat, readStat } from '../helpers/proc';
import { describeAsRoot } from '../helpers/root';
import { senderServer } from '../helpers/servers';
import { cleanUpAfterEach, useHandlerFixtures, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

const tmp = useTempDir('tcpproxy-sandbox-', 0o755);
useHandlerFixtures();
cleanUpAfterEach(killLaunched);

/**
 * The setuid copy needs a file system that honours setuid bits: the first of
 * the temporary directory and /var/tmp that is not mounted nosuid. Where both
 * are, the setuid tests are skipped, except under CI=true, where they run
 * and fail (the control test, `no-new-privs no` gives euid 0, cannot pass).
 */
const SUID_BASE = [os.tmpdir(), '/var/tmp'].find((d) => fs.existsSync(d) && !mountOptions(d).includes('nosuid')) ?? null;
const NOSUID = SUID_BASE === null;
if (NOSUID && process.env['CI'] !== 'true') {
  // eslint-disable-next-line no-console
  console.warn(`SKIPPED the setuid tests of test/privileged/sandbox.test.ts: ${os.tmpdir()} and /var/tmp are mounted nosuid`);
}
const suidTest = NOSUID && process.env['CI'] !== 'true' ? test.skip : test;
let suidDir: string | null = null;
afterAll(() => {
  if (suidDir !== null) fs.rmSync(suidDir, { recursive: true, force: true });
});

/** A root-owned, setuid copy of id(1) where setuid bits count (mode 0755 directory: the service ids reach it). */
function setuidId(): string {
  if (suidDir === null) {
    suidDir = fs.mkdtempSync(path.join(SUID_BASE ?? tmp.path, 'tcpproxy-suid-'));
    fs.chmodSync(suidDir, 0o755);
  }
  const file = path.join(suidDir, 'id');
  if (!fs.existsSync(file)) {
    fs.copyFileSync('/usr/bin/id', file);
    fs.chownSync(file, 0, 0);
    fs.chmodSync(file, 0o4755);
  }
  return file;
}

/** Connects to `port`, returns all the handler printed once it closed. */
async function served(port: number): Promise<string> {
  const c = await Client.connect('127.0.0.1', port);
  await c.waitClosed(10000);
  return c.data().toString('utf8');
}

/** Exactly the limits the rlimit-* lines below give: soft and hard alike. */
function expectLimits(text: string, want: { nproc: string; as: string; cpu: string; nofile: string }): void {
  const l = parseLimits(text);
  expect({
    nproc: l.get('Max processes'),
    as: l.get('Max address space'),
    cpu: l.get('Max cpu time'),
    nofile: l.get('Max open files'),
  }).toEqual({
    nproc: { soft: want.nproc, hard: want.nproc },
    as: { soft: want.as, hard: want.as },
    cpu: { soft: want.cpu, hard: want.cpu },
    nofile: { soft: want.nofile, hard: want.nofile },
  });
}

const LIMIT_LINES = ['  rlimit-nproc 50', '  rlimit-as 1G', '  rlimit-cpu 7', '  rlimit-nofile 64'];

describeAsRoot('sandboxed handlers and ACPs (root, standalone)', () => {
  let daemon: Daemon;
  let ports: number[] = [];
  let marker = '';

  beforeEach(async () => {
    assertBuilt();
    ports = await freePorts(5);
    marker = `upstream-after-the-acp-${Date.now()}`;
    const up = await senderServer(Buffer.from(marker));
    const [suid, suidOpen, stat, limits, acp] = ports;
    const conf = tmp.config([
      `port ${suid}`,
      '  interface 127.0.0.1',
      `  exec ${setuidId()} -u`,
      `port ${suidOpen}`,
      '  interface 127.0.0.1',
      '  no-new-privs no',
      `  exec ${setuidId()} -u`,
      `port ${stat}`,
      '  interface 127.0.0.1',
      '  exec /bin/cat /proc/self/stat',
      `port ${limits}`,
      '  interface 127.0.0.1',
      ...LIMIT_LINES,
      '  exec /bin/cat /proc/self/limits',
      `port ${acp}`,
      '  interface 127.0.0.1',
      ...LIMIT_LINES,
      '  acp /bin/cat /proc/self/limits',
      `  server 127.0.0.1:${up.port}`,
    ]);
    // tcpproxy -D on a terminal of its own: the handlers' session must not be that one.
    daemon = await startDaemon({ args: ['-s', '-f', conf], wrapper: terminalWrapper('exec'), listeners: 5 });
  });

  suidTest('a setuid-root program run as the handler keeps the service\'s euid (no-new-privs is the default)', async () => {
    expect(await served(ports[0] ?? 0)).toBe('65535\n');
  });

  suidTest('the control: with "no-new-privs no" the same program runs with euid 0', async () => {
    expect(await served(ports[1] ?? 0)).toBe('0\n');
  });

  test('a daemon on a terminal: its handler has no controlling terminal and leads a session and process group of its own', async () => {
    // The daemon (and so its worker) does have the terminal: without setsid the handler would share it.
    expect(readStat(daemon.pid)?.ttyNr).not.toBe(0);
    const st = parseStat(await served(ports[2] ?? 0));
    expect({ tty: st.ttyNr, session: st.session, pgrp: st.pgrp }).toEqual({ tty: 0, session: st.pid, pgrp: st.pid });
    expect(st.session).not.toBe(readStat(daemon.pid)?.session);
  });

  test('rlimit-nproc, rlimit-as, rlimit-cpu and rlimit-nofile are the handler\'s soft and hard limits', async () => {
    expectLimits(await served(ports[3] ?? 0), { nproc: '50', as: String(1024 ** 3), cpu: '7', nofile: '64' });
  });

  test('an ACP gets the same limits (and its stdout reaches the client before the upstream\'s bytes)', async () => {
    const out = await served(ports[4] ?? 0);
    expect(out.endsWith(marker)).toBe(true);
    expectLimits(out.slice(0, -marker.length), { nproc: '50', as: String(1024 ** 3), cpu: '7', nofile: '64' });
  });
});

describeAsRoot('sandboxed handlers (root, inetd mode)', () => {
  /** tcpproxy in inetd mode for one connection on `port` with `conf`: what the handler printed. */
  async function inetdOutput(lines: readonly string[], wrapper: readonly string[] = []): Promise<{ out: string; pid: number }> {
    const [port = 0] = await freePorts(1);
    const conf = tmp.config([`port ${port}`, ...lines]);
    const s = await serveOneConnection(['-f', conf], { port, wrapper });
    await waitEnd(s.client);
    await until(() => s.proxy.exit() !== null, 'tcpproxy to exit');
    return { out: s.client.data().toString('utf8'), pid: s.proxy.pid };
  }

  suidTest('a setuid-root handler keeps the service\'s euid; with "no-new-privs no" it gets euid 0', async () => {
    expect((await inetdOutput([`  exec ${setuidId()} -u`])).out).toBe('65535\n');
    expect((await inetdOutput(['  no-new-privs no', `  exec ${setuidId()} -u`])).out).toBe('0\n');
  });

  test('started in a session with a terminal (not leading it): the handler has no controlling terminal and leads its own session', async () => {
    // The wrapper leads the session and holds the terminal; tcpproxy is its child, in its process group.
    const { out, pid: wrapper } = await inetdOutput(['  exec /bin/cat /proc/self/stat'], terminalWrapper('fork'));
    const st = parseStat(out);
    expect(st.ppid).toBe(wrapper);
    expect({ tty: st.ttyNr, session: st.session, pgrp: st.pgrp }).toEqual({ tty: 0, session: st.pid, pgrp: st.pid });
  });

  test('the rlimits are the handler\'s; rlimit-cpu counts from the exec (the time tcpproxy used is added)', async () => {
    const { out } = await inetdOutput([...LIMIT_LINES, '  exec /bin/cat /proc/self/limits']);
    const cpu = parseLimits(out).get('Max cpu time');
    expect(cpu?.soft).toBe(cpu?.hard);
    // 7 plus tcpproxy's own CPU seconds, rounded up: at least one, a few at most.
    expect(Number(cpu?.soft)).toBeGreaterThanOrEqual(8);
    expect(Number(cpu?.soft)).toBeLessThanOrEqual(12);
    expectLimits(out, { nproc: '50', as: String(1024 ** 3), cpu: cpu?.soft ?? '', nofile: '64' });
  });
});
