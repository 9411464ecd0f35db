/**
 * Hardening: what root trusts in the files it is given. The config file is
 * read once, from a descriptor whose file, directories and links only root
 * can have written (sshd's StrictModes, sticky root directories allowed),
 * at start and on SIGHUP; an attacker (uid 65534) who swaps a symbolic link
 * between root's good file and their own `uid 6` file while tcpproxy
 * starts and reloads never gets their file accepted. The pid file's
 * temporary file is new (O_EXCL|O_NOFOLLOW, random name): a link planted
 * at the old predictable name is not written through, nor links planted at
 * the very names it draws (its random bytes chosen by the test). Started
 * set-user-ID (real uid not root, effective root), tcpproxy refuses to run.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writePidfile } from '../../src/modes/pidfile';
import { mixedIds } from '../../src/process/privilege';
import { configFileProblem, readConfigFile } from '../../src/table/config';
import { CLI, launch, logLines, readyWorkers, runCli, runToExit, startDaemon, type Launched } from '../helpers/daemon';
import { freePort } from '../helpers/ports';
import { requireRoot } from '../helpers/root';
import { echoServer } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

// The pid file's random draws, chosen by the tests that plant links at the names they
// give (pidfileWith); real random bytes everywhere else.
jest.mock('node:crypto', () => {
  const actual = jest.requireActual<typeof crypto>('node:crypto');
  return { ...actual, randomBytes: jest.fn(actual.randomBytes) };
});

const ATTACKER = 65534;
const REFUSING = 'refusing it when started as root';

beforeAll(() => requireRoot());
const tmp = useTempDir('tcpproxy-config-trust-', 0o755);
cleanUpAfterEach();

let dirs = 0;
/** A new directory under tmp, owned by `uid` with `mode` (chmod after mkdir: no umask). */
function dir(mode: number, uid = 0): string {
  const d = path.join(tmp.path, `d${++dirs}`);
  fs.mkdirSync(d);
  fs.chmodSync(d, mode);
  fs.chownSync(d, uid, 0);
  return d;
}

/** A file in `d` holding `text`, owned by `uid`, mode `mode`. */
function file(d: string, name: string, text: string, mode = 0o644, uid = 0): string {
  const f = path.join(d, name);
  fs.writeFileSync(f, text);
  fs.chmodSync(f, mode);
  fs.chownSync(f, uid, 0);
  return f;
}

const GOOD = 'port 7001\n    server 127.0.0.1:1\n';

/** readConfigFile as root: the text, or `unsafe: MESSAGE` / `error: MESSAGE`. */
function asRoot(f: string): string {
  const r = readConfigFile(f, 'root');
  if (r.ok) return r.text;
  return `${r.unsafe ? 'unsafe' : 'error'}: ${r.message}`;
}

describe('the config file as root: owner and mode of the file, its directories and its links', () => {
  test('a file of root in root-owned 0755 directories is read', () => {
    const d = dir(0o755);
    expect(asRoot(file(d, 'ok.conf', GOOD))).toBe(GOOD);
  });

  test('a file owned by another uid, or writable by group or others, is refused', () => {
    const d = dir(0o755);
    expect(asRoot(file(d, 'other.conf', GOOD, 0o644, 4242))).toBe(`unsafe: is owned by uid 4242, not root: ${REFUSING}`);
    const group = file(d, 'group.conf', GOOD, 0o664);
    expect(asRoot(group)).toBe(`unsafe: is writable by group (mode 0664): ${REFUSING}: chmod g-w ${group}`);
    const others = file(d, 'others.conf', GOOD, 0o646);
    expect(asRoot(others)).toBe(`unsafe: is writable by others (mode 0646): ${REFUSING}: chmod o-w ${others}`);
    const both = file(d, 'both.conf', GOOD, 0o666);
    expect(asRoot(both)).toBe(`unsafe: is writable by group and others (mode 0666): ${REFUSING}: chmod go-w ${both}`);
    // Named relative to the working directory: the chmod names it the same way.
    const cwd = process.cwd();
    try {
      process.chdir(d);
      expect(asRoot('both.conf')).toBe(`unsafe: is writable by group and others (mode 0666): ${REFUSING}: chmod go-w both.conf`);
    } finally {
      process.chdir(cwd);
    }
  });

  test('a directory above it owned by another uid, or writable by group or others without the sticky bit, is refused', () => {
    const owned = dir(0o755, 4242);
    expect(asRoot(file(owned, 'a.conf', GOOD))).toBe(`unsafe: directory ${owned} is owned by uid 4242, not root: ${REFUSING}`);
    const group = dir(0o775);
    expect(asRoot(file(group, 'b.conf', GOOD))).toBe(`unsafe: directory ${group} is writable by group (mode 0775): ${REFUSING}: chmod g-w ${group}`);
    const others = dir(0o757);
    expect(asRoot(file(others, 'c.conf', GOOD))).toBe(`unsafe: directory ${others} is writable by others (mode 0757): ${REFUSING}: chmod o-w ${others}`);
    // Not only the file's own directory: every one on the way, from / down.
    const deeper = path.join(group, 'sub');
    fs.mkdirSync(deeper, { mode: 0o755 });
    expect(asRoot(file(deeper, 'd.conf', GOOD))).toBe(`unsafe: directory ${group} is writable by group (mode 0775): ${REFUSING}: chmod g-w ${group}`);
  });

  test('a sticky root directory (like /tmp) is allowed; an attacker\'s file or directory in it is not', () => {
    const sticky = dir(0o1777);
    expect(asRoot(file(sticky, 'root.conf', GOOD))).toBe(GOOD);
    expect(asRoot(file(sticky, 'theirs.conf', GOOD, 0o644, ATTACKER))).toBe(`unsafe: is owned by uid ${ATTACKER}, not root: ${REFUSING}`);
    const theirs = path.join(sticky, 'theirs');
    fs.mkdirSync(theirs, { mode: 0o755 });
    fs.chownSync(theirs, ATTACKER, ATTACKER);
    expect(asRoot(file(theirs, 'e.conf', GOOD))).toBe(`unsafe: directory ${theirs} is owned by uid ${ATTACKER}, not root: ${REFUSING}`);
    // A sticky directory someone else owns is no /tmp.
    const stickyTheirs = dir(0o1777, ATTACKER);
    expect(asRoot(file(stickyTheirs, 'f.conf', GOOD))).toBe(`unsafe: directory ${stickyTheirs} is owned by uid ${ATTACKER}, not root: ${REFUSING}`);
  });

  test('a symbolic link of root in a root directory is followed, and its target checked the same way', () => {
    const etc = dir(0o755);
    const srv = dir(0o755);
    const target = file(srv, 'real.conf', GOOD);
    const link = path.join(etc, 'tcpproxy.conf');
    fs.symlinkSync(target, link);
    expect(asRoot(link)).toBe(GOOD);
    // A relative link, and a link to a directory on the way.
    const rel = path.join(etc, 'rel.conf');
    fs.symlinkSync(path.join('..', path.basename(srv), 'real.conf'), rel);
    expect(asRoot(rel)).toBe(GOOD);
    const srvLink = path.join(etc, 'srv');
    fs.symlinkSync(srv, srvLink);
    expect(asRoot(path.join(srvLink, 'real.conf'))).toBe(GOOD);
    // The target's owner, mode and directories count.
    fs.chownSync(target, 4242, 0);
    expect(asRoot(link)).toBe(`unsafe: target ${target} is owned by uid 4242, not root: ${REFUSING}`);
    fs.chownSync(target, 0, 0);
    fs.chmodSync(target, 0o666);
    expect(asRoot(link)).toBe(`unsafe: target ${target} is writable by group and others (mode 0666): ${REFUSING}: chmod go-w ${target}`);
    fs.chmodSync(target, 0o644);
    const open = dir(0o757);
    const link2 = path.join(etc, 'open.conf');
    fs.symlinkSync(file(open, 'x.conf', GOOD), link2);
    expect(asRoot(link2)).toBe(`unsafe: directory ${open} is writable by others (mode 0757): ${REFUSING}: chmod o-w ${open}`);
  });

  test('a symbolic link owned by another uid, or in a directory others can write, is refused', () => {
    const etc = dir(0o755);
    const target = file(dir(0o755), 'real.conf', GOOD);
    const link = path.join(etc, 'theirs.conf');
    fs.symlinkSync(target, link);
    fs.lchownSync(link, ATTACKER, ATTACKER);
    expect(asRoot(link)).toBe(`unsafe: symbolic link ${link} is owned by uid ${ATTACKER}, not root: ${REFUSING}`);
    const group = dir(0o775);
    const link2 = path.join(group, 'tcpproxy.conf');
    fs.symlinkSync(target, link2);
    expect(asRoot(link2)).toBe(`unsafe: directory ${group} is writable by group (mode 0775): ${REFUSING}: chmod g-w ${group}`);
  });

  test('a missing file, a loop of links, a FIFO and a directory are errors, not accepted', async () => {
    const d = dir(0o755);
    const fifo = path.join(d, 'fifo.conf');
    expect(await runToExit(['mkfifo', '-m', '600', fifo])).toMatchObject({ code: 0 });
    // Not opened, so never blocked on.
    expect(asRoot(fifo)).toBe('error: is not a regular file');
    expect(asRoot(path.join(d, 'missing.conf'))).toBe('error: cannot read: ENOENT (no such file or directory)');
    fs.symlinkSync(path.join(d, 'loop2'), path.join(d, 'loop1'));
    fs.symlinkSync(path.join(d, 'loop1'), path.join(d, 'loop2'));
    expect(asRoot(path.join(d, 'loop1'))).toBe('error: cannot read: ELOOP (too many levels of symbolic links)');
    expect(asRoot(d)).toBe('error: is not a regular file');
    expect(configFileProblem(d)).toBeNull();
  });

  test('the command refuses with the message and exit 2 (a non-root run: test/privileged/config-file.test.ts)', async () => {
    const group = dir(0o775);
    const f = file(group, 'tcpproxy.conf', GOOD);
    expect(await runCli(['-z', '-f', f])).toMatchObject({
      code: 2,
      stdout: '',
      stderr: `tcpproxy:${f}: directory ${group} is writable by group (mode 0775): ${REFUSING}: chmod g-w ${group}\n`,
    });
  });
});

/**
 * The attack: `etc/tcpproxy.conf` is root's link to `spool/current.conf`,
 * and the attacker owns `spool`. A loop running as the attacker renames a
 * fresh link over `current.conf` again and again, pointing it at root's
 * `etc/good.conf` and at the attacker's own `spool/evil.conf` (which says
 * `uid 6`, the disk group's id) in turn. A check of the path followed by a
 * second open would now and then read evil.conf after checking good.conf.
 */
interface Race {
  readonly config: string;
  readonly spool: string;
  readonly good: string;
  readonly evil: string;
}

function raceFiles(port: number): Race {
  const etc = dir(0o755);
  const spool = dir(0o755);
  const good = file(etc, 'good.conf', `port ${port}\n    interface 127.0.0.1\n    server 127.0.0.1:1\n`);
  const evil = file(spool, 'evil.conf', `port ${port}\n    interface 127.0.0.1\n    server 127.0.0.1:1\n    uid 6\n`, 0o644, ATTACKER);
  const current = path.join(spool, 'current.conf');
  fs.symlinkSync(good, current);
  const config = path.join(etc, 'tcpproxy.conf');
  fs.symlinkSync(current, config);
  return { config, spool, good, evil };
}

/** The attacker's loop, as uid 65534: swaps spool/current.conf between the two files until killed (at most 120 s). */
function startSwapping(r: Race): Launched {
  fs.chownSync(r.spool, ATTACKER, ATTACKER);
  fs.lchownSync(path.join(r.spool, 'current.conf'), ATTACKER, ATTACKER);
  const script = `
    const fs = require('node:fs');
    const [spool, good, evil] = process.argv.slice(1);
    const end = Date.now() + 120000;
    for (let i = 0; Date.now() < end; i++) {
      const tmp = spool + '/.new';
      fs.rmSync(tmp, { force: true });
      fs.symlinkSync(i % 2 === 0 ? evil : good, tmp);
      fs.renameSync(tmp, spool + '/current.conf');
    }`;
  return launch([process.execPath, '-e', script, r.spool, r.good, r.evil], { uid: ATTACKER, gid: ATTACKER, cwd: '/' });
}

/** Waits until the link has been seen pointing at each file: the swapping runs. */
async function seenSwapping(r: Race, swapper: Launched): Promise<void> {
  const seen = new Set<string>();
  await until(
    () => {
      try {
        seen.add(fs.readlinkSync(path.join(r.spool, 'current.conf')));
      } catch {
        // Between unlink and rename of the loop's own temporary name: not a state of current.conf.
      }
      return seen.has(r.good) && seen.has(r.evil);
    },
    () => `the attacker's loop to swap the link (seen ${[...seen].join(', ')}; its stderr: ${swapper.stderr()})`,
    10000,
  );
}

describe('a config symlink swapped between check and read by an attacker (uid 65534)', () => {
  test('at start: 40 runs of -zz while the link is swapped; the `uid 6` file is never accepted, every run is refused', async () => {
    const port = await freePort();
    const r = raceFiles(port);
    // Before the attacker owns the spool: root's own link chain is read (-zz lists uid=-).
    const before = await runCli(['-zz', '-f', r.config]);
    expect(before).toMatchObject({ code: 0, stderr: '' });
    expect(before.stdout).toMatch(new RegExp(`^port=${port}\tinterface=127\\.0\\.0\\.1\tserver=127\\.0\\.0\\.1:1\tuid=-\t`));
    const swapper = startSwapping(r);
    await seenSwapping(r, swapper);
    const runs = [];
    for (let i = 0; i < 40; i++) runs.push(await runCli(['-zz', '-f', r.config]));
    expect(swapper.exit()).toBeNull();
    // The attack: the attacker's ids never reach the table.
    expect(runs.filter((x) => /\tuid=6\t/.test(x.stdout)).map((x) => x.stdout)).toEqual([]);
    // And nothing at all is read through a directory the attacker can write.
    const refusal = `tcpproxy:${r.config}: directory ${r.spool} is owned by uid ${ATTACKER}, not root: ${REFUSING}\n`;
    expect(new Set(runs.map((x) => `${x.code} ${x.stdout}${x.stderr}`))).toEqual(new Set([`2 ${refusal}`]));
  });

  test('on SIGHUP: 100 reloads while the link is swapped; no worker of uid 6 is ever started, every reload is refused', async () => {
    const port = await freePort();
    const r = raceFiles(port);
    const d = await startDaemon({ args: ['-f', r.config], detached: false });
    await until(() => readyWorkers(d.stderr()).length >= 1, 'the first worker', 10000);
    expect(readyWorkers(d.stderr()).map((w) => w.uid)).toEqual([65535]);
    const swapper = startSwapping(r);
    await seenSwapping(r, swapper);
    const outcomes = (): string[] => logLines(d.stderr()).filter((l) => l.startsWith('SIGHUP: '));
    for (let i = 1; i <= 100; i++) {
      process.kill(d.pid, 'SIGHUP');
      await until(() => outcomes().length >= i, () => `reload ${i} to be answered; stderr:\n${d.stderr()}`, 10000);
    }
    expect(swapper.exit()).toBeNull();
    expect(d.exit()).toBeNull();
    // The attack: no worker ever ran as the attacker's uid 6.
    expect(readyWorkers(d.stderr()).filter((w) => w.uid !== 65535)).toEqual([]);
    expect(new Set(outcomes())).toEqual(new Set(['SIGHUP: configuration has errors: keeping the running one']));
    const refusal = `tcpproxy:${r.config}: directory ${r.spool} is owned by uid ${ATTACKER}, not root: ${REFUSING}`;
    expect(logLines(d.stderr()).filter((l) => l.startsWith('tcpproxy:')).length).toBe(100);
    expect(new Set(logLines(d.stderr()).filter((l) => l.startsWith('tcpproxy:')))).toEqual(new Set([refusal]));
    await d.stop();
  });
});

describe('the pid file', () => {
  test('a symbolic link planted at the old predictable temporary name is not followed; the pid file is written and renamed', async () => {
    const up = await echoServer();
    const d = dir(0o755);
    const pidfile = path.join(d, 'tcpproxy.pid');
    const precious = file(dir(0o755), 'precious', 'precious\n', 0o600);
    const before = fs.statSync(precious);
    // The name the old code wrote through (name.PID.tmp), planted for the very pid it will run as: sh execs node.
    const wrapper = ['/bin/sh', '-c', 'ln -s -- "$PRECIOUS" "$PIDFILE.$$.tmp" && exec "$@"', 'sh'];
    const p = await startDaemon({
      args: ['-pp', pidfile, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`],
      env: { ...process.env, PRECIOUS: precious, PIDFILE: pidfile },
      wrapper,
      detached: false,
    });
    await until(() => fs.existsSync(pidfile), `${pidfile} to be written`, 5000);
    // The old code truncated the link's target and wrote the pid there, then renamed the link over the pid file.
    expect(fs.readFileSync(precious, 'utf8')).toBe('precious\n');
    const planted = `${pidfile}.${p.pid}.tmp`;
    expect(fs.readlinkSync(planted)).toBe(precious);
    expect(fs.statSync(precious)).toMatchObject({ size: before.size, mtimeMs: before.mtimeMs, mode: before.mode });
    const st = fs.lstatSync(pidfile);
    expect({ file: st.isFile(), mode: st.mode & 0o7777, uid: st.uid, text: fs.readFileSync(pidfile, 'utf8') }).toEqual({
      file: true,
      mode: 0o644,
      uid: 0,
      text: `${p.pid}\n`,
    });
    // Nothing else left beside it: the temporary file was renamed.
    expect(fs.readdirSync(d).sort()).toEqual([path.basename(planted), 'tcpproxy.pid'].sort());
    await p.stop();
    expect(fs.existsSync(pidfile)).toBe(false);
  });

  /**
   * writePidfile in this process, its random draws made `draws` (8 bytes each, as hex) in
   * turn; a link planted beforehand at `links[i]`'s temporary name points to `links[i]`'s target.
   */
  function pidfileWith(draws: readonly string[], links: readonly { draw: string; target: string }[]): { pidfile: string; d: string; error: string | null; drawn: number } {
    const d = dir(0o755);
    const pidfile = path.join(d, 'tcpproxy.pid');
    const tmpName = (draw: string): string => path.join(d, `.tcpproxy.pid.${draw}.tmp`);
    for (const l of links) fs.symlinkSync(l.target, tmpName(l.draw));
    let drawn = 0;
    const sizes: number[] = [];
    jest.mocked(crypto.randomBytes).mockImplementation(((n: number) => {
      sizes.push(n);
      return Buffer.from(draws[Math.min(drawn++, draws.length - 1)] ?? '', 'hex');
    }) as unknown as typeof crypto.randomBytes);
    let error: string | null = null;
    try {
      writePidfile(pidfile);
    } catch (err) {
      error = (err as Error).message;
    } finally {
      jest.mocked(crypto.randomBytes).mockImplementation(jest.requireActual<typeof crypto>('node:crypto').randomBytes);
    }
    // 8 random bytes a name: 2^64 names, none to guess.
    expect(sizes.every((n) => n === 8)).toBe(true);
    return { pidfile, d, error, drawn };
  }

  test('the temporary file is new (O_EXCL|O_NOFOLLOW): links at the names it draws, to a file or to no file, are neither followed nor replaced; it draws again', () => {
    const elsewhere = dir(0o755);
    const precious = file(elsewhere, 'precious', 'precious\n', 0o600);
    const before = fs.statSync(precious);
    // A dangling link: O_CREAT alone would create its target.
    const created = path.join(elsewhere, 'created');
    const [a, b, c] = ['00000000000000aa', '00000000000000bb', '00000000000000cc'];
    const r = pidfileWith([a, b, c], [
      { draw: a, target: precious },
      { draw: b, target: created },
    ]);
    expect({ error: r.error, drawn: r.drawn }).toEqual({ error: null, drawn: 3 });
    expect(fs.readFileSync(r.pidfile, 'utf8')).toBe(`${process.pid}\n`);
    expect(fs.lstatSync(r.pidfile).isFile()).toBe(true);
    expect(fs.readFileSync(precious, 'utf8')).toBe('precious\n');
    expect(fs.statSync(precious)).toMatchObject({ size: before.size, mtimeMs: before.mtimeMs, mode: before.mode });
    expect(fs.existsSync(created)).toBe(false);
    // The planted links are as they were; the third name became the pid file.
    expect(fs.readdirSync(r.d).sort()).toEqual([`.tcpproxy.pid.${a}.tmp`, `.tcpproxy.pid.${b}.tmp`, 'tcpproxy.pid']);
    expect([a, b].map((x) => fs.readlinkSync(path.join(r.d, `.tcpproxy.pid.${x}.tmp`)))).toEqual([precious, created]);
  });

  test('every name it draws taken (11 in a row): no pid file, EEXIST, nothing followed', () => {
    const elsewhere = dir(0o755);
    const precious = file(elsewhere, 'precious', 'precious\n', 0o600);
    const draws = Array.from({ length: 11 }, (_, i) => (i + 1).toString(16).padStart(16, '0'));
    const r = pidfileWith(draws, draws.map((draw) => ({ draw, target: precious })));
    expect({ error: r.error, drawn: r.drawn }).toEqual({ error: `pidfile ${r.pidfile}: EEXIST`, drawn: 11 });
    expect(fs.existsSync(r.pidfile)).toBe(false);
    expect(fs.readFileSync(precious, 'utf8')).toBe('precious\n');
    expect(fs.readdirSync(r.d)).toHaveLength(11);
  });

  test('a symbolic link or a FIFO planted at the pid file\'s name is replaced, never written through or blocked on', async () => {
    const up = await echoServer();
    const d = dir(0o755);
    const precious = file(dir(0o755), 'precious', 'precious\n', 0o600);
    const link = path.join(d, 'link.pid');
    fs.symlinkSync(precious, link);
    const fifo = path.join(d, 'fifo.pid');
    expect(await runToExit(['mkfifo', '-m', '600', fifo])).toMatchObject({ code: 0 });
    for (const pidfile of [link, fifo]) {
      const p = await startDaemon({ args: ['-pp', pidfile, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], detached: false });
      await until(() => fs.lstatSync(pidfile).isFile(), `${pidfile} to be replaced by a file`, 5000);
      expect(fs.readFileSync(pidfile, 'utf8')).toBe(`${p.pid}\n`);
      await p.stop();
    }
    expect(fs.readFileSync(precious, 'utf8')).toBe('precious\n');
  });
});

describe('root detected from the real, effective and saved user ids', () => {
  test('started with real uid 65534 and effective uid 0 (a set-user-ID wrapper): refused before any file is read, exit 1', async () => {
    const d = dir(0o755);
    const f = file(d, 'tcpproxy.conf', GOOD);
    const r = await runToExit(['setpriv', '--ruid', String(ATTACKER), '--euid', '0', '--', process.execPath, CLI, '-zz', '-f', f]);
    expect(r).toEqual({
      code: 1,
      signal: null,
      stdout: '',
      stderr: `tcpproxy: real user id ${ATTACKER}, effective 0, saved 0: refusing to run set-user-ID; start it as root or as the user itself\n`,
    });
    // The same command as root itself is served.
    expect(await runCli(['-z', '-f', f])).toMatchObject({ code: 0, stdout: '7001\n', stderr: '' });
  });

  test('mixed ids of /proc/PID/status texts', () => {
    const status = (uid: string, gid: string): string => `Name:\tnode\nUid:\t${uid}\nGid:\t${gid}\n`;
    expect(mixedIds(status('0\t0\t0\t0', '0\t0\t0\t0'))).toBeNull();
    expect(mixedIds(status('1000\t1000\t1000\t1000', '100\t100\t100\t100'))).toBeNull();
    // Root with other group ids: the drop sets every one of them.
    expect(mixedIds(status('0\t0\t0\t0', '100\t0\t0\t0'))).toBeNull();
    expect(mixedIds(status('1000\t0\t0\t0', '100\t100\t100\t100'))).toBe(
      'real user id 1000, effective 0, saved 0: refusing to run set-user-ID; start it as root or as the user itself',
    );
    expect(mixedIds(status('1000\t1000\t0\t1000', '100\t100\t100\t100'))).toBe(
      'real user id 1000, effective 1000, saved 0: refusing to run set-user-ID; start it as root or as the user itself',
    );
    expect(mixedIds(status('0\t1000\t1000\t1000', '0\t0\t0\t0'))).toBe(
      'real user id 0, effective 1000, saved 1000: refusing to run set-user-ID; start it as root or as the user itself',
    );
    expect(mixedIds(status('1000\t1000\t1000\t1000', '100\t6\t6\t6'))).toBe(
      "real group id 100, effective 6, saved 6: refusing to run set-group-ID; start it as root or with the user's own group",
    );
  });
});
