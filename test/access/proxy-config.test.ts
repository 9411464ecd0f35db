/**
 * The server-group and PROXY protocol directives (issue 14) from the built
 * command: their config errors in one run (exit 2), the -zz fields they
 * give, the command line's server groups, and the start-time check of the
 * `source` addresses: one that this machine does not have stops the start
 * with exit 1 and `tcpproxy:FILE:LINE: cannot bind source address ...`,
 * before anything is bound or the command detaches; one it has (127.0.0.9,
 * on lo) starts. On SIGHUP the same check refuses the new file. The
 * messages themselves are pinned in test/unit/proxy-config.test.ts.
 */
import * as os from 'node:os';
import * as fs from 'node:fs';
import { logLines, runCli, startProxy, waitLog } from '../helpers/daemon';
import { freePort, tryConnect } from '../helpers/ports';
import { echoServer } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';

const tmp = useTempDir('tcpproxy-proxy-config-');
cleanUpAfterEach();

/** A documentation address that is not on this machine (binding it gives EADDRNOTAVAIL, no traffic). */
function foreignAddress(family: 4 | 6): string {
  const local = new Set(
    Object.values(os.networkInterfaces())
      .flat()
      .map((i) => i?.address),
  );
  const candidates = family === 4 ? ['192.0.2.1', '198.51.100.1', '203.0.113.1', '192.0.2.254'] : ['2001:db8::1', '2001:db8::2'];
  const found = candidates.find((a) => !local.has(a));
  if (found === undefined) throw new Error(`every candidate address is local: ${candidates.join(', ')}`);
  return found;
}

const cannotBind = (f: string, line: number, addr: string): string => `tcpproxy:${f}:${line}: cannot bind source address ${addr}: EADDRNOTAVAIL (no such local address)`;

test('every bad directive is reported at its line in one run, exit 2', async () => {
  const f = tmp.config([
    'balance rr', // 1
    'send-proxy v3', // 2
    'accept-proxy none 10.1.2.3/8', // 3: two errors
    'port 7000', // 4
    '  server a b A c:0', // 5: two errors
    '  source localhost', // 6
    '  interface 127.0.0.1', // 7
    '    server 127.0.0.1:7', // 8
    '    send-proxy v1 v2', // 9
    '    accept-proxy ::1 any', // 10
    '    accept-proxy', // 11
  ]);
  const r = await runCli(['-z', '-f', f]);
  expect({ code: r.code, stdout: r.stdout, stderr: r.stderr.split('\n') }).toEqual({
    code: 2,
    stdout: '',
    stderr: [
      `tcpproxy:${f}:1: invalid balance "rr": expected first, roundrobin or source`,
      `tcpproxy:${f}:2: invalid send-proxy "v3": expected v1, v2 or none`,
      `tcpproxy:${f}:3: "accept-proxy none" takes no other words`,
      `tcpproxy:${f}:3: invalid prefix "10.1.2.3/8": host bits are set (the network is 10.0.0.0/8)`,
      `tcpproxy:${f}:5: server "A" is listed twice`,
      `tcpproxy:${f}:5: server "c:0": port 0 is out of range (1-65535)`,
      `tcpproxy:${f}:6: invalid source "localhost": expected an IP address`,
      `tcpproxy:${f}:9: "send-proxy" takes one argument`,
      `tcpproxy:${f}:10: invalid prefix "any": expected an IPv4 or IPv6 address with an optional /length`,
      `tcpproxy:${f}:11: duplicate "accept-proxy" (first on line 10)`,
      `tcpproxy:${f}: 10 errors`,
      '',
    ],
  });
});

test('-zz shows send-proxy=, accept-proxy=, balance= and source= of each service after the scope rules; a group as written', async () => {
  const f = tmp.config([
    'send-proxy v1',
    'accept-proxy 10.0.0.0/8 2001:db8::/32',
    'port 7000',
    '  balance roundrobin',
    '  source 127.0.0.9',
    '  server 127.0.0.1:9001 127.0.0.1:9002 [::1]:9003',
    '  interface 127.0.0.1',
    '    server 127.0.0.1:7',
    '    send-proxy V2',
    '    accept-proxy',
    '    balance source',
    'port 7001',
    '  exec /bin/cat',
    '  send-proxy none',
    '  accept-proxy none',
  ]);
  const zz = await runCli(['-zz', '-f', f]);
  const head = 'uid=-\tgid=-\ttimeout=60\tacp=-\twritefile=-\tprefix=PROXY_\tallow=-\tdeny=-\tmaxconn=-\tper-source=-\trate=-';
  const bounds = 'handler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-';
  expect({ code: zz.code, stderr: zz.stderr, lines: zz.stdout.split('\n') }).toEqual({
    code: 0,
    stderr: '',
    lines: [
      `port=7000\tinterface=*\tserver=127.0.0.1:9001 127.0.0.1:9002 [::1]:9003\t${head}\t${bounds}\tsend-proxy=v1\taccept-proxy=10.0.0.0/8,2001:db8::/32\tbalance=roundrobin\tsource=127.0.0.9\tloglevel=normal\tworkers=1`,
      `port=7000\tinterface=127.0.0.1\tserver=127.0.0.1:7\t${head}\t${bounds}\tsend-proxy=v2\taccept-proxy=any\tbalance=source\tsource=127.0.0.9\tloglevel=normal\tworkers=1`,
      `port=7001\tinterface=*\texec=/bin/cat\t${head}\t${bounds}\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=1`,
      '',
    ],
  });
});

test('the command line: several servers after -b form one group, with the default settings', async () => {
  const zz = await runCli(['-zz', '-b', '127.0.0.1:8080', '127.0.0.1:9001', 'Backup.Example:9002']);
  expect(zz).toMatchObject({ code: 0, stderr: '' });
  expect(zz.stdout.split('\t').filter((x) => /^(port|interface|server|send-proxy|accept-proxy|balance|source)=/.test(x))).toEqual([
    'port=8080',
    'interface=127.0.0.1',
    'server=127.0.0.1:9001 backup.example:9002',
    'send-proxy=none',
    'accept-proxy=none',
    'balance=first',
    'source=none',
  ]);
  expect(await runCli(['-zz', '-b', '8080', 'a', 'b', 'a'])).toMatchObject({ code: 2, stdout: '', stderr: expect.stringMatching(/^tcpproxy: server argument: server "a" is listed twice\nusage: /) });
});

describe('a source address that cannot be bound', () => {
  test('stops the start: exit 1, one line per distinct address at the line that gives it, nothing bound (-D and detaching alike)', async () => {
    const [v4, v6] = [foreignAddress(4), foreignAddress(6)];
    const [a, b, c] = [await freePort(), await freePort(), await freePort()];
    const f = tmp.config([
      `source ${v4}`, // 1: the default of port a
      `port ${a}`, // 2
      '  interface 127.0.0.1', // 3
      '    server 127.0.0.1:1 127.0.0.1:2', // 4
      `port ${b}`, // 5
      '  interface 127.0.0.1', // 6
      '    server 127.0.0.1:1', // 7
      `    source ${v6}`, // 8
      `port ${c}`, // 9
      '  interface 127.0.0.1', // 10
      '    exec /bin/cat', // 11: source is ignored for a handler, and not checked
      '    source 203.0.113.77', // 12
    ]);
    const want = `${cannotBind(f, 1, v4)}\n${cannotBind(f, 8, v6)}\n`;
    for (const args of [['-D', '-f', f], ['-s', '-f', f]]) {
      const r = await runCli(args);
      expect({ args, code: r.code, stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut }).toEqual({ args, code: 1, stdout: '', stderr: want, timedOut: false });
    }
    // Nothing was bound.
    for (const port of [a, b, c]) expect(await tryConnect(port)).toBe('ECONNREFUSED');
  });

  test('an address on the machine (127.0.0.9, on lo) starts as usual; -zz lists without binding anything', async () => {
    const up = await echoServer();
    const port = await freePort();
    const f = tmp.config([`port ${port}`, '  interface 127.0.0.1', `    server 127.0.0.1:${up.port}`, '    source 127.0.0.9']);
    const p = await startProxy(['-f', f]);
    expect(logLines(p.stderr())).toContain(`listening on 127.0.0.1:${port}`);
    expect(await tryConnect(port)).toBe('connected');
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
    const foreign = tmp.config([`port ${port}`, '  interface 127.0.0.1', '    server 127.0.0.1:1', `    source ${foreignAddress(4)}`]);
    expect(await runCli(['-zz', '-f', foreign])).toMatchObject({ code: 0, stderr: '', stdout: expect.stringContaining(`\tsource=${foreignAddress(4)}\t`) });
  });

  test('SIGHUP: refuses the new file, logs the line, keeps the running configuration', async () => {
    const up = await echoServer();
    const [keep, add] = [await freePort(), await freePort()];
    const block = (port: number, source: string): string => `port ${port}\n  interface 127.0.0.1\n  server 127.0.0.1:${up.port}\n  source ${source}\n`;
    const f = tmp.config(block(keep, '127.0.0.9'));
    const p = await startProxy(['-f', f]);
    await waitLog(p.stderr, /^worker uid \d+ gid \d+ ready, pid \d+$/);
    const addr = foreignAddress(4);
    fs.writeFileSync(f, block(keep, '127.0.0.9') + block(add, addr));
    const mark = logLines(p.stderr()).length;
    p.child.kill('SIGHUP');
    await waitLog(p.stderr, /^SIGHUP: configuration has errors: keeping the running one$/);
    expect(logLines(p.stderr()).slice(mark)).toEqual([cannotBind(f, 8, addr), 'SIGHUP: configuration has errors: keeping the running one']);
    expect(await tryConnect(keep)).toBe('connected');
    expect(await tryConnect(add)).toBe('ECONNREFUSED');
    expect(await p.stop()).toMatchObject({ code: 0, signal: null });
  });
});
