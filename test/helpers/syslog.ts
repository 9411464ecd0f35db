/**
 * The syslog side of test/privileged: the test owns the datagram socket
 * syslog(3) writes to. When /dev/log does not exist, a small python3 process
 * binds it there (Node has no AF_UNIX datagram sockets) and removes it
 * afterwards; when it exists (a syslog daemon owns it), the socket is bound
 * in a temporary directory and tcpproxy is started under `unshare -m` with it
 * bind-mounted over /dev/log (helpers/daemon startDaemon's `syslog`), so the
 * system's syslog is never touched. A machine-wide lock keeps concurrent
 * runs of these tests from owning /dev/log at once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEV_LOG } from './daemon';
import { signalPids } from './kill';
import { alive } from './proc';
import { until } from './until';

export { DEV_LOG };

// ------------------------------------------------------------------ syslog

/** One datagram as syslog(3) sends it: `<PRI>Mmm dd hh:mm:ss IDENT[PID]: MESSAGE`. */
export interface SyslogRecord {
  readonly raw: string;
  readonly priority: number;
  /** priority >> 3 (3 = daemon). */
  readonly facility: number;
  /** priority & 7 (3 = err, 4 = warning, 6 = info). */
  readonly severity: number;
  readonly time: string;
  readonly ident: string;
  /** null when the line carries no [PID]. */
  readonly pid: number | null;
  readonly message: string;
}

const SYSLOG_LINE = /^<(\d{1,3})>([A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d) ([^\s[:]+)(?:\[(\d+)\])?: (.*)$/s;

export function parseSyslog(raw: string): SyslogRecord | null {
  const m = SYSLOG_LINE.exec(raw.replace(/\n$/, ''));
  if (m === null) return null;
  const priority = Number(m[1]);
  return {
    raw,
    priority,
    facility: priority >> 3,
    severity: priority & 7,
    time: m[2] ?? '',
    ident: m[3] ?? '',
    pid: m[4] === undefined ? null : Number(m[4]),
    message: m[5] ?? '',
  };
}

/**
 * The receiving end, in python3: binds argv[1] (mode 0666, as syslog daemons
 * do, so that the unprivileged workers may send), prints `READY` then one
 * `MSG <datagram>` line per datagram (backslashes and newlines escaped),
 * flushed. Ends when its stdin closes, and then removes the socket file if it
 * is still the one it made.
 */
const SINK_PY = `
import os, select, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
try:
    s.bind(path)
except OSError as e:
    sys.stdout.write("ERROR %s\\n" % e.strerror)
    sys.stdout.flush()
    sys.exit(1)
ino = os.stat(path).st_ino
try:
    os.chmod(path, 0o666)
    out = bytearray(b"READY %d\\n" % ino)
    # Never stop reading the socket: with net.unix.max_dgram_qlen (often 10)
    # datagrams queued, every sender on the machine would block in syslog(3).
    # So stdout is non-blocking and what it cannot take yet waits here.
    os.set_blocking(1, False)
    while True:
        r, w, _ = select.select([s, 0], [1] if out else [], [])
        if 0 in r and not os.read(0, 4096):
            break
        if s in r:
            for _ in range(256):
                try:
                    d = s.recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                out += b"MSG " + d.replace(b"\\\\", b"\\\\\\\\").replace(b"\\n", b"\\\\n") + b"\\n"
        if 1 in w and out:
            try:
                n = os.write(1, out)
                del out[:n]
            except BlockingIOError:
                pass
finally:
    try:
        if os.stat(path).st_ino == ino:
            os.unlink(path)
    except OSError:
        pass
`;

function unescapeSink(text: string): string {
  return text.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
}

/** How tcpproxy reaches the sink: at /dev/log itself, or bind-mounted over it in a private mount namespace. */
export type SinkMode = 'dev-log' | 'bind-mount';

export class SyslogSink {
  readonly mode: SinkMode;
  /** The socket file the sink is bound to. */
  readonly socketPath: string;
  private readonly child: ChildProcess;
  private readonly tmpDir: string | null;
  private readonly inode: number;
  private release: () => void = () => {};
  private readonly datagrams: string[];
  private readonly parsed: SyslogRecord[] = [];
  private parsedUpTo = 0;
  private exited = false;

  private constructor(mode: SinkMode, socketPath: string, child: ChildProcess, inode: number, tmpDir: string | null, datagrams: string[]) {
    this.mode = mode;
    this.socketPath = socketPath;
    this.child = child;
    this.inode = inode;
    this.tmpDir = tmpDir;
    this.datagrams = datagrams;
    child.once('exit', () => {
      this.exited = true;
    });
  }

  /**
   * Opens a sink. `auto`: at /dev/log when that does not exist, else (or if
   * another process creates it first) a socket to bind-mount over it. An
   * `auto` sink first takes the machine-wide lock (see takeSyslogLock), held
   * until close(): /dev/log is one for the whole machine, and a concurrent
   * run of these tests that removed its own /dev/log would also detach our
   * bind mount over it. (Sinks opened by name are for use while an `auto`
   * one is open, and take no lock.)
   */
  static async open(want: SinkMode | 'auto' = 'auto', lockTimeoutMs = 120000): Promise<SyslogSink> {
    if (want !== 'auto') return SyslogSink.openUnlocked(want);
    const release = await takeSyslogLock(lockTimeoutMs);
    try {
      const sink = await SyslogSink.openUnlocked('auto');
      sink.release = release;
      return sink;
    } catch (err) {
      release();
      throw err;
    }
  }

  private static async openUnlocked(want: SinkMode | 'auto'): Promise<SyslogSink> {
    if (want !== 'bind-mount' && !fs.existsSync(DEV_LOG)) {
      try {
        return await SyslogSink.bindAt('dev-log', DEV_LOG, null);
      } catch (err) {
        if (want === 'dev-log' || !fs.existsSync(DEV_LOG)) throw err;
        // Someone else made /dev/log in between: fall through to the bind mount.
      }
    }
    if (want === 'dev-log') throw new Error(`${DEV_LOG} exists: cannot own it`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcpproxy-syslog-'));
    fs.chmodSync(dir, 0o755);
    try {
      return await SyslogSink.bindAt('bind-mount', path.join(dir, 'log'), dir);
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  private static async bindAt(mode: SinkMode, socketPath: string, tmpDir: string | null): Promise<SyslogSink> {
    const child = spawn('python3', ['-c', SINK_PY, socketPath], { stdio: ['pipe', 'pipe', 'pipe'] });
    const datagrams: string[] = [];
    let pending = '';
    let status = '';
    let err = '';
    let exited = false;
    child.on('error', (e) => {
      err += `spawn python3: ${e.message}\n`;
      exited = true;
    });
    child.once('exit', () => {
      exited = true;
    });
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.stdout?.setEncoding('utf8').on('data', (s: string) => {
      pending += s;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const l of lines) {
        if (l.startsWith('MSG ')) datagrams.push(unescapeSink(l.slice(4)));
        else status = l;
      }
    });
    try {
      await until(() => status !== '' || exited, `the syslog sink to bind ${socketPath}`, 10000);
    } catch (e) {
      if (child.pid !== undefined) signalPids([child.pid]);
      throw e;
    }
    const ready = /^READY (\d+)$/.exec(status);
    if (ready === null) {
      if (child.pid !== undefined && !exited) signalPids([child.pid]);
      throw new Error(`syslog sink could not bind ${socketPath}: ${status || err || 'it exited'}`);
    }
    return new SyslogSink(mode, socketPath, child, Number(ready[1]), tmpDir, datagrams);
  }

  /** Every datagram received so far, as sent. */
  raw(): readonly string[] {
    return this.datagrams;
  }

  /**
   * Every datagram received so far that parses as a syslog line. Parsed once
   * each: while the sink owns /dev/log, every process on the machine logs
   * into it (another test run's daemons, a benchmark), possibly a lot.
   */
  records(): readonly SyslogRecord[] {
    for (; this.parsedUpTo < this.datagrams.length; this.parsedUpTo++) {
      const r = parseSyslog(this.datagrams[this.parsedUpTo] ?? '');
      if (r !== null) this.parsed.push(r);
    }
    return this.parsed;
  }

  /** Waits for a record matching `pred` (already received or still to come) and returns the first one. */
  async waitFor(pred: (r: SyslogRecord) => boolean, what: string, timeoutMs = 10000): Promise<SyslogRecord> {
    let found: SyslogRecord | undefined;
    let next = 0;
    const look = (): boolean => {
      const all = this.records();
      for (; next < all.length && found === undefined; next++) {
        const r = all[next] as SyslogRecord;
        if (pred(r)) found = r;
      }
      return found !== undefined;
    };
    try {
      await until(look, `syslog record: ${what}`, timeoutMs);
    } catch (e) {
      throw new Error(`${(e as Error).message}; the last of ${this.datagrams.length} datagrams received:\n${this.datagrams.slice(-20).join('\n')}`);
    }
    return found as SyslogRecord;
  }

  /**
   * Stalls the sink (SIGSTOP): it stops reading, its socket's queue fills,
   * as with a syslog daemon that hangs. resume() lets it read again.
   */
  pause(): void {
    this.child.kill('SIGSTOP');
  }

  resume(): void {
    this.child.kill('SIGCONT');
  }

  /** Stops the sink (which removes its socket file) and cleans up. */
  async close(): Promise<void> {
    this.resume();
    if (!this.exited) {
      this.child.stdin?.end();
      try {
        await until(() => this.exited, 'the syslog sink to exit', 5000);
      } catch {
        if (this.child.pid !== undefined) signalPids([this.child.pid]);
        await until(() => this.exited, 'the syslog sink to die', 5000);
      }
    }
    // If it could not remove its socket, do it here, but only if it is still ours.
    try {
      if (fs.statSync(this.socketPath).ino === this.inode) fs.unlinkSync(this.socketPath);
    } catch {
      // gone already
    }
    if (this.tmpDir !== null) fs.rmSync(this.tmpDir, { recursive: true, force: true });
    this.release();
    this.release = (): void => {};
  }
}

/** The machine-wide lock of the syslog tests: a directory made atomically, holding the owner's pid. */
export const SYSLOG_LOCK = '/tmp/tcpproxy-test-syslog.lock';

function lockOwner(): number | null {
  try {
    const pid = Number(fs.readFileSync(path.join(SYSLOG_LOCK, 'pid'), 'utf8'));
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** mtime of the lock directory (ms since the epoch), or now if it is gone. */
function lockAge(): number {
  try {
    return fs.statSync(SYSLOG_LOCK).mtimeMs;
  } catch {
    return Date.now();
  }
}

/**
 * Takes SYSLOG_LOCK, waiting (polling, bounded) while another live process
 * holds it; a lock whose owner is gone is taken over. Returns the release.
 */
export async function takeSyslogLock(timeoutMs: number): Promise<() => void> {
  const mine = path.join(SYSLOG_LOCK, 'pid');
  const tryTake = (): boolean => {
    try {
      fs.mkdirSync(SYSLOG_LOCK, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = lockOwner();
      // No pid yet: its owner is between mkdir and write (or died there, if that was long ago).
      const stale = owner === null ? Date.now() - lockAge() > 10000 : !alive(owner);
      if (stale) fs.rmSync(SYSLOG_LOCK, { recursive: true, force: true });
      return false;
    }
    fs.writeFileSync(mine, String(process.pid));
    return true;
  };
  await until(tryTake, () => `the syslog test lock ${SYSLOG_LOCK} (held by pid ${lockOwner() ?? '?'})`, timeoutMs);
  return () => {
    if (lockOwner() === process.pid) fs.rmSync(SYSLOG_LOCK, { recursive: true, force: true });
  };
}
