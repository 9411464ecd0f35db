/**
 * Plain `tcpproxy` (and `tcpproxy -z`) without /etc/tcpproxy.conf: the
 * ENOENT says what to do instead, exit 2. The default path is a constant
 * (no environment variable may move the file a root daemon trusts), so the
 * runs take place where /etc/tcpproxy.conf does not exist whatever this
 * machine holds: in a private mount namespace (`unshare -m`, propagation
 * private) where a directory of our own is bind-mounted over /etc. The mount
 * exists only in that namespace and ends with the process; the real /etc is
 * never touched. The directory holds copies of /etc/passwd, /etc/group and
 * /etc/services, which the program may read (a bare tmpfs over /etc would
 * hide them). NODE_EXTRA_CA_CERTS is dropped: Node would warn on stderr
 * that the file it names (under /etc) is gone.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, ROOT, runToExit } from '../helpers/daemon';
import { describeAsRoot, requireRoot } from '../helpers/root';
import { useTempDir } from '../helpers/setup';

const tmp = useTempDir('tcpproxy-default-config-', 0o755);

const HINT = `give a config with -f FILE, forward one port with -b PORT SERVER, or start from ${path.join(ROOT, 'examples', 'tcpproxy.conf')}`;

describeAsRoot('no config file at the default path (root, private mount namespace)', () => {
  let etc = '';
  beforeAll(() => {
    requireRoot();
    etc = path.join(tmp.path, 'etc');
    fs.mkdirSync(etc, { mode: 0o755 });
    for (const f of ['passwd', 'group', 'services']) fs.copyFileSync(path.join('/etc', f), path.join(etc, f));
  });

  /** `tcpproxy ...args` with `etc` as its /etc. */
  function withoutEtcConf(args: readonly string[]): ReturnType<typeof runToExit> {
    const env = { ...process.env };
    delete env['NODE_EXTRA_CA_CERTS'];
    return runToExit(['unshare', '-m', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /etc && exec "$@"', etc, process.execPath, CLI, ...args], {
      env,
      timeoutMs: 10000,
    });
  }

  test.each([[[]], [['-z']], [['-D', '-s']]])('tcpproxy %j: the ENOENT points at -f, -b and the sample file, exit 2', async (args) => {
    expect(fs.existsSync(path.join(ROOT, 'examples', 'tcpproxy.conf'))).toBe(true);
    expect(await withoutEtcConf(args)).toEqual({
      code: 2,
      signal: null,
      stdout: '',
      stderr: `tcpproxy:/etc/tcpproxy.conf: cannot read: ENOENT (no such file or directory): ${HINT}\ntcpproxy:/etc/tcpproxy.conf: 1 error\n`,
    });
  });

  test('named with -f, the same missing file gets the plain message', async () => {
    expect(await withoutEtcConf(['-z', '-f', '/etc/tcpproxy.conf'])).toEqual({
      code: 2,
      signal: null,
      stdout: '',
      stderr: 'tcpproxy:/etc/tcpproxy.conf: cannot read: ENOENT (no such file or directory)\ntcpproxy:/etc/tcpproxy.conf: 1 error\n',
    });
  });
});
