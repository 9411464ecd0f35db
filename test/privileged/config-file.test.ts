/**
 * Reading the config file as a user who may not: the real EACCES of the
 * open, reported at start with the file's name, exit 2. Root reads any
 * file, so the command runs as uid/gid 65534 from a copy of the built
 * package that user can reach (the checkout may sit below a 0700 directory).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT, runToExit } from '../helpers/daemon';
import { describeAsRoot, requireRoot } from '../helpers/root';
import { useTempDir } from '../helpers/setup';

const NOBODY = 65534;
const tmp = useTempDir('tcpproxy-config-file-', 0o755);

describeAsRoot('config file permissions (root)', () => {
  beforeAll(() => requireRoot());

  test('a config file the user cannot read: "cannot read: EACCES (permission denied)", exit 2', async () => {
    const pkg = path.join(tmp.path, 'pkg');
    fs.cpSync(path.join(ROOT, 'dist', 'src'), path.join(pkg, 'dist', 'src'), { recursive: true });
    fs.cpSync(path.join(ROOT, 'build', 'Release', 'tcpproxy.node'), path.join(pkg, 'build', 'Release', 'tcpproxy.node'));
    fs.chmodSync(pkg, 0o755);
    const file = path.join(tmp.path, 'secret.conf');
    fs.writeFileSync(file, 'port 25\n    server 127.0.0.1\n', { mode: 0o600 });
    // Readable by root only; and the same file made readable shows the copy itself works for that user.
    const readable = path.join(tmp.path, 'open.conf');
    fs.writeFileSync(readable, 'port 25\n    server 127.0.0.1\n', { mode: 0o644 });
    const run = (f: string): ReturnType<typeof runToExit> =>
      runToExit([process.execPath, path.join(pkg, 'dist', 'src', 'bin', 'tcpproxy.js'), '-z', '-f', f], {
        cwd: tmp.path,
        uid: NOBODY,
        gid: NOBODY,
        timeoutMs: 10000,
      });
    expect(await run(readable)).toEqual({ code: 0, signal: null, stdout: '25\n', stderr: '' });
    expect(await run(file)).toEqual({
      code: 2,
      signal: null,
      stdout: '',
      stderr: `tcpproxy:${file}: cannot read: EACCES (permission denied)\ntcpproxy:${file}: 1 error\n`,
    });
  });
});
