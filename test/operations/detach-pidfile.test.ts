/**
 * Detaching and the pidfile. Without -D the command starts the daemon and
 * returns only once every port is bound (or with the daemon's start error);
 * the daemon is a session leader with no terminal, fds 0-2 on /dev/null and
 * the start directory as its cwd. `-p` writes the master's pid after the
 * ports are bound and removes it at exit; a stale file is replaced, a live
 * one refuses the start. Detached daemons are found through their pidfile
 * and always stopped (SIGTERM, then SIGKILL of what is left).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { assertBuilt, CLI, DEV_LOG, launch, logLines, type Ran, ROOT, runToExit, startProxy, tcpproxyArgv } from '../helpers/daemon';
import { writeConfig } from '../helpers/fixtures';
import { killTree } from '../helpers/kill';
import { freePort, tryConnect } from '../helpers/ports';
import { alive, cmdline, descendants, readStat, tcpproxyProcessesIn } from '../helpers/proc';
import { describeAsRoot, IN_CI, IS_ROOT } from '../helpers/root';
import { echoServer, payload, sha256 } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { SyslogSink, takeSyslogLock } from '../helpers/syslog';
import { until } from '../helpers/until';

const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'operations');
const DEFAULT_PIDFILE = '/var/run/tcpproxy.pid';

beforeAll(assertBuilt);
// Handlers run as uid 65535: the directory must be searchable by others.
const tmp = useTempDir('tcpproxy-ops-detach-', 0o755);

/** Pids of detached daemons started here (from their pidfiles), for the cleanup. */
const daemons = new Set<number>();
const holders: net.Server[] = [];

cleanUpAfterEach(() => {
  for (const pid of daemons) if (alive(pid)) killTree(pid);
  daemons.clear();
  for (const h of holders.splice(0)) h.close();
});

/** Runs `tcpproxy ...args` in `cwd` to its exit (bounded); stdin is /dev/null. */
function run(args: readonly string[], cwd: string, timeoutMs = 15000): Promise<Ran> {
  return runToExit([process.execPath, CLI, ...args], { cwd, timeoutMs });
}

/** The pid a pidfile names; it must hold exactly `PID\n`. */
function pidIn(file: string): number {
  const text = fs.readFileSync(file, 'utf8');
  expect(text).toMatch(/^[1-9][0-9]*\n$/);
  return Number(text.trim());
}

/** Reads the daemon's pid from its pidfile and registers it for the cleanup. */
function daemonOf(pidfile: string): number {
  const pid = pidIn(pidfile);
  daemons.add(pid);
  return pid;
}

/** `kill -TERM $(cat pidfile)`, then waits until it and its workers are gone and the pidfile is removed. */
async function stopDaemon(pidfile: string): Promise<void> {
  const pid = pidIn(pidfile);
  const workers = descendants(pid);
  process.kill(pid, 'SIGTERM');
  await until(() => !alive(pid), `daemon ${pid} to exit after SIGTERM`, 10000);
  await until(() => !fs.existsSync(pidfile), `${pidfile} to be removed`, 2000);
  await until(() => workers.every((w) => !alive(w)), `workers ${workers.join(' ')} to exit`, 5000);
  daemons.delete(pid);
}

/** A listening socket on 127.0.0.1 holding a port, closed after the test. */
function holdPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      holders.push(s);
      resolve((s.address() as net.AddressInfo).port);
    });
  });
}

/** Round trip through an echo upstream. */
async function echoes(port: number, seed: string): Promise<void> {
  const c = await Client.connect('127.0.0.1', port);
  const data = payload(64 * 1024, seed);
  c.socket.end(data);
  await c.waitClosed(10000);
  expect({ bytes: c.received, sha256: sha256(c.data()), end: c.describeEnd() }).toEqual({
    bytes: data.length,
    sha256: sha256(data),
    end: ' (clean end)',
  });
}

/** A fresh directory under tmp, searchable by others, with the handler fixture copied in. */
function workdir(name: string): string {
  const dir = path.join(tmp.path, name);
  fs.mkdirSync(dir, { mode: 0o755 });
  fs.chmodSync(dir, 0o755);
  fs.copyFileSync(path.join(FIXTURES, 'handler.sh'), path.join(dir, 'handler.sh'));
  fs.chmodSync(path.join(dir, 'handler.sh'), 0o755);
  return fs.realpathSync(dir);
}

describe('detaching (standalone without -D)', () => {
  test('the command returns once every port is bound; the daemon is a session leader without a terminal, on /dev/null, in the start directory', async () => {
    const up = await echoServer();
    const dir = workdir('detach');
    const [hp, fp] = [await freePort(), await freePort()];
    writeConfig(
      dir,
      'tcpproxy.conf',
      `port ${hp}\n  interface 127.0.0.1\n  exec ./handler.sh\nport ${fp}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`,
    );
    const pidfile = path.join(dir, 'tcpproxy.pid');

    const r = await run(['-f', 'tcpproxy.conf', '-pp', pidfile], dir);
    expect(r).toEqual({ code: 0, signal: null, stdout: '', stderr: '' });
    const pid = daemonOf(pidfile);

    // Bound before the command returned: the first connect works, no waiting.
    const [h, f] = await Promise.all([Client.connect('127.0.0.1', hp), Client.connect('127.0.0.1', fp)]);
    f.destroy();
    await h.waitClosed(10000);
    // As root the handler runs as the default service ids; otherwise as the invoking user.
    const [uid, gid] = IS_ROOT ? [65535, 65534] : [process.getuid?.(), process.getgid?.()];
    expect(h.data().toString('utf8')).toBe(`id-u ${uid}\nid-g ${gid}\ncwd ${dir}\nready-fd unset\n`);
    await echoes(fp, 'detach');

    expect(pid).not.toBe(process.pid);
    const st = readStat(pid);
    if (st === null) throw new Error(`pid ${pid} is gone`);
    expect({ session: st.session, pgrp: st.pgrp, ttyNr: st.ttyNr }).toEqual({ session: pid, pgrp: pid, ttyNr: 0 });
    expect([0, 1, 2].map((fd) => fs.readlinkSync(`/proc/${pid}/fd/${fd}`))).toEqual(['/dev/null', '/dev/null', '/dev/null']);
    expect(fs.readlinkSync(`/proc/${pid}/cwd`)).toBe(dir);

    await stopDaemon(pidfile);
    expect(await tryConnect(hp)).toBe('ECONNREFUSED');
    expect(await tryConnect(fp)).toBe('ECONNREFUSED');
  });

  test('a port in use while detaching: exit 1 with the bind error; nothing left listening or running, no pidfile', async () => {
    const dir = workdir('busy');
    const busy = await holdPort();
    const free = await freePort();
    writeConfig(dir, 'busy.conf', `port ${free}\n  interface 127.0.0.1\n  server 127.0.0.1:1\nport ${busy}\n  interface 127.0.0.1\n  server 127.0.0.1:1\n`);
    const pidfile = path.join(dir, 'busy.pid');

    const r = await run(['-f', 'busy.conf', '-pp', pidfile], dir);
    expect(r).toEqual({
      code: 1,
      signal: null,
      stdout: '',
      stderr: `tcpproxy: cannot listen on 127.0.0.1:${busy}: EADDRINUSE (address already in use)\n`,
    });
    expect(fs.existsSync(pidfile)).toBe(false);
    expect(await tryConnect(free)).toBe('ECONNREFUSED');
    await until(() => tcpproxyProcessesIn(fs.realpathSync(dir), pidfile).length === 0, 'the failed daemon to exit', 5000);

    // The same from the command line.
    const r2 = await run(['-pp', pidfile, '-b', `127.0.0.1:${busy}`, '127.0.0.1:1'], dir);
    expect(r2).toEqual({
      code: 1,
      signal: null,
      stdout: '',
      stderr: `tcpproxy: cannot listen on 127.0.0.1:${busy}: EADDRINUSE (address already in use)\n`,
    });
    expect(fs.existsSync(pidfile)).toBe(false);
    await until(() => tcpproxyProcessesIn(fs.realpathSync(dir), pidfile).length === 0, 'the failed daemon to exit', 5000);
  });
});

describe('pidfile', () => {
  (IS_ROOT || IN_CI ? test : test.skip)('-p alone writes /var/run/tcpproxy.pid, removed at exit', async () => {
    const up = await echoServer();
    let before: string | null = null;
    try {
      before = fs.readFileSync(DEFAULT_PIDFILE, 'utf8');
    } catch {
      // absent: the usual case
    }
    const beforePid = before === null ? NaN : Number.parseInt(before.trim(), 10);
    if (before !== null && Number.isInteger(beforePid) && beforePid > 0 && alive(beforePid) && cmdline(beforePid).includes('tcpproxy')) {
      // Another tcpproxy (or anything) holds it: then -p must refuse to start.
      const r = await run(['-p', '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], tmp.path);
      expect(r).toMatchObject({ code: 1, stderr: `tcpproxy: pidfile ${DEFAULT_PIDFILE}: tcpproxy is already running as pid ${beforePid}\n` });
      expect(fs.readFileSync(DEFAULT_PIDFILE, 'utf8')).toBe(before);
      return;
    }
    try {
      const p = await startProxy(['-p', '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`]);
      await until(() => fs.existsSync(DEFAULT_PIDFILE) && fs.readFileSync(DEFAULT_PIDFILE, 'utf8') === `${p.pid}\n`, `${DEFAULT_PIDFILE} to name ${p.pid}`, 5000);
      await echoes(p.addresses[0]?.port ?? 0, 'default-pidfile');
      expect(await p.stop()).toMatchObject({ code: 0, signal: null });
      expect(fs.existsSync(DEFAULT_PIDFILE)).toBe(false);
    } finally {
      // A stale file that was there before is put back as it was.
      if (before !== null && !fs.existsSync(DEFAULT_PIDFILE)) fs.writeFileSync(DEFAULT_PIDFILE, before);
    }
  });

  test.each([
    ['-p -p NAME', (f: string) => ['-p', '-p', f]],
    ['-pp NAME', (f: string) => ['-pp', f]],
    ['-ppNAME', (f: string) => [`-pp${f}`]],
  ])('%s writes NAME: the master pid and a newline; removed at exit', async (form, flags) => {
    const up = await echoServer();
    const pidfile = path.join(tmp.path, `named-${form.replace(/[^a-zA-Z]/g, '')}.pid`);
    const p = await startProxy([...flags(pidfile), '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`]);
    await until(() => fs.existsSync(pidfile), `${pidfile} to be written`, 5000);
    expect(fs.readFileSync(pidfile, 'utf8')).toBe(`${p.pid}\n`);
    expect(fs.readdirSync(tmp.path).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    await echoes(p.addresses[0]?.port ?? 0, `named-${form}`);
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
    expect(fs.existsSync(pidfile)).toBe(false);
  });

  test('a stale pidfile (its pid is not running) is replaced', async () => {
    const up = await echoServer();
    // A pid that certainly ran and is now reaped.
    const gone = launch(['/bin/true']);
    await gone.exited;
    const stalePid = gone.pid;
    expect(stalePid).toBeGreaterThan(0);
    expect(alive(stalePid)).toBe(false);

    const dir = workdir('stale');
    const pidfile = path.join(dir, 'stale.pid');
    fs.writeFileSync(pidfile, `${stalePid}\n`);
    const port = await freePort();
    const r = await run(['-pp', pidfile, '-b', `127.0.0.1:${port}`, `127.0.0.1:${up.port}`], dir);
    expect(r).toEqual({ code: 0, signal: null, stdout: '', stderr: '' });
    const pid = daemonOf(pidfile);
    expect(pid).not.toBe(stalePid);
    await echoes(port, 'stale');
    await stopDaemon(pidfile);
    expect(await tryConnect(port)).toBe('ECONNREFUSED');
  });

  test('a pidfile naming a live process that is not a tcpproxy (a reused pid) is replaced; that process is left alone', async () => {
    const up = await echoServer();
    const other = launch(['/bin/sleep', '60'], { stdio: ['ignore', 'ignore', 'ignore'] });
    try {
      const otherPid = other.pid;
      await until(() => alive(otherPid) && cmdline(otherPid).startsWith('/bin/sleep'), 'sleep to run', 5000);
      const dir = workdir('reused');
      const pidfile = path.join(dir, 'reused.pid');
      fs.writeFileSync(pidfile, `${otherPid}\n`);
      const port = await freePort();
      const r = await run(['-pp', pidfile, '-b', `127.0.0.1:${port}`, `127.0.0.1:${up.port}`], dir);
      expect(r).toEqual({ code: 0, signal: null, stdout: '', stderr: '' });
      const pid = daemonOf(pidfile);
      expect(pid).not.toBe(otherPid);
      await echoes(port, 'reused');
      await stopDaemon(pidfile);
      expect(alive(otherPid)).toBe(true);
    } finally {
      other.kill();
    }
  });

  test('a live pidfile refuses the start: exit 1, nothing bound, the file untouched; kill -TERM $(cat pidfile) stops the first', async () => {
    const up = await echoServer();
    const dir = workdir('live');
    const pidfile = path.join(dir, 'live.pid');
    const [pa, pb] = [await freePort(), await freePort()];

    const first = await run(['-pp', pidfile, '-b', `127.0.0.1:${pa}`, `127.0.0.1:${up.port}`], dir);
    expect(first).toEqual({ code: 0, signal: null, stdout: '', stderr: '' });
    const pid = daemonOf(pidfile);

    // Detached: the daemon's refusal comes back through the command.
    const second = await run(['-pp', pidfile, '-b', `127.0.0.1:${pb}`, `127.0.0.1:${up.port}`], dir);
    expect(second).toEqual({
      code: 1,
      signal: null,
      stdout: '',
      stderr: `tcpproxy: pidfile ${pidfile}: tcpproxy is already running as pid ${pid}\n`,
    });
    expect(await tryConnect(pb)).toBe('ECONNREFUSED');
    expect(fs.readFileSync(pidfile, 'utf8')).toBe(`${pid}\n`);

    // In the foreground: the same line, exit 1.
    const fg = await run(['-D', '-pp', pidfile, '-b', `127.0.0.1:${pb}`, `127.0.0.1:${up.port}`], dir);
    expect(fg).toMatchObject({ code: 1, signal: null, stdout: '' });
    expect(logLines(fg.stderr)).toContain(`pidfile ${pidfile}: tcpproxy is already running as pid ${pid}`);
    expect(fg.stderr).not.toMatch(/listening on/);
    expect(fs.readFileSync(pidfile, 'utf8')).toBe(`${pid}\n`);

    // The first one still serves; `kill -TERM $(cat pidfile)` ends it.
    await echoes(pa, 'live');
    await stopDaemon(pidfile);
    expect(await tryConnect(pa)).toBe('ECONNREFUSED');
  });
});

describeAsRoot('detaching without a syslog (root: the test takes /dev/log in hand)', () => {
  /** argv as one sh word list, for script(1)'s -c. */
  const shell = (argv: readonly string[]): string => argv.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  /** Runs argv on a pseudo-terminal (script(1)): what it wrote there, with the terminal's \r\n as \n. */
  async function onTerminal(argv: readonly string[]): Promise<{ code: number | null; output: string }> {
    const r = await runToExit(['script', '-qec', shell(argv), '/dev/null'], { cwd: tmp.path, timeoutMs: 20000 });
    return { code: r.code, output: r.stdout.replace(/\r\n/g, '\n') };
  }
  async function serves(port: number): Promise<void> {
    const data = payload(64 * 1024, 'no-syslog');
    const c = await Client.connect('127.0.0.1', port);
    c.socket.end(data);
    await c.waitClosed(10000);
    expect(c.digest()).toEqual({ bytes: data.length, sha256: sha256(data) });
  }

  test('on a terminal, with nothing at /dev/log: one warning before it detaches, and the daemon serves all the same', async () => {
    const release = await takeSyslogLock(120000);
    try {
      const up = await echoServer();
      const port = await freePort();
      const pidfile = path.join(tmp.path, 'no-syslog.pid');
      const cmd = [process.execPath, CLI, '-p', '-p', pidfile, '-b', `127.0.0.1:${port}`, `127.0.0.1:${up.port}`];
      // With a syslog daemon on this machine, /dev/log is hidden in a private mount namespace.
      const present = fs.existsSync(DEV_LOG);
      const argv = present ? ['unshare', '-m', '--propagation', 'private', '--', '/bin/sh', '-c', `mount --bind /dev/null ${DEV_LOG} && exec "$@"`, 'sh', ...cmd] : cmd;
      const r = await onTerminal(argv);
      expect(r).toEqual({
        code: 0,
        output:
          `tcpproxy: warning: no syslog at /dev/log (connect ${present ? 'ECONNREFUSED' : 'ENOENT'}): detached, tcpproxy logs nothing until one listens there; ` +
          'start a syslog daemon (rsyslog, systemd-journald) or run tcpproxy in the foreground with -D\n',
      });
      daemonOf(pidfile);
      await serves(port);
      await stopDaemon(pidfile);
    } finally {
      release();
    }
  });

  test('with a syslog at /dev/log, or with stderr not a terminal, nothing is printed', async () => {
    const sink = await SyslogSink.open('auto', 120000);
    try {
      const up = await echoServer();
      const port = await freePort();
      const pidfile = path.join(tmp.path, 'syslog.pid');
      const args = ['-p', '-p', pidfile, '-b', `127.0.0.1:${port}`, `127.0.0.1:${up.port}`];
      const r = await onTerminal(tcpproxyArgv(args, sink.mode === 'bind-mount' ? sink : undefined));
      expect(r).toEqual({ code: 0, output: '' });
      const pid = daemonOf(pidfile);
      await sink.waitFor((rec) => rec.pid === pid && /^listening on /.test(rec.message), 'the daemon\'s "listening on" in syslog');
      await serves(port);
      await stopDaemon(pidfile);
    } finally {
      await sink.close();
    }
    // No terminal: no warning either way (here with no syslog at all, or the machine's).
    const pidfile = path.join(tmp.path, 'pipe.pid');
    const port = await freePort();
    const ran = await run(['-p', '-p', pidfile, '-b', `127.0.0.1:${port}`, '127.0.0.1:9'], tmp.path);
    expect({ code: ran.code, stdout: ran.stdout, stderr: ran.stderr }).toEqual({ code: 0, stdout: '', stderr: '' });
    daemonOf(pidfile);
    await stopDaemon(pidfile);
  });
});
