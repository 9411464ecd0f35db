import { listing } from '../../src/modes/list';
import { parseConfig } from '../../src/table/config';
import type { Service } from '../../src/table/service';

function services(text: string): readonly Service[] {
  const r = parseConfig(text, 'list.conf', () => null);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config.services;
}

describe('-zz listing', () => {
  it('shows the lists and limits of every service after prefix=, then the bounds and sandbox, then workers=', () => {
    const text = [
      'deny 192.0.2.0/24',
      'rate 50',
      'port 8000',
      '  allow 10.1.0.0/16 2001:DB8::/32 127.0.0.7',
      '  deny 10.1.99.0/24',
      '  per-source 4',
      '  maxconn 200',
      '  server 127.0.0.1:80',
      '  interface 127.0.0.2',
      '    deny 2001:db8:99::/48 ::1',
      '    server 127.0.0.1:81',
      'port 8001',
      '  exec /bin/cat',
      'port 8002',
      '  allow ::/0',
      '  exec /bin/cat',
      '',
    ].join('\n');
    expect(listing(services(text), 2, 3).split('\n')).toEqual([
      'port=8000\tinterface=*\tserver=127.0.0.1:80\tuid=-\tgid=-\ttimeout=60\tacp=-\twritefile=-\tprefix=PROXY_\tallow=10.1.0.0/16,2001:db8::/32,127.0.0.7/32\tdeny=10.1.99.0/24\tmaxconn=200\tper-source=4\trate=50\thandler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=3',
      'port=8000\tinterface=127.0.0.2\tserver=127.0.0.1:81\tuid=-\tgid=-\ttimeout=60\tacp=-\twritefile=-\tprefix=PROXY_\tallow=-\tdeny=2001:db8:99::/48,::1/128\tmaxconn=200\tper-source=4\trate=50\thandler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=3',
      'port=8001\tinterface=*\texec=/bin/cat\tuid=-\tgid=-\ttimeout=60\tacp=-\twritefile=-\tprefix=PROXY_\tallow=-\tdeny=192.0.2.0/24\tmaxconn=-\tper-source=-\trate=50\thandler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=3',
      'port=8002\tinterface=*\texec=/bin/cat\tuid=-\tgid=-\ttimeout=60\tacp=-\twritefile=-\tprefix=PROXY_\tallow=::/0\tdeny=-\tmaxconn=-\tper-source=-\trate=50\thandler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=3',
      '',
    ]);
  });

  it('shows - for every field of a service without lists or limits', () => {
    expect(listing(services('port 7\n  server h\n'), 2)).toBe(
      'port=7\tinterface=*\tserver=h\tuid=-\tgid=-\ttimeout=60\tacp=-\twritefile=-\tprefix=PROXY_\tallow=-\tdeny=-\tmaxconn=-\tper-source=-\trate=-\thandler-timeout=0\tkeepalive=yes\twritefile-max=104857600\tno-new-privs=yes\trlimits=-\tsend-proxy=none\taccept-proxy=none\tbalance=first\tsource=none\tloglevel=normal\tworkers=1\n',
    );
  });

  it('shows the bounds and the sandbox after rate= (rlimits: those set, in the order nproc, as, cpu, nofile)', () => {
    const text = [
      'rlimit-nofile 64',
      'keepalive no',
      'port 7',
      '  handler-timeout 30',
      '  writefile-max 1M',
      '  no-new-privs no',
      '  rlimit-as 1G',
      '  exec /bin/cat',
      '  interface 127.0.0.2',
      '    rlimit-nproc 10',
      '    rlimit-cpu 5',
      '    exec /bin/cat',
      'port 8',
      '  server h',
      '',
    ].join('\n');
    expect(listing(services(text), 2).split('\n').map((l) => l.split('\t').slice(14, 19).join(' '))).toEqual([
      'handler-timeout=30 keepalive=no writefile-max=1048576 no-new-privs=no rlimits=as:1073741824,nofile:64',
      'handler-timeout=30 keepalive=no writefile-max=1048576 no-new-privs=no rlimits=nproc:10,as:1073741824,cpu:5,nofile:64',
      'handler-timeout=0 keepalive=no writefile-max=104857600 no-new-privs=yes rlimits=nofile:64',
      '',
    ]);
  });

  it('shows the PROXY protocol and upstream fields after rlimits=, before workers=; a group as its servers separated by spaces', () => {
    const text = [
      'send-proxy v1',
      'accept-proxy 10.0.0.0/8 2001:DB8::/32 127.0.0.1',
      'port 7',
      '  server A:25 [::1]:26 c',
      '  balance RoundRobin',
      '  source 2001:DB8::9',
      '  interface 127.0.0.2',
      '    server h',
      '    send-proxy v2',
      '    accept-proxy',
      '    balance source',
      '    source 127.0.0.9',
      '  interface 127.0.0.3',
      '    server h',
      '    send-proxy none',
      '    accept-proxy none',
      '',
    ].join('\n');
    const lines = listing(services(text), 2).split('\n');
    expect(lines.map((l) => l.split('\t').slice(2, 3).concat(l.split('\t').slice(19)).join(' '))).toEqual([
      'server=a:25 [::1]:26 c send-proxy=v1 accept-proxy=10.0.0.0/8,2001:db8::/32,127.0.0.1/32 balance=roundrobin source=2001:db8::9 loglevel=normal workers=1',
      'server=h send-proxy=v2 accept-proxy=any balance=source source=127.0.0.9 loglevel=normal workers=1',
      'server=h send-proxy=none accept-proxy=none balance=roundrobin source=2001:db8::9 loglevel=normal workers=1',
      '',
    ]);
  });

  it('lists only the ports with -z', () => {
    expect(listing(services('port 7\n  allow 10.0.0.0/8\n  server h\nport 9\n  maxconn 1\n  server h\n'), 1)).toBe('7\n9\n');
  });
});
