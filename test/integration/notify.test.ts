/**
 * systemd notification (src/sys/notify.ts, native/notify.cc) as a service
 * manager sees it: a test-owned AF_UNIX datagram socket (python3, since Node
 * has none) in NOTIFY_SOCKET, a path or an abstract name, and the real
 * daemon: READY=1 with MAINPID once listening, WATCHDOG=1 at half of
 * WATCHDOG_USEC, STATUS= with the live session count, RELOADING=1 with a
 * CLOCK_MONOTONIC stamp then READY=1 around SIGHUP, STOPPING=1 at SIGTERM;
 * and none of the variables reaches a worker.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { assertBuilt, startDaemon, waitLog } from '../helpers/daemon';
import { freePort } from '../helpers/ports';
import { echoServer } from '../helpers/servers';
import { receiver } from '../helpers/notify';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

beforeAll(() => assertBuilt());
const tmp = useTempDir('tcpproxy-notify-');
cleanUpAfterEach();

function monotonicUsec(): bigint {
  return process.hrtime.bigint() / 1000n;
}

describe.each(['path', 'abstract'])('NOTIFY_SOCKET (%s)', (kind) => {
  it('READY=1 and MAINPID, WATCHDOG=1, STATUS= with live sessions, RELOADING=1 then READY=1 at SIGHUP, STOPPING=1 at SIGTERM', async () => {
    const name = kind === 'path' ? path.join(tmp.path, 'notify.sock') : `@tcpproxy-test-${process.pid}-${Date.now()}`;
    const rx = await receiver(name);
    const echo = await echoServer();
    const conf = tmp.config([`port ${await freePort()}`, '  interface 127.0.0.1', `    server 127.0.0.1:${echo.port}`]);
    const started = monotonicUsec();
    // 400 ms: a WATCHDOG=1 every 200 ms.
    const d = await startDaemon({ args: ['-f', conf], env: { ...process.env, NOTIFY_SOCKET: name, WATCHDOG_USEC: '400000' } });
    const find = (pred: (m: string[]) => boolean): string[][] => rx.messages().filter(pred);
    const has = (field: string) => (m: string[]): boolean => m.includes(field);

    await until(() => find(has('READY=1')).length > 0, () => `READY=1 (have ${JSON.stringify(rx.messages())})`, 10000);
    const ready = find(has('READY=1'))[0] ?? [];
    expect(ready).toEqual(['READY=1', `MAINPID=${d.pid}`, 'STATUS=serving 1 service(s), 0 live sessions']);
    // Ready only after the port is bound: the listening line came first.
    expect(d.addresses).toHaveLength(1);

    await until(() => find(has('WATCHDOG=1')).length >= 3, () => `three WATCHDOG=1 (have ${JSON.stringify(rx.messages())})`, 10000);

    // A live session shows in STATUS= within the refresh interval.
    const port = d.addresses[0]?.port ?? 0;
    const c = await Client.connect('127.0.0.1', port);
    c.socket.write('ping');
    await until(() => c.data().toString() === 'ping', 'the echo', 5000);
    await until(() => find(has('STATUS=serving 1 service(s), 1 live session')).length === 1, () => `the live session in STATUS= (have ${JSON.stringify(rx.messages())})`, 10000);
    c.destroy();
    await until(() => rx.messages().at(-1)?.includes('STATUS=serving 1 service(s), 0 live sessions') === true || find(has('STATUS=serving 1 service(s), 0 live sessions')).length >= 2, 'the session gone from STATUS=', 10000);

    // No worker inherited the manager's variables.
    const [, workerPid] = await waitLog(d.stderr, /^worker uid \d+ gid \d+ ready, pid (\d+)$/);
    const environ = fs.readFileSync(`/proc/${workerPid}/environ`, 'utf8').split('\0');
    expect(environ.filter((e) => /^(NOTIFY_SOCKET|WATCHDOG_USEC|WATCHDOG_PID)=/.test(e))).toEqual([]);

    const before = monotonicUsec();
    process.kill(d.pid, 'SIGHUP');
    await waitLog(d.stderr, /^SIGHUP: configuration reloaded, serving 1 service\(s\)$/);
    await until(() => find(has('RELOADING=1')).length === 1 && find(has('READY=1')).length === 2, () => `RELOADING=1 then READY=1 (have ${JSON.stringify(rx.messages())})`, 10000);
    const after = monotonicUsec();
    const all = rx.messages();
    const reloading = all.findIndex(has('RELOADING=1'));
    const readyAgain = all.findIndex((m, i) => i > reloading && m.includes('READY=1'));
    expect(readyAgain).toBeGreaterThan(reloading);
    const stamp = BigInt((all[reloading]?.find((f) => f.startsWith('MONOTONIC_USEC=')) ?? 'MONOTONIC_USEC=0').slice('MONOTONIC_USEC='.length));
    expect(stamp >= before && stamp <= after).toBe(true);
    expect(stamp > started).toBe(true);

    process.kill(d.pid, 'SIGTERM');
    expect(await d.exited).toEqual({ code: 0, signal: null });
    expect(find(has('STOPPING=1'))).toEqual([['STOPPING=1', 'STATUS=stopping: 0 live session(s) have 10 s to finish']]);
  });
});

it('a NOTIFY_SOCKET nobody listens on: one warning, and the daemon serves', async () => {
  const name = path.join(tmp.path, 'nobody.sock');
  const echo = await echoServer();
  const conf = tmp.config([`port ${await freePort()}`, '  interface 127.0.0.1', `    server 127.0.0.1:${echo.port}`]);
  const d = await startDaemon({ args: ['-f', conf], env: { ...process.env, NOTIFY_SOCKET: name, WATCHDOG_USEC: '200000' } });
  await waitLog(d.stderr, new RegExp(`^warning: cannot notify the service manager at ${name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: `));
  const c = await Client.connect('127.0.0.1', d.addresses[0]?.port ?? 0);
  c.socket.end('still serving');
  await c.waitClosed();
  expect(c.data().toString()).toBe('still serving');
  // The watchdog fails every 100 ms; the warning is said once.
  expect(d.stderr().split('\n').filter((l) => l.includes('cannot notify'))).toHaveLength(1);
});
