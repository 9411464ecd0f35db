/**
 * The pidfile (`-p`): written after every port is bound, holding the
 * master's pid; removed at exit. A file naming a running process is an
 * error (another tcpproxy holds it); a stale one is replaced.
 */
import * as fs from 'node:fs';
import { StartError } from '../sys/errors';

/** True when `pid` runs a tcpproxy: one of its first two arguments is a file named tcpproxy or tcpproxy.js. */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').slice(0, 2);
    return args.some((a) => /(^|\/)tcpproxy(\.js)?$/.test(a));
  } catch {
    return true;
  }
}

/** Throws when the pidfile names another running process (checked again when writing). */
export function checkPidfile(file: string): void {
  let old = '';
  try {
    old = fs.readFileSync(file, 'utf8');
  } catch {
    return;
  }
  const pid = Number.parseInt(old.trim(), 10);
  if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && running(pid)) {
    throw new StartError(`pidfile ${file}: tcpproxy is already running as pid ${pid}`);
  }
}

export function writePidfile(file: string): void {
  let old = '';
  try {
    old = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new StartError(`pidfile ${file}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
    }
  }
  const pid = Number.parseInt(old.trim(), 10);
  if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && running(pid)) {
    throw new StartError(`pidfile ${file}: tcpproxy is already running as pid ${pid}`);
  }
  // Write beside it and rename: a reader never sees a half-written file.
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, `${process.pid}\n`, { mode: 0o644, flag: 'w' });
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw new StartError(`pidfile ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** Removes the pidfile if it still names this process. */
export function removePidfile(file: string): void {
  try {
    if (Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10) === process.pid) fs.rmSync(file);
  } catch {
    // Already gone: nothing to do.
  }
}
