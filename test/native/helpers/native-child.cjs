// Runs one native primitive in a process of its own, for the failures that
// would change or wreck the process provoking them (a privilege drop, an
// execve, a full fd table), and prints what came back as one line of JSON.
// The addon is loaded through the built dist/ the way the command loads it
// (npm test builds dist/ first), so the errors are the real SysError and
// PrivilegeCheckError classes.
//
//   node native-child.cjs drop UID GID       dropPrivileges(UID, GID)
//   node native-child.cjs execve FILE        execve(FILE, [FILE], [], the default sandbox)
//   node native-child.cjs dup-until-full     dupCloexec(0) until it fails
//   node native-child.cjs pump-without-fds   a pump whose first pipe2 finds the fd table full
'use strict';
const net = require('node:net');
const path = require('node:path');

const dist = path.resolve(__dirname, '..', '..', '..', 'dist', 'src', 'sys');
const { native } = require(path.join(dist, 'native.js'));
const { PrivilegeCheckError, SysError } = require(path.join(dist, 'errors.js'));

const addon = native();

function shape(e) {
  if (!(e instanceof Error)) return { threw: true, value: String(e) };
  return {
    threw: true,
    name: e.name,
    isSysError: e instanceof SysError,
    isPrivilegeCheckError: e instanceof PrivilegeCheckError,
    message: e.message,
    code: e.code,
    syscall: e.syscall,
    errno: e.errno,
    check: e.check,
    observed: e.observed,
  };
}

function print(value) {
  process.stdout.write(JSON.stringify(value) + '\n');
}

function run(f) {
  try {
    print({ threw: false, value: f() ?? null });
  } catch (e) {
    print(shape(e));
  }
}

/** dupCloexec(0) until it fails; returns the error and closes every dup again. */
function fillFdTable() {
  const fds = [];
  let error;
  try {
    for (;;) fds.push(addon.dupCloexec(0));
  } catch (e) {
    error = e;
  }
  return { error, release: () => fds.forEach((fd) => addon.close(fd)), count: fds.length };
}

/** A connected loopback pair: the accepted end's fd (taken over) and the connecting socket. */
async function acceptedFd(server) {
  const client = net.connect(server.address().port, '127.0.0.1');
  const [accepted] = await Promise.all([
    new Promise((resolve) => server.once('connection', resolve)),
    new Promise((resolve, reject) => client.once('connect', resolve).once('error', reject)),
  ]);
  const fd = addon.dupCloexec(accepted._handle.fd);
  accepted.destroy();
  return { fd, client };
}

async function pumpWithoutFds() {
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const a = await acceptedFd(server);
  const b = await acceptedFd(server);
  server.close();
  for (const s of [a.client, b.client]) s.on('error', () => undefined);
  // On loopback the byte is in the pump's receive queue once write() returns.
  await new Promise((resolve) => a.client.write('x', resolve));
  const full = fillFdTable();
  if (!(full.error instanceof SysError) || full.error.code !== 'EMFILE') {
    full.release();
    throw new Error(`the fd table did not fill up: ${String(full.error)}`);
  }
  const result = await new Promise((resolve) => addon.pump({ client: a.fd, server: b.fd, idleMs: 0, auto: false }, resolve));
  full.release();
  a.client.destroy();
  b.client.destroy();
  print({ ...result, error: result.error === undefined ? null : shape(result.error) });
}

const [what, ...args] = process.argv.slice(2);
switch (what) {
  case 'drop':
    run(() => addon.dropPrivileges(Number(args[0]), Number(args[1])));
    break;
  case 'execve':
    run(() => addon.execve(args[0], [args[0]], [], { noNewPrivs: true, rlimitNproc: null, rlimitAs: null, rlimitCpu: null, rlimitNofile: null }));
    break;
  case 'dup-until-full': {
    const full = fillFdTable();
    full.release();
    print({ ...shape(full.error), count: full.count });
    break;
  }
  case 'pump-without-fds':
    pumpWithoutFds().catch((e) => {
      print(shape(e));
      process.exitCode = 1;
    });
    break;
  default:
    print({ threw: true, name: 'UsageError', message: `unknown operation ${what}` });
    process.exitCode = 2;
}
