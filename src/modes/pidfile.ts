/**
 * The pidfile (`-p`): written after every port is bound, holding the
 * master's pid; removed at exit. A file naming a running process is an
 * error (another tcpproxy holds it); a stale one is replaced.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StartError } from '../sys/errors';

/** More than any pid file holds: a larger file is not ours. */
const MAX_PIDFILE_BYTES = 64;

/**
 * The text of the pid file, never following a symbolic link or blocking on a
 * FIFO someone put in its place (a link, a FIFO or a device reads as
 * empty); throws the Node error of the open (ENOENT when there is none).
 */
function readPidfile(file: string): string {
  const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY } = fs.constants;
  let fd: number;
  try {
    fd = fs.openSync(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') return '';
    throw err;
  }
  try {
    if (!fs.fstatSync(fd).isFile()) return '';
    const buf = Buffer.alloc(MAX_PIDFILE_BYTES);
    return buf.subarray(0, fs.readSync(fd, buf, 0, buf.length, 0)).toString('latin1');
  } finally {
    fs.closeSync(fd);
  }
}

/** True when `pid` runs a tcpproxy: one of its first two arguments is a file named tcpproxy or tcpproxy.js. */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').slice(0, 2);
    // A running master shows its process title (`tcpproxy: master ...`); one still starting, its argv.
    return (args[0] ?? '').startsWith('tcpproxy: master') || args.some((a) => /(^|\/)tcpproxy(\.js)?$/.test(a));
  } catch {
    return true;
  }
}

/** Throws when the pidfile names another running process (checked again when writing). */
/** `allow`: a running pid the file may name (the master an upgrade replaces). */
export function checkPidfile(file: string, allow: number | null = null): void {
  let old = '';
  try {
    old = readPidfile(file);
  } catch {
    return;
  }
  const pid = Number.parseInt(old.trim(), 10);
  if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pid !== allow && running(pid)) {
    throw new StartError(`pidfile ${file}: tcpproxy is already running as pid ${pid}`);
  }
}

export function writePidfile(file: string, allow: number | null = null): void {
  let old = '';
  try {
    old = readPidfile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new StartError(`pidfile ${file}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
    }
  }
  const pid = Number.parseInt(old.trim(), 10);
  if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pid !== allow && running(pid)) {
    throw new StartError(`pidfile ${file}: tcpproxy is already running as pid ${pid}`);
  }
  // Write beside it and rename: a reader never sees a half-written file. The
  // temporary name is random and created O_EXCL|O_NOFOLLOW, so nothing
  // planted in the directory (a link to /etc/shadow) is followed or
  // truncated, and rename replaces a link at the pid file's name rather than
  // writing through it.
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NOCTTY } = fs.constants;
  let tmp = '';
  let fd = -1;
  try {
    for (let tries = 0; fd < 0; tries++) {
      tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(8).toString('hex')}.tmp`);
      try {
        fd = fs.openSync(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY, 0o644);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || tries >= 10) throw err;
      }
    }
  } catch (err) {
    throw new StartError(`pidfile ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    try {
      // Whatever the umask: the pid file is for everyone to read.
      fs.fchmodSync(fd, 0o644);
      fs.writeSync(fd, `${process.pid}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw new StartError(`pidfile ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** Removes the pidfile if it still names this process. */
/** Removes the pid file if it names `pid` (this process, or a new master it gave up). */
export function removePidfile(file: string, pid = process.pid): void {
  try {
    if (Number.parseInt(readPidfile(file).trim(), 10) === pid) fs.rmSync(file);
  } catch {
    // Already gone: nothing to do.
  }
}
