/** The built command's one-shot paths: usage, version, listings, config errors. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { codeCacheVerdict, ROOT, runCli, runToExit } from '../helpers/daemon';
import { useTempDir } from '../helpers/setup';
import { USAGE } from '../../src/table/cli';
import { VERSION } from '../../src/sys/version';

const dir = useTempDir('tcpproxy-cli-');

function conf(name: string, text: string): string {
  const file = path.join(dir.path, name);
  fs.writeFileSync(file, text);
  return file;
}

test('VERSION matches package.json and --version prints it', async () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  expect(VERSION).toBe(pkg.version);
  const r = await runCli(['--version']);
  expect(r).toMatchObject({ code: 0, stdout: `tcpproxy ${VERSION}\n`, stderr: '' });
});

test('an unknown option prints one line and the usage, exit 2', async () => {
  const r = await runCli(['-Q']);
  expect(r.code).toBe(2);
  expect(r.stderr).toBe(`tcpproxy: unknown option -Q\n${USAGE}\n`);
});

test('-b without a server is a usage error', async () => {
  const r = await runCli(['-b', '8080']);
  expect(r.code).toBe(2);
  expect(r.stderr).toBe(`tcpproxy: option -b needs a server argument\n${USAGE}\n`);
});

test('-z lists the ports, -zz the service table, without binding', async () => {
  const f = conf(
    'list.conf',
    'timeout 30\nport 25\n  interface 127.0.0.2\n    server mail.example.org\n  interface 127.0.0.3\n    server 127.0.0.1:2525\nport 8080\n  server [::1]:80\n  uid 4242\n',
  );
  const z = await runCli(['-z', '-f', f]);
  expect(z).toMatchObject({ code: 0, stdout: '25\n8080\n', stderr: '' });
  const zz = await runCli(['-zz', '-f', f]);
  expect(zz.code).toBe(0);
  expect(zz.stdout).toBe(
    [
      'port=25\tinterface=127.0.0.2\tserver=mail.example.org\tuid=-\tgid=-\ttimeout=30\tacp=-\twritefile=-\tprefix=PROXY_\tallow=-\tdeny=-\tmaxconn=-\tper-source=-\trate=-\thandler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=1',
      'port=25\tinterface=127.0.0.3\tserver=127.0.0.1:2525\tuid=-\tgid=-\ttimeout=30\tacp=-\twritefile=-\tprefix=PROXY_\tallow=-\tdeny=-\tmaxconn=-\tper-source=-\trate=-\thandler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=1',
      'port=8080\tinterface=*\tserver=[::1]:80\tuid=4242\tgid=-\ttimeout=30\tacp=-\twritefile=-\tprefix=PROXY_\tallow=-\tdeny=-\tmaxconn=-\tper-source=-\trate=-\thandler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=1',
      '',
    ].join('\n'),
  );
});

test('bare program names are searched for in a fixed PATH, never in the caller\'s: programs planted there are not used', async () => {
  const planted = path.join(dir.path, 'planted');
  fs.mkdirSync(planted, { recursive: true });
  for (const name of ['cat', 'true', 'tcpproxy-planted']) fs.writeFileSync(path.join(planted, name), '#!/bin/sh\necho planted\n', { mode: 0o755 });
  const env = { PATH: `${planted}:/usr/bin:/bin` };
  const found = conf('bare.conf', 'port 7\n  acp true\n  exec cat -u\n');
  const zz = await runCli(['-zz', '-f', found], { env });
  expect(zz).toMatchObject({ code: 0, stderr: '' });
  expect(zz.stdout.split('\t').filter((f) => /^(exec|acp)=/.test(f))).toEqual(['exec=/usr/bin/cat -u', 'acp=/usr/bin/true']);
  const missing = conf('planted.conf', 'port 7\n  exec tcpproxy-planted\n');
  const r = await runCli(['-z', '-f', missing], { env });
  expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({
    code: 2,
    stdout: '',
    stderr: `tcpproxy:${missing}:2: program "tcpproxy-planted" not found in /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\ntcpproxy:${missing}: 1 error\n`,
  });
});

test('every config error is reported at once with file and line, exit 2', async () => {
  const f = conf('bad.conf', 'sever 127.0.0.1\nport 25\n  timeout soon\n  server 127.0.0.1\nport 99999\n  server x\n');
  const r = await runCli(['-z', '-f', f]);
  expect(r.code).toBe(2);
  expect(r.stdout).toBe('');
  expect(r.stderr).toBe(
    [
      `tcpproxy:${f}:1: unknown directive "sever" (did you mean "server"?)`,
      `tcpproxy:${f}:3: invalid timeout "soon": expected a number of seconds`,
      `tcpproxy:${f}:5: port 99999 is out of range (1-65535)`,
      `tcpproxy:${f}: 3 errors`,
      '',
    ].join('\n'),
  );
});

test('a missing config file is an error naming it, exit 2', async () => {
  const f = path.join(dir.path, 'missing.conf');
  const r = await runCli(['-s', '-f', f]);
  expect(r.code).toBe(2);
  expect(r.stderr).toBe(`tcpproxy:${f}: cannot read: ENOENT (no such file or directory)\ntcpproxy:${f}: 1 error\n`);
});

test('a handler program that does not exist is a config error at its line', async () => {
  const f = conf('exec.conf', 'port 7000\n  exec /nonexistent/handler arg\n');
  const r = await runCli(['-s', '-f', f]);
  expect(r.code).toBe(2);
  expect(r.stderr).toBe(`tcpproxy:${f}:2: program "/nonexistent/handler" does not exist\ntcpproxy:${f}: 1 error\n`);
});

test('programs that are missing or not executable are reported with the syntax errors, in line order, under one count', async () => {
  const notExec = path.join(dir.path, 'not-executable');
  fs.writeFileSync(notExec, '#!/bin/sh\n', { mode: 0o644 });
  const f = conf(
    'mixed.conf',
    ['acp /nonexistent/acp', 'port 7000', '  exec /nonexistent/handler arg', '  timeout soon', `port 7001`, `  exec ${notExec}`, 'port 99999', '  exec tcpproxy-no-such-program', ''].join('\n'),
  );
  const r = await runCli(['-z', '-f', f]);
  expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 2, stdout: '' });
  expect(r.stderr).toBe(
    [
      `tcpproxy:${f}:1: acp: program "/nonexistent/acp" does not exist`,
      `tcpproxy:${f}:3: program "/nonexistent/handler" does not exist`,
      `tcpproxy:${f}:4: invalid timeout "soon": expected a number of seconds`,
      `tcpproxy:${f}:6: program "${notExec}" is not executable`,
      `tcpproxy:${f}:7: port 99999 is out of range (1-65535)`,
      `tcpproxy:${f}:8: program "tcpproxy-no-such-program" not found in /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
      `tcpproxy:${f}: 6 errors`,
      '',
    ].join('\n'),
  );
  // With -a: the command line's program first.
  const a = await runCli(['-z', '-a', '/nonexistent/cli-acp', '-f', f]);
  expect(a.stderr.split('\n').slice(0, 2)).toEqual([`tcpproxy:command line: acp: program "/nonexistent/cli-acp" does not exist`, `tcpproxy:${f}:1: acp: program "/nonexistent/acp" does not exist`]);
  expect(a.stderr).toContain(`tcpproxy:${f}: 7 errors\n`);
});

test('without -s/-b and with stdin not a connection, a server argument is refused', async () => {
  const r = await runCli(['127.0.0.1:1']);
  expect(r.code).toBe(2);
  expect(r.stderr).toBe('tcpproxy: standard input is not a connection (inetd mode): use -b [interface:]port to listen\n');
});

const asRoot = process.getuid?.() === 0;
(asRoot || process.env['CI'] === 'true' ? test : test.skip)('as root, a config file others can write or another user owns is refused', async () => {
  const f = conf('unsafe.conf', 'port 7001\n  server 127.0.0.1:1\n');
  fs.chmodSync(f, 0o666);
  const r = await runCli(['-z', '-f', f]);
  expect(r).toMatchObject({ code: 2, stdout: '' });
  expect(r.stderr).toBe(`tcpproxy:${f}: is writable by group and others (mode 0666): refusing it when started as root: chmod go-w ${f}\n`);
  fs.chmodSync(f, 0o602);
  expect((await runCli(['-z', '-f', f])).stderr).toBe(
    `tcpproxy:${f}: is writable by others (mode 0602): refusing it when started as root: chmod o-w ${f}\n`,
  );
  fs.chmodSync(f, 0o624);
  expect((await runCli(['-z', '-f', f])).stderr).toBe(
    `tcpproxy:${f}: is writable by group (mode 0624): refusing it when started as root: chmod g-w ${f}\n`,
  );
  fs.chmodSync(f, 0o644);
  fs.chownSync(f, 4242, 0);
  expect((await runCli(['-z', '-f', f])).stderr).toBe(`tcpproxy:${f}: is owned by uid 4242, not root: refusing it when started as root\n`);
  fs.chownSync(f, 0, 0);
  expect(await runCli(['-z', '-f', f])).toMatchObject({ code: 0, stdout: '7001\n' });
});

describe('the V8 code cache of the command (scripts/bundle.mjs)', () => {
  /** A copy of the built command and addon, with its cache as `cache` says. */
  function copyWith(cache: 'none' | 'garbage' | 'stale'): string {
    const pkg = fs.mkdtempSync(path.join(dir.path, `cache-${cache}-`));
    fs.cpSync(path.join(ROOT, 'dist', 'src'), path.join(pkg, 'dist', 'src'), { recursive: true });
    fs.cpSync(path.join(ROOT, 'build', 'Release', 'tcpproxy.node'), path.join(pkg, 'build', 'Release', 'tcpproxy.node'));
    const main = path.join(pkg, 'dist', 'src', 'bin', 'main.js');
    if (cache === 'none') fs.rmSync(`${main}.v8cache`);
    if (cache === 'garbage') fs.writeFileSync(`${main}.v8cache`, 'not a code cache\n'.repeat(64));
    // The source changed after the cache was written (an edit, a partial upgrade), keeping its
    // length: V8 alone would take the cache and run the old code.
    if (cache === 'stale') {
      const text = fs.readFileSync(main, 'utf8');
      expect(text).toContain(`VERSION="${VERSION}"`);
      fs.writeFileSync(main, text.replace(`VERSION="${VERSION}"`, `VERSION="${VERSION.replace(/^./, 'X')}"`));
    }
    return path.join(pkg, 'dist', 'src', 'bin', 'tcpproxy.js');
  }

  test('the built command has one, and V8 accepts it', async () => {
    expect(await codeCacheVerdict(path.join(ROOT, 'dist', 'src', 'bin', 'main.js'))).toBe('accepted');
  });

  test.each(['none', 'garbage', 'stale'] as const)('cache %s: the command runs all the same, and writes nothing', async (cache) => {
    const bin = copyWith(cache);
    const before = fs.readdirSync(path.dirname(bin)).sort();
    const r = await runToExit([process.execPath, bin, '--version'], { timeoutMs: 20000 });
    // The stale copy runs its own (edited) source, not the code in the cache.
    const version = cache === 'stale' ? VERSION.replace(/^./, 'X') : VERSION;
    expect(r).toEqual({ code: 0, signal: null, stdout: `tcpproxy ${version}\n`, stderr: '' });
    if (cache === 'stale') {
      const main = path.join(path.dirname(bin), 'main.js');
      expect(await codeCacheVerdict(main)).toBe('stale');
      // The case is real: V8 alone would take the data for the edited source (and run the old code).
      expect(await codeCacheVerdict(main, { v8Only: true })).toBe('accepted');
    }
    const z = await runToExit([process.execPath, bin, '-z', '-b', '127.0.0.1:7', '127.0.0.1:9'], { timeoutMs: 20000 });
    expect(z).toMatchObject({ code: 0, stderr: '' });
    expect(fs.readdirSync(path.dirname(bin)).sort()).toEqual(before);
  });
});

describe('without a working native addon', () => {
  /** A copy of the built package without build/: what an install whose addon build failed looks like. */
  function packageWithout(addon: 'missing' | 'corrupt'): { bin: string; file: string } {
    const pkg = fs.mkdtempSync(path.join(dir.path, `no-addon-${addon}-`));
    fs.cpSync(path.join(ROOT, 'dist', 'src'), path.join(pkg, 'dist', 'src'), { recursive: true });
    const file = path.join(pkg, 'build', 'Release', 'tcpproxy.node');
    if (addon === 'corrupt') {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, 'not an ELF object\n'.repeat(256));
    }
    return { bin: path.join(pkg, 'dist', 'src', 'bin', 'tcpproxy.js'), file };
  }
  const rebuild = 'rebuild it with "npm rebuild tcpproxy" (needs g++, make and python3)';

  test.each(['missing', 'corrupt'] as const)('%s: exit 70 and one message naming the file and the rebuild command', async (kind) => {
    const { bin, file } = packageWithout(kind);
    const r = await runToExit([process.execPath, bin, '-D', '-b', '127.0.0.1:0', '127.0.0.1:7'], { cwd: dir.path, timeoutMs: 10000 });
    const why = kind === 'missing' ? `Cannot find module '${file}'` : 'invalid ELF header';
    expect(r).toEqual({ code: 70, signal: null, stdout: '', stderr: `tcpproxy: cannot load the native addon ${file}: ${why}; ${rebuild}\n` });
  });
});
