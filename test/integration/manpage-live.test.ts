/**
 * The man page against a run of the code: the messages it quotes, as the
 * code prints them when it is made to fail for real (main() refusing to
 * start, a bind failure, a live pidfile), and its lint status under mandoc
 * and groff. (test/unit/manpage.test.ts compares the page with the code
 * without running anything.)
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { DEFAULT_PIDFILE } from '../../src/table/cli';
import { StartError } from '../../src/sys/errors';
import { EXIT_FAILURE, EXIT_USAGE } from '../../src/sys/exit-codes';
import { stdinIsConnection } from '../../src/modes/inetd';
import { bindListeners, closeListeners } from '../../src/modes/listener';
import { main } from '../../src/main';
import { checkPidfile, removePidfile, writePidfile } from '../../src/modes/pidfile';
import { killLaunched, launch } from '../helpers/daemon';
import { examples, PAGE_FILE, render, section, withTempDir } from '../helpers/manpage';

afterEach(() => killLaunched());

describe('man/tcpproxy.1: the messages it quotes, from a run', () => {
  // main() must not see a real connection on fd 0 here: it would serve it (and take over fd 2).
  const itMain = stdinIsConnection() ? it.skip : it;

  itMain('quotes the messages of rule 4 as main() prints them, with exit status 2', async () => {
    const modes = render(section('MODES'));
    const run = async (argv: string[]): Promise<{ status: number; stderr: string }> => {
      let stderr = '';
      const status = await main(argv, { stdout: () => {}, stderr: (t) => (stderr += t) });
      return { status, stderr };
    };
    const arg = await run(['127.0.0.1:7']);
    expect(arg.status).toBe(EXIT_USAGE);
    expect(modes).toContain(`"${arg.stderr.trim().replace(/^tcpproxy: /, '')}"`);

    await withTempDir(async (dir) => {
      const file = path.join(dir, 'standalone-no.conf');
      fs.writeFileSync(file, 'standalone no\nport 7\n    server 127.0.0.1:7\n', { mode: 0o600 });
      const conf = await run(['-f', file]);
      expect(conf.status).toBe(EXIT_USAGE);
      expect(modes).toContain(`"${conf.stderr.trim().replace(file, 'FILE')}"`);
    });
  });

  it('quotes a bind failure at start as bindListeners reports it', async () => {
    const modes = section('MODES');
    const quoted = examples(modes.slice(modes.indexOf('.SS Standalone'), modes.indexOf('.SS inetd mode')));
    expect(quoted).toEqual(['tcpproxy: cannot listen on 192.0.2.1:25: EADDRINUSE (address already in use)']);
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen({ host: '127.0.0.1', port: 0 }, resolve));
    try {
      const port = (busy.address() as net.AddressInfo).port;
      let err: unknown = null;
      try {
        closeListeners(bindListeners([{ iface: '127.0.0.1', port }]));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(StartError);
      expect(`tcpproxy: ${(err as StartError).message}`.replace(`127.0.0.1:${port}`, '192.0.2.1:25')).toBe(quoted[0]);
      expect((err as StartError).exitCode).toBe(EXIT_FAILURE);
    } finally {
      busy.close();
    }
  });

  it('documents the pid file as src/modes/pidfile.ts keeps it: refused when live, stale replaced, removed only when ours', async () => {
    const text = render(section('PIDFILE'));
    expect(text).toContain(`With -p, the standalone daemon writes its process id in decimal, followed by a newline, to ${DEFAULT_PIDFILE}`);
    for (const t of ['Before it binds any port', 'is stale and is replaced', 'Once every port is bound', 'with mode 0644', 'renamed', 'provided the file still holds its id']) {
      expect(text).toContain(t);
    }
    expect(text).toContain(`kill -TERM $(cat ${DEFAULT_PIDFILE})`);
    const quoted = examples(section('PIDFILE'))
      .flatMap((b) => b.split('\n'))
      .filter((l) => l.includes('already running'));
    expect(quoted).toEqual([`tcpproxy: pidfile ${DEFAULT_PIDFILE}: tcpproxy is already running as pid 4711`]);
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'tcpproxy.pid');
      // A live tcpproxy (a process whose command line names it) in the file:
      // refused with the documented message and status 1.
      const fake = path.join(dir, 'tcpproxy.js');
      fs.writeFileSync(fake, 'setInterval(() => {}, 1000);\n');
      const live = launch([process.execPath, fake], { stdio: ['ignore', 'ignore', 'ignore'] });
      const livePid = live.pid;
      try {
        fs.writeFileSync(file, `${livePid}\n`);
        let err: unknown = null;
        try {
          checkPidfile(file);
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(StartError);
        expect((err as StartError).exitCode).toBe(EXIT_FAILURE);
        expect(`tcpproxy: ${(err as StartError).message}`.replace(file, DEFAULT_PIDFILE).replace(String(livePid), '4711')).toBe(quoted[0]);
        // Not ours: left alone at exit.
        removePidfile(file);
        expect(fs.readFileSync(file, 'utf8')).toBe(`${livePid}\n`);
      } finally {
        live.kill();
        fs.rmSync(fake);
      }
      // A live process that is not a tcpproxy (jest's parent): the file is stale.
      fs.writeFileSync(file, `${process.ppid}\n`);
      expect(() => checkPidfile(file)).not.toThrow();
      // Stale (a process that has exited, or no number at all): replaced by our id.
      const gone = launch(['true']);
      await gone.exited;
      for (const stale of [`${gone.pid}\n`, 'garbage\n']) {
        fs.writeFileSync(file, stale);
        expect(() => checkPidfile(file)).not.toThrow();
        writePidfile(file);
        expect(fs.readFileSync(file, 'utf8')).toBe(`${process.pid}\n`);
        expect(fs.statSync(file).mode & 0o777 & ~0o644).toBe(0);
        expect(fs.readdirSync(dir)).toEqual(['tcpproxy.pid']);
        removePidfile(file);
        expect(fs.existsSync(file)).toBe(false);
      }
    });
  });
});

describe('man/tcpproxy.1: lint', () => {
  const have = (cmd: string, args: string[]): boolean => spawnSync(cmd, args, { stdio: 'ignore' }).error === undefined;
  // In CI mandoc is a prerequisite (.ci/run installs it): a missing one fails the test there.
  const itMandoc = process.env['CI'] === 'true' || have('mandoc', ['-Tlint', '/dev/null']) ? it : it.skip;
  const itGroff = have('groff', ['-v']) ? it : it.skip;

  itMandoc('is clean under mandoc -Tlint -W warning', () => {
    const r = spawnSync('mandoc', ['-Tlint', '-W', 'warning', PAGE_FILE], { encoding: 'utf8' });
    expect(r.error).toBeUndefined();
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(r.status).toBe(0);
  });

  itGroff('is clean under groff -man -ww -z', () => {
    const r = spawnSync('groff', ['-man', '-ww', '-z', PAGE_FILE], { encoding: 'utf8' });
    expect(r.error).toBeUndefined();
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(r.status).toBe(0);
  });
});

