/**
 * Logging to syslog, for real, as root: the test owns the datagram socket
 * at /dev/log (see SyslogSink in test/helpers/syslog.ts: it binds /dev/log
 * itself when there is none, else tcpproxy runs in a private mount namespace
 * with the test's socket bind-mounted over /dev/log). Checked: the ident
 * (-l, `logname`, default), facility daemon, the severity of each kind of
 * line, LOG_PID with the pid of the process that wrote the line (master or
 * worker), and that syslog gets the same lines as stderr.
 */
import * as fs from 'node:fs';
import { Client } from '../helpers/client';
import { type Daemon, killLaunched, logLines, re, startDaemon, waitLog, waitWorkers } from '../helpers/daemon';
import { handler, writeConfig } from '../helpers/fixtures';
import { freePort, portOf } from '../helpers/ports';
import { describeAsRoot } from '../helpers/root';
import { echoServer, startServer } from '../helpers/servers';
import { DEV_LOG, type SyslogRecord, SyslogSink } from '../helpers/syslog';
import { cleanUpAfterEach, useHandlerFixtures, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

/** facility daemon (3) << 3, plus the severity. */
const INFO = 24 + 6;
const WARNING = 24 + 4;
const ERR = 24 + 3;

let sink: SyslogSink | null = null;

useHandlerFixtures();
const tmp = useTempDir('tcpproxy-syslog-');
beforeAll(async () => {
  // Waits while a concurrent run of these tests owns /dev/log (see SyslogSink.open).
  sink = await SyslogSink.open('auto', 120000);
}, 150000);
cleanUpAfterEach(killLaunched);
afterAll(async () => {
  await sink?.close();
});

function theSink(): SyslogSink {
  if (sink === null) throw new Error('no syslog sink');
  return sink;
}

function testEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  return env;
}

/** Starts tcpproxy so that its syslog reaches `s` (directly, or through the bind mount). */
function launch(args: readonly string[], s: SyslogSink = theSink(), listeners = 1): Promise<Daemon> {
  return startDaemon({ args, env: testEnv(), listeners, ...(s.mode === 'bind-mount' ? { syslog: s } : {}) });
}

/** What a record should look like: priority, ident, pid, message. */
function shape(r: SyslogRecord): { priority: number; ident: string; pid: number | null; message: string } {
  return { priority: r.priority, ident: r.ident, pid: r.pid, message: r.message };
}

/** The first record of `pid` whose message matches; a failure shows what that process wrote on stderr. */
async function record(s: SyslogSink, pid: number, message: RegExp, what: string, d?: Daemon): Promise<SyslogRecord> {
  try {
    return await s.waitFor((r) => r.pid === pid && message.test(r.message), what);
  } catch (e) {
    const mine = s.records().filter((r) => r.pid === pid).map((r) => r.raw);
    throw new Error(`${(e as Error).message}\nrecords of pid ${pid}:\n${mine.join('\n')}${d ? `\nstderr of tcpproxy:\n${d.stderr()}` : ''}`);
  }
}

describeAsRoot(`syslog (root; via ${fs.existsSync(DEV_LOG) ? 'a bind mount over the existing /dev/log' : 'a socket the test binds at /dev/log'})`, () => {
  test('-l myident: master and worker lines, facility daemon, severity info, each with its own pid; the same lines as on stderr', async () => {
    const s = theSink();
    const hello = handler('hello.sh');
    const d = await launch(['-l', 'myident', '-b', '127.0.0.1:0', hello]);
    const port = portOf(d);
    const [worker] = await waitWorkers(d.stderr, 65535, 65534);
    if (worker === undefined) throw new Error('no worker');
    const c = await Client.connect('127.0.0.1', port);
    const clientPort = c.socket.localPort;
    await c.waitClosed();
    expect(c.data().toString()).toBe('hello from 127.0.0.1\n');

    const listening = await record(s, d.pid, /^listening on /, 'listening line from the master');
    expect(shape(listening)).toEqual({ priority: INFO, ident: 'myident', pid: d.pid, message: `listening on 127.0.0.1:${port}` });
    const ready = await record(s, d.pid, /^worker uid /, 'ready line from the master');
    expect(shape(ready)).toEqual({ priority: INFO, ident: 'myident', pid: d.pid, message: `worker uid 65535 gid 65534 ready, pid ${worker.pid}` });

    const accepted = await record(s, worker.pid, /^connection 1: client /, 'connection line from the worker');
    expect(accepted.raw).toMatch(
      new RegExp(
        `^<30>[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} myident\\[${worker.pid}\\]: ` +
          `connection 1: client 127\\.0\\.0\\.1:${clientPort} on 127\\.0\\.0\\.1:${port}: exec ${re(hello)}, uid 65535 gid 65534$`,
      ),
    );
    const note = await record(s, worker.pid, /^connection 1: \/.*: handler note/, 'handler stderr line from the worker');
    expect(shape(note)).toEqual({
      priority: INFO,
      ident: 'myident',
      pid: worker.pid,
      message: `connection 1: ${hello}: handler note: client 127.0.0.1 port ${port}`,
    });
    const end = await record(s, worker.pid, /^connection 1: end: /, 'end line from the worker');
    expect(shape(end)).toEqual({ priority: INFO, ident: 'myident', pid: worker.pid, message: expect.stringMatching(new RegExp(`^connection 1: end: handler ${re(hello)} pid \\d+ exit 0, \\d+ ms$`)) as unknown });

    // Syslog got exactly the lines stderr got (as a multiset: two processes write them).
    await waitLog(d.stderr, /^connection 1: end: /);
    const fromSyslog = s.records().filter((r) => r.ident === 'myident' && (r.pid === d.pid || r.pid === worker.pid));
    expect(fromSyslog.map((r) => r.message).sort()).toEqual(logLines(d.stderr()).sort());
    expect(fromSyslog.every((r) => r.facility === 3)).toBe(true);
  });

  test('stderr lines start with the ISO 8601 time; a config error on SIGHUP carries "tcpproxy" once, in syslog and on stderr', async () => {
    const s = theSink();
    const port = await freePort();
    const conf = writeConfig(tmp.path, 'reload.conf', `port ${port}\n  interface 127.0.0.1\n  server 127.0.0.1:9\n`);
    const before = Date.now();
    const d = await launch(['-f', conf]);
    const stamped = d.stderr().split('\n').filter((l) => l !== '');
    expect(stamped.length).toBeGreaterThan(0);
    for (const l of stamped) {
      const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) tcpproxy: \S/.exec(l);
      expect({ line: l, stamped: m !== null }).toEqual({ line: l, stamped: true });
      const t = Date.parse(m?.[1] ?? '');
      expect(t).toBeGreaterThanOrEqual(before - 1000);
      expect(t).toBeLessThanOrEqual(Date.now() + 1000);
    }
    fs.writeFileSync(conf, `port ${port}\n  interface 127.0.0.1\n  sever 127.0.0.1:9\n`);
    process.kill(d.pid, 'SIGHUP');
    const err = await record(s, d.pid, /configuration has errors/, 'the reload failure', d);
    expect(err.priority).toBe(ERR);
    const line = await record(s, d.pid, /unknown directive/, 'the config error in syslog', d);
    expect(shape(line)).toEqual({ priority: ERR, ident: 'tcpproxy', pid: d.pid, message: `${conf}:3: unknown directive "sever" (did you mean "server"?)` });
    await waitLog(d.stderr, /^SIGHUP: configuration has errors: keeping the running one$/);
    expect(d.stderr()).toMatch(new RegExp(`^\\S+Z tcpproxy:${re(conf)}:3: unknown directive "sever" \\(did you mean "server"\\?\\)$`, 'm'));
    expect(d.stderr()).not.toMatch(/tcpproxy: tcpproxy:/);
  });

  test('warnings (denied ACP) and errors (refused upstream, killed worker) have severities warning and err; ident from "logname"', async () => {
    const s = theSink();
    const up = await startServer((sock) => sock.destroy());
    const [refusing, denying, closed] = [await freePort(), await freePort(), await freePort()];
    const conf = writeConfig(
      tmp.path,
      'levels.conf',
      `logname cfgident\n` +
        `port ${refusing}\n  interface 127.0.0.1\n  server 127.0.0.1:${closed}\n` +
        `port ${denying}\n  interface 127.0.0.1\n  acp ${handler('acp-deny.sh')}\n  server 127.0.0.1:${up.port}\n`,
    );
    const d = await launch(['-s', '-f', conf], s, 2);
    const [worker] = await waitWorkers(d.stderr, 65535, 65534);
    if (worker === undefined) throw new Error('no worker');

    const c1 = await Client.connect('127.0.0.1', refusing);
    await c1.waitClosed();
    const refused = await record(s, worker.pid, /^connection 1: server /, 'refused upstream line');
    expect(shape(refused)).toEqual({
      priority: ERR,
      ident: 'cfgident',
      pid: worker.pid,
      message: `connection 1: server 127.0.0.1:${closed}: connect ECONNREFUSED 127.0.0.1:${closed}`,
    });

    const c2 = await Client.connect('127.0.0.1', denying);
    await c2.waitClosed();
    // Connection numbers are unique, not consecutive (the fast path and the session code draw from ranges of their own).
    const denied = await record(s, worker.pid, /^connection (?!1:)\d+: acp /, 'denied ACP line');
    const deniedId = /^connection (\d+):/.exec(denied.message)?.[1] ?? '?';
    expect(shape(denied)).toEqual({
      priority: WARNING,
      ident: 'cfgident',
      pid: worker.pid,
      message: `connection ${deniedId}: acp ${handler('acp-deny.sh')}: denied (exit 1): policy: 127.0.0.1 is not welcome`,
    });
    expect(up.sockets).toHaveLength(0);

    process.kill(worker.pid, 'SIGKILL');
    const died = await record(s, d.pid, /^worker uid 65535 gid 65534 \(pid /, 'worker death line from the master');
    expect(shape(died)).toEqual({
      priority: ERR,
      ident: 'cfgident',
      pid: d.pid,
      message: `worker uid 65535 gid 65534 (pid ${worker.pid}) ended with signal SIGKILL; restarting in 100 ms`,
    });
    // The new worker logs too.
    const again = (await waitWorkers(d.stderr, 65535, 65534, 2))[1];
    if (again === undefined) throw new Error('no restarted worker');
    await record(s, d.pid, new RegExp(`^worker uid 65535 gid 65534 ready, pid ${again.pid}$`), 'ready line of the new worker');
    const c3 = await Client.connect('127.0.0.1', refusing);
    await c3.waitClosed();
    // Connection numbers are unique, not consecutive: the restarted worker has a block of its own.
    const refusedAgain = await record(s, again.pid, /^connection (?!1:|2:)\d+: server /, 'a line from the restarted worker');
    expect(refusedAgain.priority).toBe(ERR);
  });

  test('-l wins over "logname"; with neither the ident is "tcpproxy"', async () => {
    const s = theSink();
    const up = await echoServer();
    const portNo = await freePort();
    const conf = writeConfig(tmp.path, 'ident.conf', `logname cfgident\nport ${portNo}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`);
    const withL = await launch(['-l', 'cliident', '-s', '-f', conf]);
    const l1 = await record(s, withL.pid, /^listening on /, 'listening line with -l');
    expect(l1.ident).toBe('cliident');
    await withL.stop();

    const portNo2 = await freePort();
    const plain = await launch(['-b', `127.0.0.1:${portNo2}`, `127.0.0.1:${up.port}`]);
    const l2 = await record(s, plain.pid, /^listening on /, 'listening line without -l');
    expect(shape(l2)).toEqual({ priority: INFO, ident: 'tcpproxy', pid: plain.pid, message: `listening on 127.0.0.1:${portNo2}` });
    // Stopping is logged too, by the master (the wording is not this test's business).
    // (Once it serves: a SIGTERM just after "listening on" is the next test's subject.)
    await waitWorkers(plain.stderr, 65535, 65534);
    await plain.stop();
    const stop = await record(s, plain.pid, /^SIGTERM\b/, 'the SIGTERM line', plain);
    expect({ priority: stop.priority, ident: stop.ident, pid: stop.pid }).toEqual({ priority: INFO, ident: 'tcpproxy', pid: plain.pid });
  });

  test('a SIGTERM as soon as "listening on" is printed is handled: logged, clean exit 0', async () => {
    const s = theSink();
    const up = await echoServer();
    let signalled = false;
    // SIGTERM from the stderr callback itself, the moment the first "listening on" line arrives.
    const d = await startDaemon({
      args: ['-l', 'earlyterm', '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`],
      env: testEnv(),
      ...(s.mode === 'bind-mount' ? { syslog: s } : {}),
      onStderr: (_chunk, text, child) => {
        if (!signalled && /^\S+Z tcpproxy: listening on /m.test(text)) {
          signalled = true;
          child.kill('SIGTERM');
        }
      },
    });
    // No second SIGTERM: just wait (the drain of an idle daemon is quick).
    const exit = await d.wait(15000);
    expect({ exit, signalled }).toEqual({ exit: { code: 0, signal: null }, signalled: true });
    expect(logLines(d.stderr()).filter((l) => l.startsWith('SIGTERM'))).toHaveLength(1);
    const line = await record(s, d.pid, /^SIGTERM\b/, 'the SIGTERM line', d);
    expect({ priority: line.priority, ident: line.ident }).toEqual({ priority: INFO, ident: 'earlyterm' });
  });

  test('bind-mount branch: in a private mount namespace with another socket over /dev/log, tcpproxy logs there; /dev/log outside is untouched', async () => {
    const outer = theSink();
    // Now /dev/log exists (ours, or the system's), so this is the branch used when it does.
    expect(fs.existsSync(DEV_LOG)).toBe(true);
    const before = fs.statSync(DEV_LOG);
    const inner = await SyslogSink.open('bind-mount');
    try {
      const hello = handler('hello.sh');
      const d = await startDaemon({ args: ['-l', 'nsident', '-b', '127.0.0.1:0', hello], env: testEnv(), syslog: inner });
      const [worker] = await waitWorkers(d.stderr, 65535, 65534);
      if (worker === undefined) throw new Error('no worker');
      const c = await Client.connect('127.0.0.1', portOf(d));
      await c.waitClosed();
      expect(shape(await record(inner, d.pid, /^listening on /, 'listening line through the bind mount'))).toEqual({
        priority: INFO,
        ident: 'nsident',
        pid: d.pid,
        message: `listening on 127.0.0.1:${portOf(d)}`,
      });
      const end = await record(inner, worker.pid, /^connection 1: end: /, 'worker line through the bind mount');
      expect(end.ident).toBe('nsident');
      // Nothing of this daemon went to the socket outside the namespace.
      await until(() => /^\S+Z tcpproxy: connection 1: end: /m.test(d.stderr()), 'the end line on stderr', 5000);
      expect(outer.records().filter((r) => r.pid === d.pid || r.pid === worker.pid)).toEqual([]);
      const after = fs.statSync(DEV_LOG);
      expect({ ino: after.ino, dev: after.dev }).toEqual({ ino: before.ino, dev: before.dev });
    } finally {
      await inner.close();
    }
  });

  test('a stalled syslog daemon stops nothing: 800 connections are served while it reads nothing, the lines it missed are counted and reported', async () => {
    const s = theSink();
    const up = await echoServer();
    const d = await launch(['-D', '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`]);
    const port = portOf(d);
    await waitWorkers(d.stderr, 65535, 65534);
    s.pause();
    try {
      // Two lines a connection: far more than a unix datagram queue holds (net.unix.max_dgram_qlen).
      for (let i = 0; i < 800; i++) {
        const c = await Client.connect('127.0.0.1', port);
        c.socket.end('x');
        await c.waitClosed(5000);
        expect(c.data().toString()).toBe('x');
      }
    } finally {
      s.resume();
    }
    const c = await Client.connect('127.0.0.1', port);
    c.socket.end('after');
    await c.waitClosed(5000);
    const note = await s.waitFor((r) => /^\d+ log line\(s\) dropped: syslog did not take them$/.test(r.message), 'the dropped-lines note', 10000);
    expect(Number(/^(\d+)/.exec(note.message)?.[1])).toBeGreaterThan(0);
    expect(note.priority).toBe(WARNING);
  }, 120000);
});
