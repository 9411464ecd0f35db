/**
 * Hardening, the master trusts no one (issue 13 item 4), written as the
 * attacks: a worker stopped by a process of its uid is replaced and the
 * service goes on; a worker's memory and environment are closed to its own
 * uid (non-dumpable); a group SIGHUP reloads the master and leaves the
 * workers alone; a worker that sends garbage, a huge line or a descriptor,
 * or claims other ids, is killed and replaced while the master survives.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { killLaunched, packageWithWorker, readyWorkers, ROOT, startDaemon, type Daemon } from '../helpers/daemon';
import { FIXTURES_IN_TREE } from '../helpers/fixtures';
import { portOf } from '../helpers/ports';
import { alive } from '../helpers/proc';
import { describeAsRoot } from '../helpers/root';
import { echoServer } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

const tmp = useTempDir('tcpproxy-master-trust-', 0o755);
cleanUpAfterEach(async () => {
  for (const pid of stopped) if (alive(pid)) process.kill(pid, 'SIGCONT');
  stopped.length = 0;
  await killLaunched();
});
const stopped: number[] = [];

async function roundTrip(port: number, text: string): Promise<string> {
  const c = await Client.connect('127.0.0.1', port);
  c.socket.end(text);
  await c.waitClosed(10000);
  return c.data().toString();
}

async function forwarder(extra: Partial<Parameters<typeof startDaemon>[0]> = {}): Promise<{ d: Daemon; port: number; worker: number }> {
  const up = await echoServer();
  const d = await startDaemon({ args: ['-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], ...extra });
  await until(() => readyWorkers(d.stderr()).length >= 1, () => `a ready worker; stderr:\n${d.stderr()}`);
  return { d, port: portOf(d), worker: readyWorkers(d.stderr()).at(-1)?.pid ?? 0 };
}

describeAsRoot('the master trusts no worker (root)', () => {
  test('kill -STOP of a worker: it is killed and replaced within 5 s, new connections are served', async () => {
    const { d, port, worker } = await forwarder();
    expect(await roundTrip(port, 'before')).toBe('before');
    process.kill(worker, 'SIGSTOP');
    stopped.push(worker);
    const t0 = Date.now();
    await until(() => readyWorkers(d.stderr()).some((w) => w.pid !== worker), () => `a new worker; stderr:\n${d.stderr()}`, 5000);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(d.stderr()).toMatch(new RegExp(`worker uid 65535 gid 65534 \\(pid ${worker}\\): did not answer for 3 s: killing it`));
    expect(await roundTrip(port, 'after')).toBe('after');
  });

  // Dropping the uid alone clears the dumpable flag (with fs.suid_dumpable 0), so the root
  // start does not show the worker's own PR_SET_DUMPABLE; a start as 65535 changes no id,
  // and there only that call closes /proc/WORKER to the worker's uid.
  test.each([
    ['started as root, the worker drops to 65535', []],
    ['started as 65535, no id changes', ['setpriv', '--reuid=65535', '--regid=65534', '--clear-groups']],
  ])('a process of the worker\'s uid cannot read the worker\'s memory or environment (%s)', async (_how, wrapper) => {
    // As 65535 the command must be readable by 65535: a copy of the package in the 0755 temp directory
    // (the checkout may sit below a directory only root may enter, as CI's does).
    const copy = (): { cli: string; cwd: string } => {
      const dir = fs.mkdtempSync(path.join(tmp.path, 'pkg-'));
      fs.chmodSync(dir, 0o755);
      return { cli: packageWithWorker(dir, path.join(ROOT, 'dist', 'src', 'process', 'worker.js')), cwd: dir };
    };
    const { d, worker } = await forwarder(wrapper.length > 0 ? { wrapper, ...copy() } : {});
    expect(readyWorkers(d.stderr()).map((w) => [w.uid, w.gid])).toEqual([[65535, 65534]]);
    for (const file of ['environ', 'mem', 'maps']) {
      expect(fs.statSync(`/proc/${worker}/${file}`).uid).toBe(0);
    }
    const r = spawnSync('/bin/cat', [`/proc/${worker}/environ`], { uid: 65535, gid: 65534, encoding: 'utf8', timeout: 5000 });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('Permission denied');
  });

  test('a SIGHUP to the whole process group reloads the master and leaves the workers as they are', async () => {
    const { d, port, worker } = await forwarder();
    process.kill(-d.pid, 'SIGHUP');
    await until(() => /SIGHUP: no configuration file to re-read/.test(d.stderr()), () => `the master's SIGHUP line; stderr:\n${d.stderr()}`);
    expect(alive(worker)).toBe(true);
    expect(await roundTrip(port, 'still')).toBe('still');
    expect(readyWorkers(d.stderr()).map((w) => w.pid)).toEqual([worker]);
  });

  test.each([
    ['null', 'sent an invalid message \\(not an object: null\\)'],
    ['line', 'sent a line longer than 65536 bytes'],
    ['not-json', 'sent a line that is not JSON'],
    ['fd', 'passed a descriptor'],
    ['ids', 'reported uid 0 gid 0, expected uid 65535 gid 65534'],
    // The ids it should have, but the kernel shows it never dropped them.
    ['no-drop', 'runs as uid 0/0/0/0 gid 0/0/0/0, expected uid 65535 gid 65534'],
    // An internal message of Node's channel (a handle acknowledgement nobody asked for).
    ['ack', 'sent an internal message'],
  ])('a worker that attacks its master (%s): logged, killed, replaced; the master serves on', async (attack, why) => {
    const dir = fs.mkdtempSync(path.join(tmp.path, `${attack}-`));
    fs.chmodSync(dir, 0o755);
    const cli = packageWithWorker(dir, path.join(FIXTURES_IN_TREE, 'workers', 'fake-worker.cjs'));
    const mark = path.join(dir, 'mark');
    const up = await echoServer();
    const d = await startDaemon({
      args: ['-b', '127.0.0.1:0', `127.0.0.1:${up.port}`],
      cli,
      env: { ...process.env, FAKE_WORKER_ATTACK: attack, FAKE_WORKER_MARK: mark },
    });
    await until(() => new RegExp(`\\): ${why}: killing it`).test(d.stderr()), () => `the refusal; stderr:\n${d.stderr()}`, 20000);
    await until(() => readyWorkers(d.stderr()).length >= 1, () => `the real worker; stderr:\n${d.stderr()}`, 10000);
    expect(alive(d.pid)).toBe(true);
    expect(await roundTrip(portOf(d), attack)).toBe(attack);
  }, 60000);
});
