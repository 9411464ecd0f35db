/**
 * The package below a directory only root may enter (root's home, a private
 * checkout): the master reads it as root, and the workers, which drop to the
 * service ids first thing, must have loaded before the drop everything they
 * may run later. A copy of the built package in a 0700 directory serves, on
 * both engines, a request handler, a forward behind an ACP and a transcribed
 * forward; then a SIGHUP turns a plain forward into a handler behind an
 * ACP, which the same worker, long past its drop, serves too.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { ENGINES, ROOT, startDaemon, waitLog, waitWorkers } from '../helpers/daemon';
import { writeConfig } from '../helpers/fixtures';
import { freePort } from '../helpers/ports';
import { describeAsRoot, requireRoot } from '../helpers/root';
import { echoServer, payload, sha256 } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';

// Transcripts are written by the service ids: a directory they may write.
const open = useTempDir('tcpproxy-private-open-', 0o777);
cleanUpAfterEach();

let top = '';
beforeAll(() => {
  requireRoot();
  top = fs.mkdtempSync(path.join(os.tmpdir(), 'tcpproxy-private-'));
  fs.chmodSync(top, 0o700);
  fs.cpSync(path.join(ROOT, 'dist', 'src'), path.join(top, 'pkg', 'dist', 'src'), { recursive: true });
  fs.cpSync(path.join(ROOT, 'build', 'Release', 'tcpproxy.node'), path.join(top, 'pkg', 'build', 'Release', 'tcpproxy.node'));
});
afterAll(() => {
  if (top !== '') fs.rmSync(top, { recursive: true, force: true });
});

async function echoed(port: number, tag: string): Promise<void> {
  const data = payload(32 * 1024, tag);
  const c = await Client.connect('127.0.0.1', port, { keep: false });
  c.socket.end(data);
  await c.waitClosed(15000);
  expect({ tag, got: c.digest() }).toEqual({ tag, got: { bytes: data.length, sha256: sha256(data) } });
}

describeAsRoot('the package in a directory only root may enter (root)', () => {
  test.each(ENGINES)('%s engine: a handler, an ACP, a transcript, and the same port turned into a handler by SIGHUP all work', async (engine) => {
    // The copy's own directory is 0700 as well: the service ids can neither enter nor read it.
    expect(fs.statSync(top).mode & 0o777).toBe(0o700);
    const up = await echoServer();
    const [cat, acp, rec, later] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const base = path.join(open.path, `t-${engine}`);
    const services =
      `port ${cat}\n  interface 127.0.0.1\n  exec /bin/cat\n` +
      `port ${acp}\n  interface 127.0.0.1\n  acp /bin/true\n  server 127.0.0.1:${up.port}\n` +
      `port ${rec}\n  interface 127.0.0.1\n  writefile ${base}\n  server 127.0.0.1:${up.port}\n`;
    // The fourth port starts as a plain forward: its worker has nothing of the handler code to load at start.
    const conf = writeConfig(top, `private-${engine}.conf`, `${services}port ${later}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`);
    const d = await startDaemon({
      args: ['-s', '-f', conf],
      cli: path.join(top, 'pkg', 'dist', 'src', 'bin', 'tcpproxy.js'),
      env: { ...process.env, TCPPROXY_ENGINE: engine },
      cwd: open.path,
      listeners: 4,
    });
    const [worker] = await waitWorkers(d.stderr, 65535, 65534);
    if (worker === undefined) throw new Error('no worker');
    await echoed(cat, `cat-${engine}`);
    await echoed(acp, `acp-${engine}`);
    await echoed(rec, `rec-${engine}`);
    await echoed(later, `later-forward-${engine}`);
    await waitLog(d.stderr, /^connection \d+: acp \/bin\/true: granted \(exit 0\)$/);
    // The end line comes once the transcript is on disk.
    await waitLog(d.stderr, new RegExp(`^connection \\d+: end: client \\S+ on 127\\.0\\.0\\.1:${rec}, `));
    const transcript = fs.readdirSync(open.path).find((n) => n.startsWith(`t-${engine}.`) && n.endsWith('.log'));
    expect(transcript).toBeDefined();
    expect(fs.statSync(path.join(open.path, transcript ?? '')).size).toBeGreaterThan(2 * 32 * 1024);
    // SIGHUP turns the plain forward into a handler behind an ACP: same listener, same ids, so the
    // same worker serves it, long after it dropped its privileges.
    fs.writeFileSync(conf, `${services}port ${later}\n  interface 127.0.0.1\n  acp /bin/true\n  exec /bin/cat\n`);
    process.kill(d.pid, 'SIGHUP');
    await waitLog(d.stderr, /^SIGHUP: configuration reloaded, serving 4 service\(s\)$/);
    await echoed(later, `later-handler-${engine}`);
    await waitLog(d.stderr, new RegExp(`^connection \\d+: end: handler /bin/cat pid \\d+ exit 0, \\d+ ms$`));
    expect(waitWorkersNow(d.stderr())).toEqual([worker.pid]);
    expect(d.stderr()).not.toMatch(/Cannot find module|MODULE_NOT_FOUND|EACCES/);
  });
});

/** The pids of every `worker ... ready` line so far. */
function waitWorkersNow(stderr: string): number[] {
  return [...stderr.matchAll(/worker uid \d+ gid \d+ ready, pid (\d+)$/gm)].map((m) => Number(m[1]));
}
