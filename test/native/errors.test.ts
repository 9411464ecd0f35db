// The error shape of every native primitive, pinned at the JS boundary with
// real failures: a SysError naming the call that failed and the errno it
// returned (code, syscall, errno), a PrivilegeCheckError where every call
// succeeded but the result is wrong, and nothing invented. Failures that
// would change or wreck the test process (a privilege drop, execve, a full fd
// table) run in a child (helpers/native-child.cjs, on the built dist/) under
// a smaller capability set (setpriv), in a user namespace (unshare) or with
// a low fd limit (prlimit). Runs as root, as in CI.
//
// Primitives without a failure to pin: cloexecFrom (close_range(first, ~0U,
// CLOSE_RANGE_CLOEXEC) cannot fail for first >= 3, and its per-fd fallback
// only touches open fds), openLog and syslog (syslog(3) reports nothing),
// pumpStats and init; sockName answers null, not an error, for what is not
// an IP socket. Their argument checks are TypeErrors, never SysErrors.
import { spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import { constants } from 'node:os';
import * as path from 'node:path';
import { SysError } from '../../src/sys/errors';
import { addonPath, native, type Addon, type PumpHandle, type PumpRequest, type PumpResult } from '../../src/sys/native';
import { killLaunched, launch, ROOT, runToExit } from '../helpers/daemon';
import { unusableByOthers } from '../helpers/fixtures';
import { useTempDir } from '../helpers/setup';
import { PumpRig, fdSnapshot } from './helpers/pump-rig';

const addon: Addon = native();
/**
 * helpers/native-child.cjs and what it loads (dist/src/sys/native.js,
 * errors.js, the addon), where an unprivileged child can read them: the
 * tree itself, or a copy in the same layout when the checkout lies below a
 * directory others cannot search (root's home, a private temp dir).
 */
let CHILD = '';
let childCopy: string | null = null;
beforeAll(() => {
  const inTree = path.join(__dirname, 'helpers', 'native-child.cjs');
  if (unusableByOthers(ROOT) === null) {
    CHILD = inTree;
    return;
  }
  childCopy = fs.mkdtempSync(path.join(os.tmpdir(), 'tcpproxy-native-child-'));
  fs.chmodSync(childCopy, 0o755);
  const files = [
    path.join('test', 'native', 'helpers', 'native-child.cjs'),
    path.join('dist', 'src', 'sys', 'native.js'),
    path.join('dist', 'src', 'sys', 'errors.js'),
    path.relative(ROOT, addonPath()),
  ];
  for (const f of files) {
    fs.mkdirSync(path.dirname(path.join(childCopy, f)), { recursive: true, mode: 0o755 });
    fs.copyFileSync(path.join(ROOT, f), path.join(childCopy, f));
    fs.chmodSync(path.join(childCopy, f), 0o755);
  }
  for (let d = path.dirname(path.join(childCopy, files[0] ?? '')); d !== childCopy; d = path.dirname(d)) fs.chmodSync(d, 0o755);
  CHILD = path.join(childCopy, files[0] ?? '');
});
afterAll(() => {
  if (childCopy !== null) fs.rmSync(childCopy, { recursive: true, force: true });
});
const HOST = '127.0.0.1';
/** Above any fd limit: EBADF for sure, and no open fd is touched. */
const BAD_FD = 2 ** 31 - 1;
const CHILD_TIMEOUT_MS = 20000;

type ErrnoName = keyof typeof constants.errno;

/** A SysError for `syscall` failing with `code`, as a jest matcher object. */
function sysError(syscall: string, code: ErrnoName): Record<string, unknown> {
  const errno = constants.errno[code];
  return { name: 'SysError', syscall, code, errno: -errno, message: `${syscall} ${code}` };
}

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('did not throw');
}

/** The addon's TypeError comes from Node's realm, not jest's sandbox: match the name. */
const typeError = expect.objectContaining({ name: 'TypeError' });

function expectSysError(e: unknown, syscall: string, code: ErrnoName): void {
  expect(e).toBeInstanceOf(SysError);
  expect(e).toMatchObject(sysError(syscall, code));
}

/** What helpers/native-child.cjs printed: a thrown error's fields, or a pump result. */
type ChildReport = Record<string, unknown>;

function parseReport(out: { stdout: string; stderr: string; code: number | null }): ChildReport {
  const line = out.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as ChildReport;
  } catch {
    throw new Error(`the child printed no report (exit ${out.code}): ${out.stdout}\n${out.stderr}`);
  }
}

/** Runs helpers/native-child.cjs with `args`, started through `wrapper` (setpriv, prlimit, ...). */
async function inChild(wrapper: readonly string[], args: readonly string[]): Promise<ChildReport> {
  const [cmd, ...rest] = [...wrapper, process.execPath, CHILD, ...args] as [string, ...string[]];
  return parseReport(await runToExit([cmd, ...rest], { cwd: ROOT, timeoutMs: CHILD_TIMEOUT_MS }));
}

/** A child's SysError, which fails `instanceof` here (another realm) but not in the child. */
function childSysError(syscall: string, code: ErrnoName): Record<string, unknown> {
  return { threw: true, isSysError: true, ...sysError(syscall, code) };
}

/**
 * dropPrivileges(uid, gid) in a new user namespace in which unshare maps uid
 * 0 (so the child keeps its capabilities there) and this process, once the
 * child runs, maps the groups of `gidMap` ("inside outside count"). An id
 * without a mapping is one setresuid/setresgid refuses with EINVAL.
 */
async function dropInUserNamespace(gidMap: string, uid: number, gid: number): Promise<ChildReport> {
  const launched = launch(
    ['unshare', '--user', '--map-user=0', '--', 'sh', '-c', 'echo ready; read go; exec "$0" "$@"', process.execPath, CHILD, 'drop', `${uid}`, `${gid}`],
    { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'], keepOutput: false },
  );
  const child = launched.child as ChildProcessWithoutNullStreams;
  let stdout = '';
  let stderr = '';
  let mapped = false;
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    stdout += s;
    if (mapped || !stdout.startsWith('ready\n')) return;
    mapped = true;
    try {
      fs.writeFileSync(`/proc/${child.pid}/gid_map`, `${gidMap}\n`);
    } catch (e) {
      stderr += `writing the gid map: ${(e as Error).message}\n`;
    }
    child.stdin.end('go\n');
  });
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => {
      launched.kill();
      stderr += `[killed after ${CHILD_TIMEOUT_MS} ms]`;
    }, CHILD_TIMEOUT_MS);
    child.on('error', (e) => (stderr += `spawn failed: ${e.message}\n`));
    child.on('close', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  return parseReport({ stdout: stdout.replace(/^ready\n/, ''), stderr, code });
}

afterEach(() => killLaunched());

beforeAll(() => {
  if (process.getuid?.() !== 0) throw new Error('test/native/errors.test.ts must run as root (as in CI)');
  const built = path.join(ROOT, 'dist', 'src', 'sys', 'native.js');
  if (!fs.existsSync(built)) throw new Error(`${built} is missing: build it with "npx tsc -p tsconfig.build.json"`);
});

const tmp = useTempDir('tcpproxy-native-errors-');

describe('fd primitives', () => {
  test('dupCloexec: fcntl EBADF for a fd that is not open', () => {
    expectSysError(thrown(() => addon.dupCloexec(BAD_FD)), 'fcntl', 'EBADF');
  });

  test('dupCloexec: fcntl EMFILE when the fd table is full (prlimit --nofile, in a child)', async () => {
    const r = await inChild(['prlimit', '--nofile=200:200'], ['dup-until-full']);
    expect(r).toMatchObject(childSysError('fcntl', 'EMFILE'));
    expect(r['count']).toBeGreaterThan(0);
  });

  test('close: close EBADF for a fd that is not open; stdio is refused with a TypeError', () => {
    expectSysError(thrown(() => addon.close(BAD_FD)), 'close', 'EBADF');
    expect(() => addon.close(2)).toThrow(typeError);
  });

  test('setNonblock: fcntl EBADF for a fd that is not open', () => {
    expectSysError(thrown(() => addon.setNonblock(BAD_FD)), 'fcntl', 'EBADF');
  });

  test('dupOnto: dup2 EBADF for a fd that is not open, and stdin stays what it was', () => {
    const before = fs.fstatSync(0);
    expectSysError(thrown(() => addon.dupOnto(BAD_FD, 0)), 'dup2', 'EBADF');
    const after = fs.fstatSync(0);
    expect({ dev: after.dev, ino: after.ino }).toEqual({ dev: before.dev, ino: before.ino });
    expect(() => addon.dupOnto(BAD_FD, 3)).toThrow(typeError);
  });

  test('sockName: null, not an error, for a closed fd, a file and a unix socket', async () => {
    expect(addon.sockName(BAD_FD)).toBeNull(); // getsockname EBADF
    const file = fs.openSync(__filename, 'r');
    try {
      expect(addon.sockName(file)).toBeNull(); // getsockname ENOTSOCK
    } finally {
      fs.closeSync(file);
    }
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(path.join(tmp.path, 'unix.sock'), resolve));
    try {
      const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
      expect(addon.sockName(fd)).toBeNull(); // AF_UNIX: no address and port
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test('cloexecFrom: no failure to provoke (see the top of this file); first below 3 is a TypeError', () => {
    expect(addon.cloexecFrom(BAD_FD)).toBeUndefined();
    expect(() => addon.cloexecFrom(2)).toThrow(typeError);
  });
});

describe('openLog and syslog', () => {
  test('syslog(3) reports no failure: only the arguments are checked, with TypeErrors', () => {
    expect(() => addon.openLog(1 as unknown as string, 3 << 3)).toThrow(typeError);
    expect(() => addon.openLog('tcpproxy-test', 'daemon' as unknown as number)).toThrow(typeError);
    expect(() => addon.syslog(6, 5 as unknown as string)).toThrow(typeError);
  });
});

describe('dropPrivileges (in a child)', () => {
  const NOBODY = 65534;
  const drop = (wrapper: readonly string[], uid = NOBODY, gid = NOBODY): Promise<ChildReport> =>
    inChild(wrapper, ['drop', `${uid}`, `${gid}`]);
  // Root's capabilities after exec are its bounding set (and the inheritable
  // set, emptied here so nothing comes back that way).
  const without = (cap: string): string[] => ['setpriv', `--bounding-set=-${cap}`, '--inh-caps=-all'];

  test('it succeeds with the capabilities root has', async () => {
    expect(await drop([])).toEqual({ threw: false, value: null });
  });

  test('setgroups EPERM without CAP_SETGID', async () => {
    expect(await drop(without('setgid'))).toMatchObject(childSysError('setgroups', 'EPERM'));
  });

  test('setresgid EINVAL for a group id the user namespace does not map', async () => {
    expect(await dropInUserNamespace('0 0 1', NOBODY, NOBODY)).toMatchObject(childSysError('setresgid', 'EINVAL'));
  });

  test('setresuid EPERM without CAP_SETUID', async () => {
    expect(await drop(without('setuid'))).toMatchObject(childSysError('setresuid', 'EPERM'));
  });

  test('setresuid EINVAL for a user id the user namespace does not map', async () => {
    expect(await dropInUserNamespace('0 0 65536', NOBODY, NOBODY)).toMatchObject(childSysError('setresuid', 'EINVAL'));
  });

  const check = (name: string, observed: number[]): Record<string, unknown> => ({
    threw: true,
    name: 'PrivilegeCheckError',
    isPrivilegeCheckError: true,
    isSysError: false,
    check: name,
    observed,
  });

  test('every call succeeds but the capabilities survive (no_setuid_fixup): regain-uid, no errno', async () => {
    expect(await drop(['setpriv', '--securebits=+no_setuid_fixup'])).toMatchObject(check('regain-uid', []));
  });

  test('CAP_SETGID kept by an unprivileged caller: regain-gid, no errno', async () => {
    const keepSetgid = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--inh-caps=+setgid', '--ambient-caps=+setgid'];
    expect(await drop(keepSetgid)).toMatchObject(check('regain-gid', []));
  });

  test('an id of -1 leaves the ids as they were (setres*id\'s "unchanged"): the uids or gids check', async () => {
    expect(await drop([], 2 ** 32 - 1, NOBODY)).toMatchObject(check('uids', [0, 0, 0]));
    expect(await drop([], NOBODY, 2 ** 32 - 1)).toMatchObject(check('gids', [0, 0, 0]));
  });
});

describe('execve (in a child)', () => {
  const file = (name: string): string => path.join(tmp.path, name);
  beforeAll(() => {
    const write = (name: string, text: string, mode: number): void => {
      fs.writeFileSync(file(name), text);
      fs.chmodSync(file(name), mode);
    };
    write('not-executable', '#!/bin/sh\nexit 0\n', 0o644);
    write('garbage', 'neither ELF nor #!\n', 0o755);
    write('no-interpreter', '#!/nonexistent/interpreter\n', 0o755);
    write('busy', '#!/bin/sh\nexit 0\n', 0o755);
    fs.mkdirSync(file('directory'));
  });
  const execve = (f: string): Promise<ChildReport> => inChild([], ['execve', f]);

  test.each([
    ['a missing file', 'ENOENT', 'missing'],
    ['a script whose #! interpreter is missing', 'ENOENT', 'no-interpreter'],
    ['a file without an execute bit (root needs one too)', 'EACCES', 'not-executable'],
    ['a directory', 'EACCES', 'directory'],
    ['a file that is neither ELF nor a script', 'ENOEXEC', 'garbage'],
    ['a path through a regular file', 'ENOTDIR', 'garbage/x'],
  ] as const)('%s: execve %s', async (_what, code, name) => {
    expect(await execve(file(name))).toMatchObject(childSysError('execve', code));
  });

  test('a file open for writing: execve ETXTBSY', async () => {
    const writer = fs.openSync(file('busy'), 'r+');
    try {
      expect(await execve(file('busy'))).toMatchObject(childSysError('execve', 'ETXTBSY'));
    } finally {
      fs.closeSync(writer);
    }
  });
});

describe('spawnChild', () => {
  // The child's exec fails after the clone: its errno comes back as `spawn`,
  // the child is reaped at once, and nothing is left behind.
  const file = (name: string): string => path.join(tmp.path, `spawn-${name}`);
  const SANDBOX = { noNewPrivs: true, rlimitNproc: null, rlimitAs: null, rlimitCpu: null, rlimitNofile: null };
  beforeAll(() => {
    const write = (name: string, text: string, mode: number): void => {
      fs.writeFileSync(file(name), text);
      fs.chmodSync(file(name), mode);
    };
    write('not-executable', '#!/bin/sh\nexit 0\n', 0o644);
    write('garbage', 'neither ELF nor #!\n', 0o755);
    write('busy', '#!/bin/sh\nexit 0\n', 0o755);
  });
  const spawn = (f: string, sandbox: unknown = SANDBOX): unknown =>
    thrown(() => addon.spawnChild(f, [f], [], -1, -1, sandbox as typeof SANDBOX, () => {}));
  const children = (): string[] => fs.readFileSync(`/proc/self/task/${process.pid}/children`, 'utf8').trim().split(/\s+/).filter((p) => p !== '');

  test.each([
    ['a missing file', 'ENOENT', 'missing'],
    ['a file without an execute bit', 'EACCES', 'not-executable'],
    ['a file that is neither ELF nor a script', 'ENOEXEC', 'garbage'],
  ] as const)('%s: spawn %s, and no child is left', (_what, code, name) => {
    const before = children();
    expectSysError(spawn(file(name)), 'spawn', code);
    expect(children()).toEqual(before);
  });

  test('a file open for writing: spawn ETXTBSY', () => {
    const writer = fs.openSync(file('busy'), 'r+');
    try {
      expectSysError(spawn(file('busy')), 'spawn', 'ETXTBSY');
    } finally {
      fs.closeSync(writer);
    }
  });

  test('a sandbox that is not one is a TypeError, before anything starts', () => {
    for (const bad of [null, {}, { ...SANDBOX, noNewPrivs: 'yes' }, { ...SANDBOX, rlimitAs: 0 }, { ...SANDBOX, rlimitCpu: 1.5 }, { ...SANDBOX, rlimitNofile: '64' }]) {
      const e = spawn('/bin/true', bad);
      // The addon's TypeError comes from another realm than jest's: compared by name.
      expect(e).not.toBeInstanceOf(SysError);
      expect((e as Error).name).toBe('TypeError');
      expect((e as Error).message).toMatch(/^(sandbox must be \{ noNewPrivs, rlimitNproc, rlimitAs, rlimitCpu, rlimitNofile \}|sandbox: a limit must be a whole number from 1 up)$/);
    }
  });
});

describe('pump', () => {
  let rig: PumpRig;
  const handles: PumpHandle[] = [];
  const results: Promise<PumpResult>[] = [];
  const sockets: net.Socket[] = [];
  beforeEach(async () => {
    rig = await PumpRig.start(addon);
  });
  afterEach(async () => {
    for (const h of handles.splice(0)) h.abort();
    await Promise.all(results.splice(0));
    for (const s of sockets.splice(0)) s.destroy();
    await rig.close();
  });

  /** pump(req), its result as a promise; aborted after the test if it is still running. */
  function pump(req: PumpRequest): Promise<PumpResult> {
    let handle: PumpHandle | undefined;
    const result = new Promise<PumpResult>((resolve) => (handle = addon.pump(req, resolve)));
    if (handle) handles.push(handle);
    results.push(result);
    return result;
  }

  test('a fd epoll refuses (a regular file): epoll_ctl EPERM, thrown, both fds closed', async () => {
    const pair = await rig.pair();
    addon.close(pair.clientFd);
    const file = fs.openSync(__filename, 'r');
    const before = fdSnapshot().total;
    const done = jest.fn();
    const e = thrown(() => addon.pump({ client: file, server: pair.serverFd, idleMs: 0 }, done));
    expectSysError(e, 'epoll_ctl', 'EPERM');
    expect(fdSnapshot().total).toBe(before - 2);
    expect(done).not.toHaveBeenCalled();
  });

  describe.each([
    ['splice', false],
    ['copy', true],
  ] as const)('%s path', (pathName, copy) => {
    const read = copy ? 'read' : 'splice';

    test.each(['server', 'client'] as const)('a reset by the %s (SO_LINGER 0): reset, poll ECONNRESET, that side', async (side) => {
      const s = await rig.open({ copy, auto: false });
      s.client.resume();
      s.upstream.resume();
      (side === 'server' ? s.upstream : s.client).resetAndDestroy();
      const r = await s.result;
      expect(r).toMatchObject({ end: 'reset', side, path: pathName });
      // Reported by poll (EPOLLERR), with the errno the socket's SO_ERROR held.
      expectSysError(r.error, 'poll', 'ECONNRESET');
    });

    test(`a listening socket as the client: error, ${read} ENOTCONN, client side`, async () => {
      const listener = net.createServer();
      await new Promise<void>((resolve) => listener.listen(0, HOST, resolve));
      const port = (listener.address() as net.AddressInfo).port;
      const listening = addon.dupCloexec((listener as unknown as { _handle: { fd: number } })._handle.fd);
      await new Promise((resolve) => listener.close(resolve));
      const pair = await rig.pair();
      addon.close(pair.clientFd);
      const result = pump({ client: listening, server: pair.serverFd, idleMs: 0, copy, auto: false });
      // A connection waiting to be accepted makes the listening socket readable.
      const knock = net.connect(port, HOST).on('error', () => undefined);
      sockets.push(knock);
      const r = await result;
      expect(r).toMatchObject({ end: 'error', side: 'client', bytesUp: 0, bytesDown: 0, path: pathName });
      expectSysError(r.error, read, 'ENOTCONN');
    });

    test('a FIFO as the server: the bytes go through, then error, shutdown ENOTSOCK, server side', async () => {
      const fifo = path.join(tmp.path, `fifo-${pathName}`);
      const made = spawnSync('mkfifo', [fifo], { timeout: CHILD_TIMEOUT_MS, encoding: 'utf8' });
      expect({ status: made.status, stderr: made.stderr }).toEqual({ status: 0, stderr: '' });
      const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      try {
        const writer = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
        const pair = await rig.pair();
        addon.close(pair.serverFd);
        const result = pump({ client: pair.clientFd, server: writer, idleMs: 0, copy, auto: false });
        pair.client.end('hello'); // the FIN is forwarded as shutdown(SHUT_WR), which a FIFO is not for
        const r = await result;
        expect(r).toMatchObject({ end: 'error', side: 'server', bytesUp: 5, path: pathName });
        expectSysError(r.error, 'shutdown', 'ENOTSOCK');
        const buf = Buffer.alloc(16);
        expect(buf.subarray(0, fs.readSync(reader, buf)).toString()).toBe('hello');
      } finally {
        fs.closeSync(reader);
      }
    });
  });

  test('no fd left for a pipe (prlimit --nofile, in a child): error, pipe2 EMFILE, no side', async () => {
    const r = await inChild(['prlimit', '--nofile=200:200'], ['pump-without-fds']);
    expect(r).toMatchObject({ end: 'error', path: 'splice', bytesUp: 0, bytesDown: 0, error: childSysError('pipe2', 'EMFILE') });
    expect(r['side']).toBeUndefined();
  });
});

