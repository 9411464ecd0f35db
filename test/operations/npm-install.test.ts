/**
 * The package as users get it: `npm pack` of a copy of the source tree
 * (which runs `prepack`, the TypeScript build) and `npm install -g --prefix` of the tarball (whose
 * install script compiles the addon with node-gyp against the headers in /usr). The
 * installed command must serve a forward on the splice engine, and the man
 * page must be installed. Needs the npm registry for node-addon-api.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { codeCacheVerdict, launch, parseListenAddress, ROOT, runToExit } from '../helpers/daemon';
import { executable, INETD, startInGroup, startInetd, waitListening } from '../helpers/inetd';
import { freePort } from '../helpers/ports';
import { describeAsRoot } from '../helpers/root';
import { echoServer, payload, sha256 } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

const MINUTE = 60_000;
const tmp = useTempDir('tcpproxy-ops-npm-');
cleanUpAfterEach();

/** Runs a command to completion (bounded), stdout and stderr together in `output`. */
async function run(
  cmd: string,
  args: readonly string[],
  cwd: string,
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  const r = await runToExit([cmd, ...args], { cwd, env, timeoutMs, together: true });
  return { code: r.code, signal: r.signal, output: r.stdout };
}

/**
 * A copy of the source tree, as a checkout has it (without the build
 * outputs; node_modules linked). `npm pack` runs `prepack`, which rewrites
 * dist/: in the working tree that would race with the other test files
 * starting the CLI from it at the same time.
 */
function sourceTree(): string {
  const tree = path.join(tmp.path, 'tree');
  const skip = new Set(['.git', 'node_modules', 'build', 'dist']);
  fs.mkdirSync(tree);
  for (const name of fs.readdirSync(ROOT)) {
    if (skip.has(name) || name.endsWith('.tgz')) continue;
    fs.cpSync(path.join(ROOT, name), path.join(tree, name), {
      recursive: true,
      filter: (src) => !src.startsWith(path.join(ROOT, 'bench', 'results')),
    });
  }
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(tree, 'node_modules'));
  return tree;
}

test('package.json: linux only, an engines range, a files list', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    os?: string[];
    engines?: { node?: string };
    files?: string[];
    bin?: Record<string, string>;
    man?: string[] | string;
  };
  expect(pkg.os).toEqual(['linux']);
  expect(pkg.engines?.node).toMatch(/^>=\s*20/);
  expect(pkg.files).toEqual(expect.arrayContaining(['dist/src/', 'native/', 'binding.gyp', 'man/']));
  expect(pkg.bin).toEqual({ tcpproxy: 'dist/src/bin/tcpproxy.js' });
  expect(pkg.man).toEqual(['man/tcpproxy.1']);
});

describe('the install script without the build tools', () => {
  /** A PATH of one directory holding `node` and the named tools (links to the real ones). */
  function pathWith(...tools: string[]): string {
    const dir = fs.mkdtempSync(path.join(tmp.path, 'bin-'));
    fs.symlinkSync(process.execPath, path.join(dir, 'node'));
    for (const t of tools) {
      const real = ['/usr/bin', '/bin'].map((d) => path.join(d, t)).find((f) => fs.existsSync(f));
      if (real === undefined) throw new Error(`no ${t} on this machine`);
      fs.symlinkSync(real, path.join(dir, t));
    }
    return dir;
  }
  const script = path.join(ROOT, 'scripts', 'install.mjs');

  test.each([
    [[], 'g++, make, python3; on Debian: apt-get install -y g++ make python3'],
    [['make', 'python3'], 'g++; on Debian: apt-get install -y g++'],
    [['g++', 'python3'], 'make; on Debian: apt-get install -y make'],
    [['g++', 'make'], 'python3; on Debian: apt-get install -y python3'],
  ])('with only %j: one line naming what to install, exit 1, nothing built', async (tools, missing) => {
    const r = await runToExit([process.execPath, script], { cwd: tmp.path, env: { PATH: pathWith(...tools) }, timeoutMs: 20000 });
    expect(r).toEqual({
      code: 1,
      signal: null,
      stdout: '',
      stderr: `tcpproxy: building the native addon needs a C++ compiler, make and python3; not on PATH: ${missing}\n`,
    });
    expect(fs.existsSync(path.join(tmp.path, 'build'))).toBe(false);
  });

  test('CXX names another compiler: it is the one looked for, with no Debian package guessed', async () => {
    const r = await runToExit([process.execPath, script], { cwd: tmp.path, env: { PATH: pathWith('make', 'python3'), CXX: 'clang++-99 -O2' }, timeoutMs: 20000 });
    expect(r.stderr).toBe('tcpproxy: building the native addon needs a C++ compiler, make and python3; not on PATH: clang++-99\n');
    expect(r.code).toBe(1);
  });
});

describe('npm pack + npm install -g --prefix, as the README installs it', () => {
  let prefix = '';
  const bin = (): string => path.join(prefix, 'bin', 'tcpproxy');
  const installed = (): string => path.join(prefix, 'lib', 'node_modules', 'tcpproxy');

  beforeAll(async () => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      npm_config_nodedir: '/usr',
      npm_config_update_notifier: 'false',
      npm_config_fund: 'false',
      npm_config_audit: 'false',
      npm_config_cache: path.join(os.homedir(), '.npm'),
    };
    const packDir = path.join(tmp.path, 'pack');
    prefix = path.join(tmp.path, 'prefix');
    fs.mkdirSync(packDir);
    const tree = sourceTree();
    const pack = await run('npm', ['pack', '--pack-destination', packDir], tree, env, 2 * MINUTE);
    expect({ code: pack.code, output: pack.output }).toEqual({ code: 0, output: expect.any(String) });
    const tarballs = fs.readdirSync(packDir).filter((n) => /^tcpproxy-.*\.tgz$/.test(n));
    expect(tarballs).toHaveLength(1);
    // `prepack` built the JavaScript and the bundled command.
    expect(fs.existsSync(path.join(tree, 'dist', 'src', 'bin', 'tcpproxy.js'))).toBe(true);
    const tgz = path.join(packDir, tarballs[0] ?? '');

    // As the README installs it: --allow-scripts names the tarball whose install script may run.
    const install = await run('npm', ['install', '-g', `--allow-scripts=${tgz}`, '--prefix', prefix, tgz], tmp.path, env, 3 * MINUTE);
    expect({ code: install.code, output: install.output }).toEqual({ code: 0, output: expect.any(String) });
    // npm says nothing about unreviewed install scripts (npm 11 warns, npm 12 would skip the addon build).
    expect(install.output).not.toMatch(/install-scripts|allowScripts|allow-scripts/);
    expect(install.output).not.toMatch(/\bwarn\b/i);
  }, 5 * MINUTE);

  test('bin/tcpproxy serves a forward (splice), share/man/man1/tcpproxy.1 is installed, nothing else is shipped', async () => {
    expect(fs.existsSync(bin())).toBe(true);
    fs.accessSync(bin(), fs.constants.X_OK);
    const man = path.join(prefix, 'share', 'man', 'man1', 'tcpproxy.1');
    expect(fs.readFileSync(man, 'utf8')).toBe(fs.readFileSync(path.join(ROOT, 'man', 'tcpproxy.1'), 'utf8'));
    expect(fs.existsSync(path.join(installed(), 'build', 'Release', 'tcpproxy.node'))).toBe(true);
    // `files` keeps the tests, the TypeScript sources and the compiled tests and benchmark out.
    expect(fs.existsSync(path.join(installed(), 'test'))).toBe(false);
    expect(fs.existsSync(path.join(installed(), 'src'))).toBe(false);
    expect(fs.readdirSync(path.join(installed(), 'dist'))).toEqual(['src']);

    // The install script wrote the V8 code cache of the bundled command for this Node, and V8 takes it.
    expect(await codeCacheVerdict(path.join(installed(), 'dist', 'src', 'bin', 'main.js'))).toBe('accepted');

    // The installed command, run through its bin link (shebang), forwards.
    const up = await echoServer();
    const runEnv = { ...process.env };
    delete runEnv['TCPPROXY_ENGINE']; // the default engine: splice, from the addon built at install
    const child = launch([bin(), '-D', '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], {
      cwd: tmp.path,
      env: runEnv,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const err = child.stderr;
    const exited = (): number | null | undefined => (child.exit() === null ? undefined : child.exit()?.code);
    await until(() => /^\S+Z tcpproxy: listening on \S+$/m.test(err()) || exited() !== undefined, () => `"listening on" from ${bin()}; stderr:\n${err()}`, 15000);
    const m = /^\S+Z tcpproxy: listening on (\S+)$/m.exec(err());
    if (m === null) throw new Error(`${bin()} exited (${exited()}) before listening:\n${err()}`);
    const { port } = parseListenAddress(m[1] ?? '');

    const data = payload(1024 * 1024, 'npm-installed');
    const c = await Client.connect('127.0.0.1', port, { keep: false });
    c.socket.end(data);
    await c.waitClosed(20000);
    expect({ got: c.digest(), end: c.describeEnd() }).toEqual({ got: { bytes: data.length, sha256: sha256(data) }, end: ' (clean end)' });
    await until(() => /^\S+Z tcpproxy: connection 1: end: /m.test(err()), 'the end line of connection 1', 5000);
    expect(err()).toMatch(new RegExp(`^\\S+Z tcpproxy: connection 1: end: client \\S+ on \\S+, server \\S+ from \\S+, ${data.length} bytes up, ${data.length} down, \\d+ ms, eof, splice$`, 'm'));
    expect(err()).not.toMatch(/warning/);

    child.child.kill('SIGTERM');
    await until(() => exited() !== undefined, `${bin()} to exit after SIGTERM`, 15000);
    expect(exited()).toBe(0);
  });

  /**
   * The examples name the command where `npm install -g` puts it with this
   * machine's Node (npm prefix /usr); the README says to replace the path
   * for another prefix. Here the prefix is the test's.
   */
  const SHIPPED = '/usr/bin/tcpproxy';
  function example(rel: string): string {
    const text = fs.readFileSync(path.join(ROOT, 'examples', rel), 'utf8');
    // Each file that starts the command names it there (the socket units start none).
    if (!rel.endsWith('.socket')) expect(text).toContain(SHIPPED);
    expect(text).not.toMatch(/\/usr\/local\/bin\/tcpproxy/);
    return text.replaceAll(SHIPPED, bin());
  }

  test('examples/systemd/*: systemd-analyze verify passes against the installed command and man page', async () => {
    const dir = fs.mkdtempSync(path.join(tmp.path, 'units-'));
    const units = fs.readdirSync(path.join(ROOT, 'examples', 'systemd')).sort();
    expect(units).toEqual(['tcpproxy-inetd.socket', 'tcpproxy-inetd@.service', 'tcpproxy.service', 'tcpproxy.socket']);
    for (const u of units) fs.writeFileSync(path.join(dir, u), example(path.join('systemd', u)));
    // verify runs man(1) for Documentation=man:tcpproxy(1): the page of the prefix.
    const env = { ...process.env, MANPATH: path.join(prefix, 'share', 'man') };
    const files = units.map((u) => path.join(dir, u));
    const ok = await runToExit(['systemd-analyze', 'verify', ...files], { cwd: dir, env, timeoutMs: 30000 });
    expect(ok).toEqual({ code: 0, signal: null, stdout: '', stderr: '' });
    // The check bites: a command that is not there fails it.
    fs.writeFileSync(path.join(dir, 'tcpproxy.service'), example('systemd/tcpproxy.service').replaceAll(bin(), path.join(prefix, 'bin', 'no-such-tcpproxy')));
    const bad = await runToExit(['systemd-analyze', 'verify', path.join(dir, 'tcpproxy.service')], { cwd: dir, env, timeoutMs: 30000 });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain(`Command ${path.join(prefix, 'bin', 'no-such-tcpproxy')} is not executable`);
  });

  describeAsRoot('super-servers (root)', () => {
    test('examples/inetd.conf: a real openbsd-inetd starts the installed tcpproxy, which becomes /bin/date', async () => {
      if (!executable(INETD)) throw new Error(`${INETD} is missing: apt-get install -y openbsd-inetd`);
      const lines = example('inetd.conf')
        .split('\n')
        .filter((l) => l.trim() !== '' && !l.startsWith('#'));
      expect(lines).toHaveLength(1);
      const [addr, ...fields] = (lines[0] ?? '').trim().split(/\s+/);
      const [socketType, proto, wait, user, program, ...argv] = fields;
      expect({ addr, socketType, proto, wait, user, program, argv }).toEqual({
        addr: '198.51.100.7:79',
        socketType: 'stream',
        proto: 'tcp',
        wait: 'nowait',
        user: 'root',
        program: bin(),
        argv: ['tcpproxy', '/bin/date'],
      });
      // The documentation address becomes loopback; the rest of the line is the example's.
      const port = await freePort();
      const inetd = await startInetd(tmp.path, [{ host: '127.0.0.1', port, program: program ?? '', argv, user: user ?? '' }]);
      const c = await Client.connect('127.0.0.1', port);
      await c.waitClosed(20000);
      // date(1)'s default format, e.g. "Fri Dec  4 17:58:09 UTC 2026".
      expect(c.data().toString('utf8')).toMatch(/^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d \S+ \d{4}\n$/);
      await until(() => inetd.reaped().size === 1, () => `inetd to reap the service; stderr:\n${inetd.stderr()}`, 10000);
      expect([...inetd.reaped().values()]).toEqual([0]);
      await inetd.stop();
    });

    test('examples/xinetd.d/tcpproxy: xinetd (its Debian package unpacked, not installed) forwards through the installed tcpproxy', async () => {
      // xinetd conflicts with openbsd-inetd: its binary is taken from the package without installing it.
      const dir = fs.mkdtempSync(path.join(tmp.path, 'xinetd-'));
      const dl = await runToExit(['apt-get', 'download', 'xinetd'], { cwd: dir, timeoutMs: 2 * MINUTE });
      expect({ code: dl.code, stderr: dl.stderr.replace(/^W: Download is performed unsandboxed.*\n/m, '') }).toEqual({ code: 0, stderr: '' });
      const deb = fs.readdirSync(dir).find((n) => n.endsWith('.deb')) ?? '';
      const unpack = await runToExit(['dpkg-deb', '-x', path.join(dir, deb), path.join(dir, 'root')], { timeoutMs: 30000 });
      expect(unpack.code).toBe(0);
      const xinetd = path.join(dir, 'root', 'usr', 'sbin', 'xinetd');

      const up = await echoServer();
      const port = await freePort();
      const text = example('xinetd.d/tcpproxy');
      expect(text).toMatch(/^\s+disable\s+= yes$/m);
      expect(text).toMatch(/^\s+bind\s+= 192\.0\.2\.1$/m);
      expect(text).toMatch(/^\s+port\s+= 25$/m);
      expect(text).toMatch(/^\s+server_args\s+= relay\.isp\.example\.net:25$/m);
      // Enabled, on loopback, forwarding to the test's echo server: the rest is the example's.
      const conf = path.join(dir, 'xinetd.conf');
      fs.writeFileSync(
        conf,
        text
          .replace(/^(\s+disable\s+=) yes$/m, '$1 no')
          .replace(/^(\s+bind\s+=) 192\.0\.2\.1$/m, '$1 127.0.0.1')
          .replace(/^(\s+port\s+=) 25$/m, `$1 ${port}`)
          .replace(/^(\s+server_args\s+=) relay\.isp\.example\.net:25$/m, `$1 127.0.0.1:${up.port}`),
      );
      const log = path.join(dir, 'xinetd.log');
      const d = startInGroup([xinetd, '-dontfork', '-filelog', log, '-f', conf, '-pidfile', path.join(dir, 'xinetd.pid')]);
      await waitListening(d, [{ host: '127.0.0.1', port }]);
      expect(fs.readFileSync(log, 'utf8')).toMatch(/Started working: 1 available service$/m);

      const data = payload(256 * 1024, 'xinetd-example');
      const c = await Client.connect('127.0.0.1', port);
      c.socket.end(data);
      await c.waitClosed(20000);
      expect({ got: c.digest(), end: c.describeEnd() }).toEqual({ got: { bytes: data.length, sha256: sha256(data) }, end: ' (clean end)' });
      await d.stop();
    });
  });
});
