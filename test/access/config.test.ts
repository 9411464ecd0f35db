/**
 * The access directives (issue 12) from the built command. Their config
 * errors: one run of `tcpproxy -z -f bad.conf` prints every one of them,
 * each as `tcpproxy:FILE:LINE: message` (several bad prefixes on one line:
 * one error each), then the count, and exits 2 with nothing on stdout, as
 * every config error does (test/integration/cli-run.test.ts). The messages
 * themselves are pinned in test/unit/config.test.ts. And -zz: the lists
 * (canonical, comma-joined) and limits of each service after the scope
 * rules.
 */
import { runCli } from '../helpers/daemon';
import { useTempDir } from '../helpers/setup';

const tmp = useTempDir('tcpproxy-access-config-');

test('every bad access directive is reported at its line in one run, exit 2', async () => {
  const f = tmp.config([
    'allow', // 1
    'maxconn 0', // 2
    'port 7000', // 3
    '  deny 10.1.2.3/8 foo', // 4: two errors
    '  allow 10.0.0.0/33 2001:db8::/129', // 5: two errors
    '  deny ::ffff:10.0.0.1', // 6
    '  allow 10.0.0.0/08', // 7
    '  per-source 1x', // 8
    '  rate 1000000001', // 9
    '  maxconn 5', // 10
    '  maxconn 6', // 11
    '  interface 127.0.0.1', // 12
    '    deny', // 13
    '    allow 127.0.0.1/32 ::1', // 14: fine
    '    server 127.0.0.1:7', // 15
  ]);
  const r = await runCli(['-z', '-f', f]);
  expect({ code: r.code, stdout: r.stdout, stderr: r.stderr.split('\n') }).toEqual({
    code: 2,
    stdout: '',
    stderr: [
      `tcpproxy:${f}:1: "allow" needs at least one prefix`,
      `tcpproxy:${f}:2: invalid maxconn "0": expected a whole number from 1 to 1000000000`,
      `tcpproxy:${f}:4: invalid prefix "10.1.2.3/8": host bits are set (the network is 10.0.0.0/8)`,
      `tcpproxy:${f}:4: invalid prefix "foo": expected an IPv4 or IPv6 address with an optional /length`,
      `tcpproxy:${f}:5: invalid prefix "10.0.0.0/33": the length must be 0-32`,
      `tcpproxy:${f}:5: invalid prefix "2001:db8::/129": the length must be 0-128`,
      `tcpproxy:${f}:6: invalid prefix "::ffff:10.0.0.1": write an IPv4-mapped address as IPv4 (10.0.0.1)`,
      `tcpproxy:${f}:7: invalid prefix "10.0.0.0/08": expected an IPv4 or IPv6 address with an optional /length`,
      `tcpproxy:${f}:8: invalid per-source "1x": expected a whole number from 1 to 1000000000`,
      `tcpproxy:${f}:9: invalid rate "1000000001": expected a whole number from 1 to 1000000000`,
      `tcpproxy:${f}:11: duplicate "maxconn" (first on line 10)`,
      `tcpproxy:${f}:13: "deny" needs at least one prefix`,
      `tcpproxy:${f}: 12 errors`,
      '',
    ],
  });
});

test('written well: -z accepts the file; -zz shows the lists and limits each service ends up with', async () => {
  const f = tmp.config([
    'allow 10.0.0.0/8 2001:db8::/32',
    'maxconn 1000000000',
    'port 7000',
    '  deny 10.1.0.0/16',
    '  deny 10.2.3.4',
    '  per-source 1',
    '  rate 1',
    '  interface 127.0.0.1',
    '    allow ::/0 0.0.0.0/0',
    '    maxconn 1',
    '    server 127.0.0.1:7',
    '  interface 127.0.0.2',
    '    server 127.0.0.1:7',
    'port 7001',
    '  server 127.0.0.1:7',
  ]);
  expect(await runCli(['-z', '-f', f])).toMatchObject({ code: 0, stdout: '7000\n7001\n', stderr: '' });
  const zz = await runCli(['-zz', '-f', f]);
  const common = 'uid=-\tgid=-\ttimeout=60\tacp=-\twritefile=-\tprefix=PROXY_';
  const bounds = 'handler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-';
  expect({ code: zz.code, stderr: zz.stderr, lines: zz.stdout.split('\n') }).toEqual({
    code: 0,
    stderr: '',
    lines: [
      // Its own allow: both lists its own (deny empty); maxconn its own, the rest the port's.
      `port=7000\tinterface=127.0.0.1\tserver=127.0.0.1:7\t${common}\tallow=::/0,0.0.0.0/0\tdeny=-\tmaxconn=1\tper-source=1\trate=1\t${bounds}\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=1`,
      // The port's lists: its deny lines, and no allow (the global one is replaced).
      `port=7000\tinterface=127.0.0.2\tserver=127.0.0.1:7\t${common}\tallow=-\tdeny=10.1.0.0/16,10.2.3.4/32\tmaxconn=1000000000\tper-source=1\trate=1\t${bounds}\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=1`,
      // Nothing of its own: the global defaults.
      `port=7001\tinterface=*\tserver=127.0.0.1:7\t${common}\tallow=10.0.0.0/8,2001:db8::/32\tdeny=-\tmaxconn=1000000000\tper-source=-\trate=-\t${bounds}\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=1`,
      '',
    ],
  });
});
