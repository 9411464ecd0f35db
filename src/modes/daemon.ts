/**
 * Detaching (standalone mode without -D): the command starts itself again
 * as a new session leader with stdin, stdout and stderr on /dev/null and the
 * same working directory, and exits only when the daemon reports on a pipe
 * (fd 3) that every port is bound, or with the daemon's start error.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { EXIT_FAILURE, EXIT_OK } from '../sys/exit-codes';

const READY_FD_VAR = 'TCPPROXY_READY_FD';

/** Starts the daemon copy of this command and waits for its report. */
export function detach(argv: readonly string[], stderr: (text: string) => void): Promise<number> {
  return new Promise((resolve) => {
    const script = process.argv[1] ?? '';
    const child = spawn(process.execPath, [...process.execArgv, script, ...argv], {
      detached: true, // setsid(): no controlling terminal
      stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
      env: { ...process.env, [READY_FD_VAR]: '3' },
    });
    let report = '';
    const pipe = child.stdio[3];
    pipe?.on('data', (chunk: Buffer) => {
      report += chunk.toString('utf8');
    });
    const finish = (): void => {
      if (report.startsWith('ready')) {
        child.unref();
        (pipe as { unref?: () => void } | null)?.unref?.();
        resolve(EXIT_OK);
        return;
      }
      const m = /^exit (\d+)\n([\s\S]*)$/.exec(report);
      stderr(m ? (m[2] ?? '') : `tcpproxy: the daemon ended before it was ready\n`);
      resolve(m ? Number(m[1]) : EXIT_FAILURE);
    };
    pipe?.on('end', finish);
    child.on('error', (err) => {
      stderr(`tcpproxy: cannot start the daemon: ${err.message}\n`);
      resolve(EXIT_FAILURE);
    });
  });
}

/** In the daemon: the fd to report readiness on (and forget it, so handlers do not see it). */
export function takeReadyFd(): number | null {
  const v = process.env[READY_FD_VAR];
  delete process.env[READY_FD_VAR];
  return v === '3' ? 3 : null;
}

/** Tells the waiting parent: `ready`, or the exit status and message it should show. */
export function report(fd: number, outcome: { ok: true } | { ok: false; code: number; message: string }): void {
  try {
    fs.writeSync(fd, outcome.ok ? 'ready\n' : `exit ${outcome.code}\n${outcome.message}\n`);
    fs.closeSync(fd);
  } catch {
    // The parent is gone: nobody to tell.
  }
}
