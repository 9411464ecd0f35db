/**
 * Worker supervision, as root: a worker killed with SIGKILL is restarted
 * with the same ids (and a growing backoff when it dies again at once); its
 * own live connections are lost, while a session of another identity keeps
 * flowing before, during and after the restart, and ends with every byte.
 */
import { Client } from '../helpers/client';
import { ENGINES, logLines, runCli, startProxy, waitLog, waitWorkers } from '../helpers/daemon';
import { handler, uniqueSeconds, writeConfig } from '../helpers/fixtures';
import { freePort } from '../helpers/ports';
import { alive, findProcesses, parentOf, procIds } from '../helpers/proc';
import { describeAsRoot, requireRoot } from '../helpers/root';
import { echoServer, payload, StreamHash } from '../helpers/servers';
import { cleanUpAfterEach, killTokens, useHandlerFixtures, useTempDir } from '../helpers/setup';
import { holds, until } from '../helpers/until';

const KiB = 1024;

beforeAll(requireRoot);
useHandlerFixtures();
const tmp = useTempDir('tcpproxy-workers-');
const tokens: string[] = [];
cleanUpAfterEach(() => killTokens(tokens));

describeAsRoot('worker supervision (root)', () => {
  test.each(ENGINES)(
    'SIGKILL of one identity\'s worker: restarted (new pid, same ids); its connection is lost; another identity\'s stream never stops (%s engine)',
    async (engine) => {
      const up = await echoServer();
      const [a, b] = [await freePort(), await freePort()];
      const conf = writeConfig(
        tmp.path,
        `kill-${engine}.conf`,
        `port ${a}\n  interface 127.0.0.1\n  uid 4242\n  gid 4343\n  server 127.0.0.1:${up.port}\n` +
          `port ${b}\n  interface 127.0.0.1\n  uid 5252\n  gid 5353\n  server 127.0.0.1:${up.port}\n`,
      );
      const p = await startProxy(['-s', '-f', conf], { TCPPROXY_ENGINE: engine }, 2);
      const [victim] = await waitWorkers(p.stderr, 4242, 4343);
      const [bystander] = await waitWorkers(p.stderr, 5252, 5353);
      if (victim === undefined || bystander === undefined) throw new Error('workers missing');

      // A long stream through B (the other identity), checked chunk by chunk and as a whole.
      const stream = await Client.connect('127.0.0.1', b, { keep: false });
      const sent = new StreamHash();
      let chunkNo = 0;
      const flow = async (): Promise<void> => {
        const chunk = payload(256 * KiB, `stream-${engine}-${chunkNo++}`);
        sent.update(chunk);
        stream.socket.write(chunk);
        await stream.waitBytes(sent.bytes, 10000);
      };
      await flow();
      await flow();
      const streamId = (await waitLog(p.stderr, new RegExp(`^connection (\\d+): client 127\\.0\\.0\\.1:\\d+ on 127\\.0\\.0\\.1:${b}: `)))[1];

      // A live connection of A's identity.
      const lost = await Client.connect('127.0.0.1', a);
      lost.socket.write('before\n');
      await lost.waitBytes(7);
      const lostId = (await waitLog(p.stderr, new RegExp(`^connection (\\d+): client 127\\.0\\.0\\.1:\\d+ on 127\\.0\\.0\\.1:${a}: `)))[1];

      process.kill(victim.pid, 'SIGKILL');
      await waitLog(p.stderr, new RegExp(`^worker uid 4242 gid 4343 \\(pid ${victim.pid}\\) ended with signal SIGKILL; restarting in 100 ms$`));
      await flow(); // B flows while A is down or restarting

      const ready = await waitWorkers(p.stderr, 4242, 4343, 2);
      const restarted = ready[1];
      if (restarted === undefined) throw new Error('no second ready line');
      expect(restarted.pid).not.toBe(victim.pid);
      expect(procIds(restarted.pid)).toEqual({ uid: [4242, 4242, 4242, 4242], gid: [4343, 4343, 4343, 4343], groups: [] });
      await flow(); // and after

      // A's connection died with its worker.
      await lost.waitClosed(5000);
      // A serves again, from the new worker.
      const again = await Client.connect('127.0.0.1', a);
      again.socket.write('after\n');
      await again.waitBytes(6);
      expect(again.data().toString()).toBe('after\n');
      // Numbered from the new worker's own block: unique, not consecutive.
      await waitLog(p.stderr, new RegExp(`^connection (?!${lostId}:)\\d+: client 127\\.0\\.0\\.1:\\d+ on 127\\.0\\.0\\.1:${a}: server 127\\.0\\.0\\.1:${up.port}, uid 4242 gid 4343$`));
      const ids = logLines(p.stderr()).flatMap((l) => /^connection (\d+): client /.exec(l)?.slice(1) ?? []);
      expect(ids).toHaveLength(3);
      expect(new Set(ids).size).toBe(3);

      // B's worker was never touched; its stream ends complete.
      expect(await waitWorkers(p.stderr, 5252, 5353)).toEqual([bystander]);
      expect(alive(bystander.pid)).toBe(true);
      for (let i = 0; i < 4; i++) await flow();
      stream.socket.end();
      await until(() => stream.ended || stream.closed, 'the end of the stream', 10000);
      expect({ ended: stream.ended, error: stream.error?.code ?? null }).toEqual({ ended: true, error: null });
      expect(stream.digest()).toEqual(sent.digest());
      await waitLog(p.stderr, new RegExp(`^connection ${streamId ?? '?'}: end: client \\S+ on \\S+, server \\S+ from \\S+, ${sent.bytes} bytes up, ${sent.bytes} down, \\d+ ms, eof, `));
    },
  );

  test('a worker that dies again at once is restarted after a doubled backoff', async () => {
    const p = await startProxy(['-b', '127.0.0.1:0', '127.0.0.1:9']);
    const [first] = await waitWorkers(p.stderr, 65535, 65534);
    if (first === undefined) throw new Error('no worker');
    process.kill(first.pid, 'SIGKILL');
    await waitLog(p.stderr, new RegExp(`^worker uid 65535 gid 65534 \\(pid ${first.pid}\\) ended with signal SIGKILL; restarting in 100 ms$`));
    const second = (await waitWorkers(p.stderr, 65535, 65534, 2))[1];
    if (second === undefined) throw new Error('no second worker');
    process.kill(second.pid, 'SIGKILL');
    await waitLog(p.stderr, new RegExp(`^worker uid 65535 gid 65534 \\(pid ${second.pid}\\) ended with signal SIGKILL; restarting in 200 ms$`));
    const third = (await waitWorkers(p.stderr, 65535, 65534, 3))[2];
    if (third === undefined) throw new Error('no third worker');
    expect(new Set([first.pid, second.pid, third.pid]).size).toBe(3);
    expect(procIds(third.pid).uid).toEqual([65535, 65535, 65535, 65535]);
  });
});

describeAsRoot('a dead worker\'s handlers (root)', () => {
  test('SIGKILL of a worker with 3 running handlers: they end with it (parent-death signal), their clients are closed, and the new worker serves up to maxconn again', async () => {
    const token = uniqueSeconds();
    tokens.push(token);
    const port = await freePort();
    const conf = writeConfig(tmp.path, 'orphans.conf', `port ${port}\n  interface 127.0.0.1\n  maxconn 3\n  exec ${handler('sleeper.sh')} ${token}\n`);
    const p = await startProxy(['-f', conf]);
    const [first] = await waitWorkers(p.stderr, 65535, 65534);
    if (first === undefined) throw new Error('no worker');
    // After `exec sleep`, each handler is sleep(1) with the test's unique argument.
    const sleepers = (): number[] => findProcesses(token, 'sleep');
    const old = await Promise.all([0, 1, 2].map(() => Client.connect('127.0.0.1', port)));
    await until(() => sleepers().length === 3, () => `3 handlers (have ${sleepers().length})`);
    expect(sleepers().map(parentOf)).toEqual([first.pid, first.pid, first.pid]);

    process.kill(first.pid, 'SIGKILL');
    await until(() => sleepers().length === 0, () => `the handlers of the dead worker to end (left: ${sleepers().join(' ')})`, 5000);
    // They held their connections alone: those are closed now.
    for (const c of old) await c.waitClosed(5000);

    // The master gave their places back: the next worker takes maxconn (3) new clients, and no more.
    const second = (await waitWorkers(p.stderr, 65535, 65534, 2))[1];
    if (second === undefined) throw new Error('no second worker');
    const fresh = await Promise.all([0, 1, 2, 3].map(() => Client.connect('127.0.0.1', port)));
    await until(() => sleepers().length === 3, () => `3 handlers of the new worker (have ${sleepers().length})`);
    await holds(() => sleepers().length === 3, () => `3 handlers at most (have ${sleepers().length})`, 300);
    expect(sleepers().map(parentOf)).toEqual([second.pid, second.pid, second.pid]);
    for (const c of fresh) c.socket.destroy();
  });
});

describeAsRoot('several workers per identity (root)', () => {
  /** One echo through the proxy: the bytes back, or what went wrong. */
  async function echo(port: number, text: string): Promise<string> {
    const c = await Client.connect('127.0.0.1', port);
    c.socket.end(text);
    await c.waitClosed(10000);
    return c.data().toString('utf8');
  }

  test.each(ENGINES)('workers 3: three workers accept on the same socket; one killed is restarted alone; -zz shows it (%s engine)', async (engine) => {
    const up = await echoServer();
    const port = await freePort();
    const conf = writeConfig(tmp.path, `three-${engine}.conf`, `workers 3\nport ${port}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n`);
    const zz = await runCli(['-zz', '-f', conf]);
    expect(zz.stdout).toBe(`port=${port}\tinterface=127.0.0.1\tserver=127.0.0.1:${up.port}\tuid=-\tgid=-\ttimeout=60\tacp=-\twritefile=-\tprefix=PROXY_\tallow=-\tdeny=-\tmaxconn=-\tper-source=-\trate=-\thandler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=3\n`);
    const p = await startProxy(['-f', conf], { TCPPROXY_ENGINE: engine });
    const three = await waitWorkers(p.stderr, 65535, 65534, 3);
    expect(new Set(three.map((w) => w.pid)).size).toBe(3);
    for (const w of three) expect(procIds(w.pid).uid).toEqual([65535, 65535, 65535, 65535]);
    const round = async (tag: string): Promise<string[]> =>
      Promise.all(Array.from({ length: 40 }, (_, i) => echo(port, `${tag} ${i}\n`)));
    expect(await round('before')).toEqual(Array.from({ length: 40 }, (_, i) => `before ${i}\n`));

    const [victim, ...others] = three as [(typeof three)[0], ...typeof three];
    process.kill(victim.pid, 'SIGKILL');
    const four = await waitWorkers(p.stderr, 65535, 65534, 4);
    const fresh = four[3];
    expect(fresh?.pid).not.toBe(victim.pid);
    // The other two were never touched.
    for (const w of others) expect(alive(w.pid)).toBe(true);
    expect(logLines(p.stderr()).filter((l) => / ended with /.test(l))).toEqual([
      `worker uid 65535 gid 65534 (pid ${victim.pid}) ended with signal SIGKILL; restarting in 100 ms`,
    ]);
    expect(await round('after')).toEqual(Array.from({ length: 40 }, (_, i) => `after ${i}\n`));
    // Every connection has a number of its own across the workers.
    const ids = logLines(p.stderr()).flatMap((l) => /^connection (\d+): client /.exec(l)?.slice(1) ?? []);
    expect(ids).toHaveLength(80);
    expect(new Set(ids).size).toBe(80);
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
  });
});
