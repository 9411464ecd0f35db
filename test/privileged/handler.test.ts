/**
 * Request handlers (exec), as root: the descriptors a handler gets (exactly
 * 0, 1, 2: the client socket twice and a channel to the log), its exact
 * environment with and without -y, with -v / setenv, the same variables for
 * an ACP, and how handler paths are resolved and checked at start.
 *
 * The environment tests use /usr/bin/env itself as the handler, not a shell
 * script: a shell adds variables of its own (PWD) to what it passes on.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { type Daemon, ENGINES, INHERITED_FD, killLaunched, logLines, re, ROOT, runCli, startDaemon, startProxy, waitLog, waitWorkers } from '../helpers/daemon';
import { handler, uniqueSeconds, writeConfig } from '../helpers/fixtures';
import { freePort, portOf } from '../helpers/ports';
import { fdTarget, inodeOf, openFds, procIds, tcpSockets, unixSocketInodes, waitAsleep, waitProcess, zombiesOf } from '../helpers/proc';
import { describeAsRoot } from '../helpers/root';
import { senderServer } from '../helpers/servers';
import { until } from '../helpers/until';
import { cleanUpAfterEach, killTokens, useHandlerFixtures, useTempDir } from '../helpers/setup';

const SAFE_PATH = '/usr/local/bin:/usr/bin:/bin';
const ENV = '/usr/bin/env';

const tokens: string[] = [];

useHandlerFixtures();
const tmp = useTempDir('tcpproxy-handler-');
cleanUpAfterEach(killLaunched, () => killTokens(tokens));

/** `env -0` output → variables. */
function parseEnv0(buf: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  const text = buf.toString('utf8');
  expect(text.endsWith('\0')).toBe(true);
  for (const entry of text.slice(0, -1).split('\0')) {
    const i = entry.indexOf('=');
    out[entry.slice(0, i)] = entry.slice(i + 1);
  }
  return out;
}

/** The environment tcpproxy is started with in the environment tests: values with blanks, `=`, a newline. */
function baseEnv(engine: string): Record<string, string> {
  return {
    PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: 'C',
    HOME: '/nonexistent',
    TP_SPACES: 'a  b\tc ',
    TP_EQUALS: 'k=v=w',
    TP_NEWLINE: 'one\ntwo',
    TP_EMPTY: '',
    // Set in tcpproxy's own environment: the handler must get the connection's value.
    PROXY_PORT: '1',
    PROXY_CLIENT: '192.0.2.1',
    TCPPROXY_ENGINE: engine,
  };
}

/** Runs `tcpproxy ARGS` (exact env), connects once, returns what the handler printed. */
async function handlerOutput(args: readonly string[], env: Record<string, string>): Promise<{ out: Buffer; port: number; daemon: Daemon }> {
  const daemon = await startDaemon({ args, env });
  const port = portOf(daemon);
  const c = await Client.connect('127.0.0.1', port);
  await c.waitClosed();
  return { out: c.data(), port, daemon };
}

function connectionVars(prefix: string, port: number): Record<string, string> {
  return {
    [`${prefix}PORT`]: String(port),
    [`${prefix}INTERFACE`]: '127.0.0.1',
    [`${prefix}CLIENT`]: '127.0.0.1',
    // getnameinfo(127.0.0.1) through /etc/hosts.
    [`${prefix}CLIENTNAME`]: 'localhost',
  };
}

describeAsRoot('request handlers (root)', () => {
  describe.each(ENGINES)('descriptors, %s engine', (engine) => {
    test('a handler has exactly fds 0, 1, 2: the client socket on 0 and 1, a local channel to the log on 2', async () => {
      const token = uniqueSeconds();
      tokens.push(token);
      const sleeper = handler('sleeper.sh');
      const p = await startProxy(['-b', '127.0.0.1:0', `${sleeper} ${token}`], { TCPPROXY_ENGINE: engine });
      const port = portOf(p);
      const c = await Client.connect('127.0.0.1', port);
      const clientPort = c.socket.localPort;
      // After `exec sleep`, the handler process is sleep(1) with our unique argument.
      const pid = await waitProcess(token, 'sleep');
      await waitAsleep(pid);
      expect(procIds(pid).uid).toEqual([65535, 65535, 65535, 65535]);
      const fds = openFds(pid);
      const targets = fds.map((fd) => `${fd} -> ${fdTarget(pid, fd)}`);
      expect({ fds, targets }).toEqual({ fds: [0, 1, 2], targets: expect.any(Array) as unknown });
      const [in0, out1, err2] = [0, 1, 2].map((fd) => inodeOf(fdTarget(pid, fd)));
      // 0 and 1: the same socket, and it is this client's TCP connection.
      expect(in0?.kind).toBe('socket');
      expect(out1).toEqual(in0);
      const tcp = tcpSockets().find((s) => s.inode === in0?.inode);
      expect(tcp && { localPort: tcp.localPort, remotePort: tcp.remotePort }).toEqual({ localPort: port, remotePort: clientPort });
      // 2: a pipe or (Node's 'pipe' stdio) an AF_UNIX socketpair, never the client.
      expect(err2).not.toBeNull();
      expect(err2?.inode).not.toBe(in0?.inode);
      if (err2?.kind === 'socket') expect(unixSocketInodes().has(err2.inode)).toBe(true);
      // The end of the handler is logged with its pid and how it ended.
      process.kill(pid, 'SIGKILL');
      await waitLog(p.stderr, new RegExp(`^connection 1: end: handler ${re(sleeper)} pid ${pid} signal SIGKILL, \\d+ ms$`));
      await c.waitClosed();
    });

    test('a descriptor tcpproxy inherited from its parent does not reach the handler', async () => {
      const token = uniqueSeconds();
      tokens.push(token);
      const inherited = path.join(tmp.path, `inherited-${engine}`);
      fs.writeFileSync(inherited, 'not for handlers\n');
      const d = await startDaemon({
        args: ['-b', '127.0.0.1:0', `${handler('sleeper.sh')} ${token}`],
        env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', TCPPROXY_ENGINE: engine },
        inheritFile: inherited,
      });
      expect(fdTarget(d.pid, INHERITED_FD)).toBe(inherited);
      await Client.connect('127.0.0.1', portOf(d));
      const pid = await waitProcess(token, 'sleep');
      await waitAsleep(pid);
      const fds = openFds(pid);
      expect({ fds, targets: fds.map((fd) => `${fd} -> ${fdTarget(pid, fd)}`) }).toEqual({
        fds: [0, 1, 2],
        targets: [0, 1, 2].map((fd) => `${fd} -> ${fdTarget(pid, fd)}`),
      });
    });
  });

  describe.each(ENGINES)('environment, %s engine', (engine) => {
    test('without -y: exactly the environment tcpproxy was started with, plus the four PROXY_ variables', async () => {
      const env = baseEnv(engine);
      const { out, port } = await handlerOutput(['-b', '127.0.0.1:0', `${ENV} -0`], env);
      expect(parseEnv0(out)).toEqual({ ...env, ...connectionVars('PROXY_', port) });
    });

    test('with -y: only PATH (a fixed safe one) and the four variables', async () => {
      const { out, port } = await handlerOutput(['-y', '-b', '127.0.0.1:0', `${ENV} -0`], baseEnv(engine));
      expect(parseEnv0(out)).toEqual({ PATH: SAFE_PATH, ...connectionVars('PROXY_', port) });
    });

    test('-v MY_: the variables are MY_PORT, MY_INTERFACE, MY_CLIENT, MY_CLIENTNAME', async () => {
      const env = baseEnv(engine);
      const { out, port } = await handlerOutput(['-v', 'MY_', '-b', '127.0.0.1:0', `${ENV} -0`], env);
      // PROXY_PORT and PROXY_CLIENT stay what tcpproxy's environment had: they are just variables now.
      expect(parseEnv0(out)).toEqual({ ...env, ...connectionVars('MY_', port) });
    });

    test('-y with -v MY_', async () => {
      const { out, port } = await handlerOutput(['-y', '-v', 'MY_', '-b', '127.0.0.1:0', `${ENV} -0`], baseEnv(engine));
      expect(parseEnv0(out)).toEqual({ PATH: SAFE_PATH, ...connectionVars('MY_', port) });
    });

    test('"setenv" in a port block, with -y', async () => {
      const portNo = await freePort();
      const conf = writeConfig(tmp.path, `setenv-${engine}.conf`, `port ${portNo}\n  interface 127.0.0.1\n  setenv CFG_\n  exec ${ENV} -0\n`);
      const { out, port } = await handlerOutput(['-y', '-s', '-f', conf], baseEnv(engine));
      expect(port).toBe(portNo);
      expect(parseEnv0(out)).toEqual({ PATH: SAFE_PATH, ...connectionVars('CFG_', portNo) });
    });

    test('an ACP gets the same variables (here with -y), and its stdout goes to the client', async () => {
      const marker = Buffer.from('upstream-data-after-the-acp');
      const up = await senderServer(marker);
      const { out, port } = await handlerOutput(['-y', '-a', `${ENV} -0`, '-b', '127.0.0.1:0', `127.0.0.1:${up.port}`], baseEnv(engine));
      // The ACP (env, exit 0: granted) printed first; then the upstream's bytes.
      expect(out.subarray(out.length - marker.length)).toEqual(marker);
      expect(parseEnv0(out.subarray(0, out.length - marker.length))).toEqual({ PATH: SAFE_PATH, ...connectionVars('PROXY_', port) });
    });
  });

  test('a relative handler path is resolved against the directory tcpproxy was started in', async () => {
    const portNo = await freePort();
    const hello = handler('hello.sh');
    const rel = path.relative(ROOT, hello);
    const conf = writeConfig(tmp.path, 'relative.conf', `port ${portNo}\n  interface 127.0.0.1\n  exec ./${rel}\n`);
    // Started in the repository root; the handler itself runs wherever tcpproxy was started.
    const d = await startDaemon({ args: ['-s', '-f', conf], env: { PATH: '/usr/bin:/bin' }, cwd: ROOT });
    const c = await Client.connect('127.0.0.1', portNo);
    await c.waitClosed();
    expect(c.data().toString()).toBe('hello from 127.0.0.1\n');
    await waitLog(d.stderr, new RegExp(`^connection 1: client 127\\.0\\.0\\.1:\\d+ on 127\\.0\\.0\\.1:${portNo}: exec ${re(hello)}, uid 65535 gid 65534$`));
    // The handler's stderr, line by line in the log.
    await waitLog(d.stderr, new RegExp(`^connection 1: ${re(hello)}: handler note: client 127\\.0\\.0\\.1 port ${portNo}$`));
  });

  test('a missing handler is a configuration error at its line: exit 2', async () => {
    const portNo = await freePort();
    const conf = writeConfig(tmp.path, 'missing.conf', `port ${portNo}\n  interface 127.0.0.1\n    exec ./no-such-handler arg\n`);
    const r = await runCli(['-D', '-s', '-f', conf]);
    expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({
      code: 2,
      stdout: '',
      stderr: `tcpproxy:${conf}:3: program "./no-such-handler" does not exist\ntcpproxy:${conf}: 1 error\n`,
    });
  });

  test('a handler that is not executable is a configuration error: exit 2', async () => {
    const script = path.join(tmp.path, 'not-executable.sh');
    fs.writeFileSync(script, '#!/bin/sh\necho hi\n', { mode: 0o644 });
    const r = await runCli(['-D', '-b', '127.0.0.1:0', script]);
    expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({
      code: 2,
      stdout: '',
      stderr: `tcpproxy:command line: program "${script}" is not executable\n`,
    });
  });
});

describe.each(ENGINES)('handler reaping (root, %s engine)', (engine) => {
  test('500 connections to a handler that starts a child and exits: every client gets its line, every handler is reaped, no zombie is left', async () => {
    const p = await startProxy(['-b', '127.0.0.1:0', handler('fork-exit.sh')], { TCPPROXY_ENGINE: engine });
    const port = portOf(p);
    const [worker] = await waitWorkers(p.stderr, 65535, 65534);
    if (worker === undefined) throw new Error('no worker');
    const answers: string[] = [];
    let next = 0;
    const one = (): Promise<string> =>
      new Promise((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port });
        let got = '';
        const timer = setTimeout(() => {
          s.destroy();
          resolve(`timeout (${JSON.stringify(got)})`);
        }, 10000);
        s.on('data', (d: Buffer) => (got += d.toString('utf8')));
        s.once('end', () => {
          clearTimeout(timer);
          s.destroy();
          resolve(got);
        });
        s.once('error', (e: NodeJS.ErrnoException) => {
          clearTimeout(timer);
          resolve(e.code ?? e.message);
        });
      });
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < 500) {
          next++;
          answers.push(await one());
        }
      }),
    );
    expect(answers.filter((a) => a !== 'forked\n')).toEqual([]);
    expect(answers).toHaveLength(500);
    const ends = (): string[] => logLines(p.stderr()).filter((l) => /^connection \d+: end: handler /.test(l));
    await until(() => ends().length === 500, () => `500 end lines (have ${ends().length})`, 20000);
    expect(ends().filter((l) => !/ exit 0, \d+ ms$/.test(l))).toEqual([]);
    // The handlers' own children (the sleeps) belong to init once their parent exits; none is left a zombie here.
    await until(() => zombiesOf([p.pid, worker.pid]).length === 0, () => `no zombie children (${zombiesOf([p.pid, worker.pid]).length})`, 10000);
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
  }, 120000);
});
