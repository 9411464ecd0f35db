/**
 * Hardening, a worker never dies of one connection: handler and ACP
 * programs that cannot be started (ETXTBSY: the file is open for writing;
 * ENOEXEC: exec bits on garbage; EACCES and ENOENT: the file changed after
 * the start-up check) while a forwarding session of the same worker
 * streams. Each failing connection is closed with nothing sent and its
 * errno logged in one exact line; the stream goes on to its end byte for
 * byte (sha256 both ways), and the worker is the one that started: same
 * pid, alive, never restarted. And the session code's own guard: whatever
 * throws inside a session (here the log and the engine themselves) ends
 * that session with a logged line, closes the client once, and never
 * rejects into the worker.
 *
 * Runs as root: the worker then runs as uid 65535.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Engine, HeldClient } from '../../src/forward/types';
import { runSession } from '../../src/session/session';
import { SysError } from '../../src/sys/errors';
import type { Logger } from '../../src/sys/log';
import type { Service } from '../../src/table/service';
import { Client } from '../helpers/client';
import { ENGINES, logLines, re, readyWorkers, startDaemon, waitLog, waitWorkers } from '../helpers/daemon';
import { freePorts } from '../helpers/ports';
import { alive } from '../helpers/proc';
import { describeAsRoot, requireRoot } from '../helpers/root';
import { echoServer, payload, StreamHash } from '../helpers/servers';
import { SERVICE_DEFAULTS } from '../helpers/service';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

const tmp = useTempDir('tcpproxy-spawn-failure-', 0o755);
const writers: number[] = [];
cleanUpAfterEach(() => {
  for (const fd of writers.splice(0)) fs.closeSync(fd);
});

const CHUNK = 64 * 1024;
const MiB = 1024 * 1024;

/** A file of the test's directory with `content`, mode `mode`. */
function program(name: string, content: string | Buffer, mode = 0o755): string {
  const file = path.join(tmp.path, name);
  fs.writeFileSync(file, content);
  fs.chmodSync(file, mode);
  return file;
}

/**
 * A client that streams payload bytes through an echo upstream until
 * stopped, hashing what it sent and what came back.
 */
async function stream(port: number, seed: string): Promise<{ c: Client; sent: StreamHash; stop: () => Promise<void> }> {
  const c = await Client.connect('127.0.0.1', port, { keep: false });
  const sent = new StreamHash();
  const data = payload(4 * MiB, seed);
  let stopped = false;
  let at = 0;
  const pump = (async (): Promise<void> => {
    while (!stopped && !c.closed) {
      const chunk = data.subarray(at, at + CHUNK);
      at = (at + CHUNK) % data.length;
      sent.update(chunk);
      if (!c.socket.write(chunk)) await new Promise<void>((resolve) => c.socket.once('drain', resolve).once('close', resolve));
      // Room for the rest of the event loop (the other clients of the test).
      else await new Promise<void>((resolve) => setImmediate(resolve));
    }
  })();
  return {
    c,
    sent,
    stop: async () => {
      stopped = true;
      await pump;
      c.socket.end();
    },
  };
}

describeAsRoot('a handler or ACP that cannot be started ends only its own connection', () => {
  beforeAll(() => requireRoot());

  describe.each(ENGINES)('%s engine', (engine) => {
    test('ETXTBSY, ENOEXEC, EACCES, ENOENT: each client closed, errno logged; a stream of the same worker goes on, same worker pid', async () => {
      const up = await echoServer();
      const busy = program(`busy-${engine}`, '#!/bin/sh\necho should not run\n');
      const busyAcp = program(`busy-acp-${engine}`, '#!/bin/sh\nexit 0\n');
      const garbage = program(`garbage-${engine}`, Buffer.from('\x01\x02neither ELF nor a script\n'));
      const unexecutable = program(`unexecutable-${engine}`, '#!/bin/sh\necho should not run\n');
      const vanished = program(`vanished-${engine}`, '#!/bin/sh\necho should not run\n');
      const [pBusy = 0, pGarbage = 0, pNoX = 0, pGone = 0, pAcp = 0, pFwd = 0] = await freePorts(6);
      const conf = tmp.config([
        ...(
          [
            [pBusy, busy],
            [pGarbage, garbage],
            [pNoX, unexecutable],
            [pGone, vanished],
          ] as const
        ).flatMap(([p, prog]) => [`port ${p}`, '  interface 127.0.0.1', `    exec ${prog}`]),
        `port ${pAcp}`,
        '  interface 127.0.0.1',
        `    acp ${busyAcp}`,
        `    server 127.0.0.1:${up.port}`,
        `port ${pFwd}`,
        '  interface 127.0.0.1',
        `    server 127.0.0.1:${up.port}`,
      ]);
      const d = await startDaemon({ args: ['-f', conf], env: { ...process.env, TCPPROXY_ENGINE: engine }, listeners: 6 });
      const [worker] = await waitWorkers(() => d.stderr(), 65535, 65534);
      if (worker === undefined) throw new Error('no worker');

      const s = await stream(pFwd, `spawn-failure-${engine}`);
      await until(() => s.c.received >= 2 * MiB, () => `the stream to flow (${s.c.received} bytes back)`, 20000);

      // After the start-up check: the file becomes unusable in each way.
      writers.push(fs.openSync(busy, 'r+'), fs.openSync(busyAcp, 'r+'));
      fs.chmodSync(unexecutable, 0o644);
      fs.unlinkSync(vanished);

      const cases = [
        { port: pBusy, line: `end: handler ${re(busy)} pid - spawn ETXTBSY, \\d+ ms` },
        { port: pGarbage, line: `end: handler ${re(garbage)} pid - spawn ENOEXEC, \\d+ ms` },
        { port: pNoX, line: `end: handler ${re(unexecutable)} pid - spawn EACCES, \\d+ ms` },
        { port: pGone, line: `end: handler ${re(vanished)} pid - spawn ENOENT, \\d+ ms` },
        { port: pAcp, line: `acp ${re(busyAcp)}: denied \\(spawn ETXTBSY\\)` },
      ];
      for (const k of cases) {
        const before = s.c.received;
        const c = await Client.connect('127.0.0.1', k.port);
        await c.waitClosed();
        expect({ port: k.port, data: c.data().toString(), ended: c.ended, error: c.error?.code ?? null }).toEqual({
          port: k.port,
          data: '',
          ended: true,
          error: null,
        });
        await waitLog(() => d.stderr(), new RegExp(`^connection \\d+: ${k.line}$`));
        // The stream kept moving meanwhile.
        await until(() => s.c.received >= before + MiB, () => `the stream to go on (${s.c.received - before} bytes since)`, 20000);
      }

      await s.stop();
      await until(() => s.c.closed, 'the stream to end', 20000);
      expect({ back: s.c.digest(), error: s.c.error?.code ?? null }).toEqual({ back: s.sent.digest(), error: null });
      expect(s.c.received).toBeGreaterThan(7 * MiB);

      // One worker, the first one, alive; nothing ended or restarted; each failure logged once.
      expect(readyWorkers(d.stderr())).toEqual([worker]);
      expect(alive(worker.pid)).toBe(true);
      const lines = logLines(d.stderr());
      expect(lines.filter((l) => /ended with|restarting|unhandled|failed:/i.test(l))).toEqual([]);
      for (const k of cases) expect(lines.filter((l) => new RegExp(`^connection \\d+: ${k.line}$`).test(l))).toHaveLength(1);
    });
  });
});

describe('runSession never rejects: a failure inside ends that connection only', () => {
  const client: HeldClient = {
    kind: 'fd',
    fd: -1,
    endpoints: { clientAddress: '127.0.0.1', clientPort: 40000, localAddress: '127.0.0.1', localPort: 2000 },
  };
  const service: Service = {
    ...SERVICE_DEFAULTS,
    port: 2000,
    iface: null,
    target: { kind: 'server', servers: [{ host: '127.0.0.1', port: 1 }] },
    origin: { file: 'test.conf', line: 1 },
  };

  /** A log whose info lines fail (`write EIO`), and maybe its error lines too; the error lines it took. */
  function failingLog(errorsFail = false): { log: Logger; errors: string[] } {
    const errors: string[] = [];
    const fail = (): never => {
      throw new SysError('write', 5);
    };
    return {
      errors,
      log: {
        info: fail,
        warn: fail,
        error: (m) => (errorsFail ? fail() : errors.push(m)),
        many: fail,
      },
    };
  }

  /** An engine that only counts its releases, failing them with `close EBADF` when asked. */
  function engine(releaseFails = false): { engine: Engine; released: HeldClient[] } {
    const released: HeldClient[] = [];
    const no = (): never => {
      throw new Error('not used here');
    };
    return {
      released,
      engine: {
        name: 'js',
        hold: no,
        adopt: no,
        forward: no,
        release: (c) => {
          released.push(c);
          if (releaseFails) throw new SysError('close', 9);
        },
      },
    };
  }

  const run = (log: Logger, e: Engine): ReturnType<typeof runSession> =>
    runSession({ id: 7, client, service, engine: e, log, clearEnv: false, ids: { uid: 65535, gid: 65534 } });

  test('the first step throws: the error is logged with its errno, the client closed once, the session ends not ok', async () => {
    const l = failingLog();
    const e = engine();
    await expect(run(l.log, e.engine)).resolves.toEqual({ result: null, ok: false });
    expect(l.errors).toEqual(['connection 7: failed: write EIO']);
    expect(e.released).toEqual([client]);
  });

  test('closing the client fails too: both logged, still no rejection', async () => {
    const l = failingLog();
    const e = engine(true);
    await expect(run(l.log, e.engine)).resolves.toEqual({ result: null, ok: false });
    expect(l.errors).toEqual(['connection 7: failed: write EIO', 'connection 7: cannot close the client: close EBADF']);
    expect(e.released).toEqual([client]);
  });

  test('even the error log fails: the client is still closed and the session still resolves', async () => {
    const e = engine();
    await expect(run(failingLog(true).log, e.engine)).resolves.toEqual({ result: null, ok: false });
    expect(e.released).toEqual([client]);
  });
});
