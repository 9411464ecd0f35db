/**
 * examples/systemd, hardened: the units pass `systemd-analyze verify` (no
 * unknown key, no bad value; ExecStart pointed at the built CLI, which
 * verify wants to exist), tcpproxy.service has the hardening the issue
 * asks for, and its capability bounding set is enough for the daemon: run
 * under exactly that set (setpriv, as systemd would set it), it serves a
 * handler and a forwarded connection as the service ids, and when it stops,
 * a worker that no longer answers (SIGSTOP) is still killed (CAP_KILL: the
 * worker runs as another uid).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { CLI, ROOT, runToExit, startDaemon, waitWorkers, which } from '../helpers/daemon';
import { freePorts } from '../helpers/ports';
import { procStatus, readStat } from '../helpers/proc';
import { describeAsRoot } from '../helpers/root';
import { senderServer } from '../helpers/servers';
import { cleanUpAfterEach, useHandlerFixtures, useTempDir } from '../helpers/setup';

const UNITS = ['tcpproxy.service', 'tcpproxy.socket', 'tcpproxy-inetd@.service', 'tcpproxy-inetd.socket'];
const unitFile = (name: string): string => path.join(ROOT, 'examples', 'systemd', name);

/** The `Key=value` settings of a unit (comments and section headers left out), each key's values in order. */
function settings(name: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const l of fs.readFileSync(unitFile(name), 'utf8').split('\n')) {
    const kv = /^([A-Za-z]+)=(.*)$/.exec(l);
    if (kv) m.set(kv[1] ?? '', [...(m.get(kv[1] ?? '') ?? []), kv[2] ?? '']);
  }
  return m;
}

/** Capability numbers of linux/capability.h, for the ones the units name. */
const CAP_NUMBERS: Readonly<Record<string, number>> = { CAP_KILL: 5, CAP_SETGID: 6, CAP_SETUID: 7, CAP_NET_BIND_SERVICE: 10 };

const tmp = useTempDir('tcpproxy-systemd-', 0o755);
useHandlerFixtures();
cleanUpAfterEach();

describeAsRoot('examples/systemd (root)', () => {
  test('every unit passes systemd-analyze verify without a word', async () => {
    for (const u of UNITS) {
      const text = fs.readFileSync(unitFile(u), 'utf8').replace(/\/usr\/bin\/tcpproxy/g, `${process.execPath} ${CLI}`);
      fs.writeFileSync(path.join(tmp.path, u), text);
    }
    const r = await runToExit([which('systemd-analyze'), 'verify', '--man=no', ...UNITS.map((u) => path.join(tmp.path, u))], { cwd: tmp.path, timeoutMs: 30000 });
    expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ code: 0, stdout: '', stderr: '' });
  }, 40000);

  test('tcpproxy.service is fenced in: read-only system, no homes, private /tmp, IP and Unix sockets only, four capabilities', () => {
    const s = settings('tcpproxy.service');
    expect({
      ProtectSystem: s.get('ProtectSystem'),
      ProtectHome: s.get('ProtectHome'),
      PrivateTmp: s.get('PrivateTmp'),
      RestrictAddressFamilies: s.get('RestrictAddressFamilies'),
      CapabilityBoundingSet: s.get('CapabilityBoundingSet'),
    }).toEqual({
      ProtectSystem: ['strict'],
      ProtectHome: ['yes'],
      PrivateTmp: ['yes'],
      RestrictAddressFamilies: ['AF_INET AF_INET6 AF_UNIX'],
      CapabilityBoundingSet: ['CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_KILL'],
    });
    expect(settings('tcpproxy-inetd@.service').get('CapabilityBoundingSet')).toEqual(['CAP_SETUID CAP_SETGID']);
  });

  test('tcpproxy.service is Type=notify with a watchdog, runs in the foreground (-D) and reloads with SIGHUP', () => {
    const s = settings('tcpproxy.service');
    expect({ Type: s.get('Type'), WatchdogSec: s.get('WatchdogSec'), ExecReload: s.get('ExecReload') }).toEqual({
      Type: ['notify'],
      WatchdogSec: ['30s'],
      ExecReload: ['/bin/kill -HUP $MAINPID'],
    });
    expect((s.get('ExecStart')?.[0] ?? '').split(' ')).toContain('-D');
  });

  test('under that bounding set the daemon serves as the service ids and still kills a worker that stopped answering', async () => {
    const caps = (settings('tcpproxy.service').get('CapabilityBoundingSet')?.[0] ?? '').split(' ');
    const [execPort = 0, serverPort = 0] = await freePorts(2);
    const up = await senderServer(Buffer.from('from upstream\n'));
    const conf = tmp.config([`port ${execPort}`, '  interface 127.0.0.1', '  exec /bin/echo hi', `port ${serverPort}`, '  interface 127.0.0.1', `  server 127.0.0.1:${up.port}`]);
    const bounding = ['-all', ...caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');
    const d = await startDaemon({ args: ['-s', '-f', conf], wrapper: [which('setpriv'), `--bounding-set=${bounding}`], listeners: 2 });
    // The set is the master's: exactly the unit's capabilities.
    const mask = caps.reduce((m, c) => m | (1n << BigInt(CAP_NUMBERS[c] ?? 63)), 0n);
    expect(BigInt(`0x${procStatus(d.pid).get('CapBnd') ?? ''}`)).toBe(mask);
    const [worker] = await waitWorkers(d.stderr, 65535, 65534);
    if (worker === undefined) throw new Error('no worker');
    for (const [port, want] of [
      [execPort, 'hi\n'],
      [serverPort, 'from upstream\n'],
    ] as const) {
      const c = await Client.connect('127.0.0.1', port);
      await c.waitClosed(10000);
      expect(c.data().toString()).toBe(want);
    }
    process.kill(worker.pid, 'SIGSTOP');
    // The grace period (10 s), then 5 s more, then SIGKILL from the root master to uid 65535.
    expect(await d.stop(40000)).toEqual({ code: 0, signal: null });
    const st = readStat(worker.pid);
    expect(st === null || st.state === 'Z').toBe(true);
  }, 60000);
});
