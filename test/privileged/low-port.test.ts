/**
 * A port below 1024 bound by a user who may not: the real EACCES of the
 * bind, with the fix in the message, exit 1. The command runs as uid/gid
 * 65534 from a copy of the built package that user can reach (the checkout
 * may sit below a 0700 directory), on 127.0.0.1 and a port below 1024 that
 * root could bind a moment before (so the refusal is the permission, not
 * EADDRINUSE). The kernel refuses that bind only while the sysctl
 * net.ipv4.ip_unprivileged_port_start is 1024 (its default): the test
 * asserts that rather than skipping.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT, runToExit } from '../helpers/daemon';
import { canBind } from '../helpers/ports';
import { describeAsRoot, requireRoot } from '../helpers/root';
import { useTempDir } from '../helpers/setup';

const NOBODY = 65534;
const tmp = useTempDir('tcpproxy-low-port-', 0o755);

/** A port from 600 to 1023 that 127.0.0.1 can bind now (a random start: parallel runs rarely meet). */
async function freeLowPort(): Promise<number> {
  const start = 600 + Math.floor(Math.random() * 424);
  for (let i = 0; i < 424; i++) {
    const port = 600 + ((start - 600 + i) % 424);
    if (await canBind('127.0.0.1', port)) return port;
  }
  throw new Error('no free port from 600 to 1023 on 127.0.0.1');
}

describeAsRoot('a privileged port as another user (root)', () => {
  beforeAll(() => requireRoot());

  test('EACCES names the fix: "ports below 1024 need root or CAP_NET_BIND_SERVICE", exit 1', async () => {
    expect(fs.readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'latin1').trim()).toBe('1024');
    const pkg = path.join(tmp.path, 'pkg');
    fs.cpSync(path.join(ROOT, 'dist', 'src'), path.join(pkg, 'dist', 'src'), { recursive: true });
    fs.cpSync(path.join(ROOT, 'build', 'Release', 'tcpproxy.node'), path.join(pkg, 'build', 'Release', 'tcpproxy.node'));
    fs.chmodSync(pkg, 0o755);
    const port = await freeLowPort();
    const r = await runToExit([process.execPath, path.join(pkg, 'dist', 'src', 'bin', 'tcpproxy.js'), '-D', '-b', `127.0.0.1:${port}`, '127.0.0.1:1'], {
      cwd: tmp.path,
      uid: NOBODY,
      gid: NOBODY,
      timeoutMs: 10000,
    });
    expect(r).toEqual({
      code: 1,
      signal: null,
      stdout: '',
      // With -D the start error is a log line: the time, then the message.
      stderr: expect.stringMatching(
        new RegExp(`^\\S+Z tcpproxy: cannot listen on 127\\.0\\.0\\.1:${port}: EACCES \\(permission denied\\): ports below 1024 need root or CAP_NET_BIND_SERVICE\n$`),
      ),
    });
  });
});
