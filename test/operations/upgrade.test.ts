/**
 * Upgrades without loss (issue 15 item 4), through the built CLI as root,
 * on both engines: SIGUSR2 while a client loop opens connections without
 * pause and 50 long sessions stream data. No connection is refused or
 * reset, every stream's sha256 matches, the pid file and the control socket
 * name the new master, the old one is gone after its sessions end, and
 * connection numbers stay unique across the two. An upgrade to a broken
 * config leaves the old master serving, its pid in the pid file.
 *
 * The new master runs in a session of its own (it must outlive the old
 * one), so it is no descendant the launcher knows of: each test kills its
 * process group itself.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { ENGINES, logLines, packageWithWorker, ROOT, runCli, startDaemon, startProxy, waitLog, type Proxy } from '../helpers/daemon';
import { freePort } from '../helpers/ports';
import { alive } from '../helpers/proc';
import { requireRoot } from '../helpers/root';
import { digestOf, echoServer, payload, sha256 } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { receiver } from '../helpers/notify';
import { until } from '../helpers/until';

beforeAll(requireRoot);
const tmp = useTempDir('tcpproxy-upgrade-');
/** New masters' pids: their process groups are killed after each test. */
const successors: number[] = [];
cleanUpAfterEach(async () => {
  for (const pid of successors.splice(0)) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone
    }
    await until(() => !alive(pid), `new master ${pid} to go`, 10000);
  }
});

const STREAMS = 50;
const CHUNK = 32 * 1024;
const CHUNKS = 40;
const PACE_MS = 50;

/** A session that streams CHUNKS chunks, PACE_MS apart, then ends; resolves with what came back. */
async function stream(port: number, seed: string): Promise<{ sent: string; got: string; bytes: number; end: string }> {
  const c = await Client.connect('127.0.0.1', port, { keep: false });
  const all = payload(CHUNK * CHUNKS, seed);
  for (let i = 0; i < CHUNKS; i++) {
    if (c.closed) break;
    c.socket.write(all.subarray(i * CHUNK, (i + 1) * CHUNK));
    await new Promise((r) => setTimeout(r, PACE_MS));
  }
  c.socket.end();
  await until(() => c.closed, `stream ${seed} to end`, 30000);
  return { sent: sha256(all), got: c.digest().sha256, bytes: c.received, end: c.describeEnd() };
}

/** One short connection: 64 bytes echoed and a clean end; the failure's text, or null. */
async function once(port: number, i: number): Promise<string | null> {
  let c: Client;
  try {
    c = await Client.connect('127.0.0.1', port);
  } catch (err) {
    return `connect: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
  }
  const data = payload(64, `loop-${i}`);
  c.socket.end(data);
  try {
    await until(() => c.closed, 'the echo', 10000);
  } catch {
    c.destroy();
    return 'no end within 10 s';
  }
  const d = c.digest();
  if (c.error !== null || d.sha256 !== digestOf(data).sha256) return `${c.describeEnd()} after ${d.bytes} bytes`;
  return null;
}

function pidIn(file: string): number {
  return Number(fs.readFileSync(file, 'utf8').trim());
}

/** A config of one service forwarding to a fresh echo upstream, and where its pid file and control socket go. */
async function forwardSetup(name: string): Promise<{ port: number; conf: string; pidfile: string; sock: string; args: string[] }> {
  const up = await echoServer();
  const port = await freePort();
  const conf = path.join(tmp.path, `${name}.conf`);
  fs.writeFileSync(conf, `port ${port}\n  interface 127.0.0.1\n    server 127.0.0.1:${up.port}\n`, { mode: 0o600 });
  const pidfile = path.join(tmp.path, `${name}.pid`);
  const sock = path.join(tmp.path, `${name}.sock`);
  return { port, conf, pidfile, sock, args: ['-f', conf, '-pp', pidfile, '-S', sock] };
}

async function daemon(name: string, engine: string): Promise<{ p: Proxy; port: number; conf: string; pidfile: string; sock: string }> {
  const s = await forwardSetup(name);
  const p = await startProxy(s.args, { TCPPROXY_ENGINE: engine });
  await waitLog(p.stderr, /^worker uid \d+ gid \d+ ready, pid \d+$/);
  return { p, ...s };
}

describe.each(ENGINES)('%s engine', (engine) => {
  it('SIGUSR2 under a connection loop and 50 streams: nothing refused or reset, every sha256 matches, the new master takes over', async () => {
    const d = await daemon(`zero-loss-${engine}`, engine);
    const oldPid = d.p.child.pid ?? 0;
    expect(pidIn(d.pidfile)).toBe(oldPid);

    const streams = Array.from({ length: STREAMS }, (_, i) => stream(d.port, `${engine}-stream-${i}`));
    let looping = true;
    let made = 0;
    const failures: string[] = [];
    const loop = (async () => {
      while (looping) {
        const f = await once(d.port, made);
        made++;
        if (f !== null) failures.push(f);
      }
    })();
    await until(() => made >= 20, '20 loop connections before the upgrade', 10000);
    const before = made;
    process.kill(oldPid, 'SIGUSR2');
    const m = await waitLog(d.p.stderr, /^SIGUSR2: the new master, pid (\d+), is serving; this one stops accepting; live sessions have 10 s to finish$/, 30000);
    const newPid = Number(m[1]);
    successors.push(newPid);
    await d.p.gone;
    const atOldExit = made;
    // A little more traffic to the new master alone.
    await until(() => made >= atOldExit + 20, '20 loop connections after the old master exited', 10000);
    looping = false;
    await loop;
    const ended = await Promise.all(streams);

    // The figures for a report (TCPPROXY_TEST_REPORT=FILE): connections made while the two masters overlapped, and failed.
    const report = process.env['TCPPROXY_TEST_REPORT'];
    if (report !== undefined) fs.appendFileSync(report, `${JSON.stringify({ engine, before, duringUpgrade: atOldExit - before, after: made - atOldExit, failed: failures.length, streams: ended.length })}\n`);
    expect({ failures, madeDuring: atOldExit > before, exit: d.p.child.exitCode }).toEqual({ failures: [], madeDuring: true, exit: 0 });
    for (const [i, r] of ended.entries()) expect({ i, ...r }).toEqual({ i, sent: r.sent, got: r.sent, bytes: CHUNK * CHUNKS, end: ' (clean end)' });
    expect({ pidfile: pidIn(d.pidfile), newAlive: alive(newPid), oldAlive: alive(oldPid) }).toEqual({ pidfile: newPid, newAlive: true, oldAlive: false });
    const z = await runCli(['-Z', '--json', '-S', d.sock]);
    expect({ code: z.code, stderr: z.stderr }).toEqual({ code: 0, stderr: '' });
    expect(JSON.parse(z.stdout)).toMatchObject({ pid: newPid });
    // The new master's lines come on the same stderr (-D); numbers are unique across both masters.
    const ids = logLines(d.p.stderr()).flatMap((l) => /^connection (\d+): client /.exec(l)?.[1] ?? []);
    expect(ids.length).toBe(made + STREAMS);
    expect(new Set(ids).size).toBe(ids.length);
    expect(d.p.stderr()).toMatch(new RegExp(`^\\S+Z tcpproxy: upgrade: fd \\d+ listening on 127\\.0\\.0\\.1:${d.port}, from pid ${oldPid}$`, 'm'));
  }, 90000);
});

describe('a detached daemon under a service manager', () => {
  it('SIGUSR2: the new master writes the pid file, MAINPID= names it, it serves; the old one exits', async () => {
    const up = await echoServer();
    const port = await freePort();
    const conf = path.join(tmp.path, 'detached.conf');
    fs.writeFileSync(conf, `port ${port}\n  interface 127.0.0.1\n    server 127.0.0.1:${up.port}\n`, { mode: 0o600 });
    const pidfile = path.join(tmp.path, 'detached.pid');
    const notify = await receiver(path.join(tmp.path, 'notify.sock'));
    const start = await runCli(['-f', conf, '-pp', pidfile, '-S', path.join(tmp.path, 'detached.sock')], { env: { NOTIFY_SOCKET: path.join(tmp.path, 'notify.sock') } });
    expect({ code: start.code, stderr: start.stderr }).toEqual({ code: 0, stderr: '' });
    const oldPid = pidIn(pidfile);
    successors.push(oldPid);
    await until(() => notify.messages().some((m) => m.includes('READY=1') && m.includes(`MAINPID=${oldPid}`)), 'READY=1 from the first master', 10000);
    process.kill(oldPid, 'SIGUSR2');
    await until(() => fs.existsSync(pidfile) && pidIn(pidfile) !== oldPid, 'the pid file to name the new master', 30000);
    const newPid = pidIn(pidfile);
    successors.push(newPid);
    await until(() => !alive(oldPid), 'the old master to exit', 20000);
    await until(() => notify.messages().some((m) => m.length === 1 && m[0] === `MAINPID=${newPid}`), 'MAINPID= of the new master', 10000);
    expect(notify.messages().some((m) => m.includes('READY=1') && m.includes(`MAINPID=${newPid}`))).toBe(true);
    // The old master never said it was stopping: to the manager the service runs on.
    expect(notify.messages().flat().filter((l) => l === 'STOPPING=1')).toEqual([]);
    expect(await once(port, 0)).toBeNull();
  }, 60000);
});

describe('an upgrade that fails', () => {
  /** A daemon run from a copy of the package, whose worker.js the test can break (an upgrade to a bad install). */
  async function fromCopy(name: string): Promise<{ p: Proxy; port: number; pidfile: string; sock: string; worker: string }> {
    const dir = path.join(tmp.path, `${name}-pkg`);
    fs.mkdirSync(dir);
    const cli = packageWithWorker(dir, path.join(ROOT, 'dist', 'src', 'process', 'worker.js'));
    const s = await forwardSetup(name);
    const p = await startDaemon({ cli, args: s.args, detached: false });
    await waitLog(p.stderr, /^worker uid \d+ gid \d+ ready, pid \d+$/);
    return { p, port: s.port, pidfile: s.pidfile, sock: s.sock, worker: path.join(dir, 'dist', 'src', 'process', 'worker.js') };
  }

  it('to an install whose workers cannot start: the old master goes on serving and gets its control socket back', async () => {
    const d = await fromCopy('broken-worker');
    const oldPid = d.p.child.pid ?? 0;
    fs.writeFileSync(d.worker, 'process.exit(3);\n');
    process.kill(oldPid, 'SIGUSR2');
    const m = await waitLog(d.p.stderr, /^SIGUSR2: the new master is pid (\d+); this one serves until it is ready$/, 10000);
    successors.push(Number(m[1]));
    await waitLog(d.p.stderr, /^SIGUSR2: the new master failed: exit 1: .*the workers are not ready 15 s after the start; this one goes on serving$/, 40000);
    await until(() => !alive(Number(m[1])), 'the failed new master to be gone', 10000);
    expect(await once(d.port, 0)).toBeNull();
    expect({ pidfile: pidIn(d.pidfile), alive: alive(oldPid) }).toEqual({ pidfile: oldPid, alive: true });
    // The new master had taken the control socket's path before it failed: the old one has it again.
    const z = await runCli(['-Z', '--json', '-S', d.sock]);
    expect({ code: z.code, stderr: z.stderr }).toEqual({ code: 0, stderr: '' });
    expect(JSON.parse(z.stdout)).toMatchObject({ pid: oldPid });
  }, 90000);

  it('SIGTERM while the new master is not ready yet stops both', async () => {
    const d = await fromCopy('term-during');
    const oldPid = d.p.child.pid ?? 0;
    fs.writeFileSync(d.worker, 'process.exit(3);\n');
    process.kill(oldPid, 'SIGUSR2');
    const m = await waitLog(d.p.stderr, /^SIGUSR2: the new master is pid (\d+); this one serves until it is ready$/, 10000);
    const newPid = Number(m[1]);
    successors.push(newPid);
    await until(() => fs.existsSync(d.pidfile) && pidIn(d.pidfile) === newPid, 'the new master to write the pid file', 10000);
    process.kill(oldPid, 'SIGTERM');
    await d.p.gone;
    await until(() => !alive(newPid), 'the new master to be given up', 10000);
    expect({ exit: d.p.child.exitCode, pidfile: fs.existsSync(d.pidfile) }).toEqual({ exit: 0, pidfile: false });
  }, 60000);

  it('to a broken config: the old master goes on serving, its pid in the pid file', async () => {
    const d = await daemon('broken', 'splice');
    const oldPid = d.p.child.pid ?? 0;
    fs.writeFileSync(d.conf, `${fs.readFileSync(d.conf, 'utf8')}nonsense here\n`, { mode: 0o600 });
    process.kill(oldPid, 'SIGUSR2');
    await waitLog(d.p.stderr, /^SIGUSR2: the new master failed: exit 2: .*nonsense.*; this one goes on serving$/, 30000);
    expect(await once(d.port, 0)).toBeNull();
    expect({ pidfile: pidIn(d.pidfile), alive: alive(oldPid) }).toEqual({ pidfile: oldPid, alive: true });
    const z = await runCli(['-Z', '--json', '-S', d.sock]);
    expect(JSON.parse(z.stdout)).toMatchObject({ pid: oldPid });
    // No new master was left behind: the old one's log names none as serving.
    expect(d.p.stderr()).not.toMatch(/is serving; this one stops accepting/);
    expect(net.isIP('127.0.0.1')).toBe(4);
  }, 60000);
});
