/**
 * `-z`: the ports, one a line. `-zz`: the service table, one service a line,
 * with its access lists and limits, its bounds and sandbox, its PROXY
 * protocol and upstream settings, and the workers of its identity.
 */
import { formatPrefix } from '../table/access';
import { describeTarget, type Prefix, type Proxying, type Sandbox, type Service } from '../table/service';

/** An access list as -zz shows it: canonical prefixes joined by commas, `-` when empty. */
function prefixList(list: readonly Prefix[]): string {
  return list.length === 0 ? '-' : list.map(formatPrefix).join(',');
}

/** The rlimits a handler gets, `nproc:64,as:1073741824,cpu:10,nofile:256` (those set, in this order), `-` for none. */
function rlimitList(s: Sandbox): string {
  const set = (
    [
      ['nproc', s.rlimitNproc],
      ['as', s.rlimitAs],
      ['cpu', s.rlimitCpu],
      ['nofile', s.rlimitNofile],
    ] as const
  ).flatMap(([k, v]) => (v === null ? [] : [`${k}:${v}`]));
  return set.length === 0 ? '-' : set.join(',');
}

/** The PROXY protocol and upstream fields: `send-proxy=v1|v2|none accept-proxy=none|any|P1,P2 balance=B source=ADDR|none`. */
function proxyFields(p: Proxying): string[] {
  const accept = p.acceptProxy === null ? 'none' : p.acceptProxy.length === 0 ? 'any' : prefixList(p.acceptProxy);
  return [`send-proxy=${p.sendProxy === null ? 'none' : `v${p.sendProxy}`}`, `accept-proxy=${accept}`, `balance=${p.balance}`, `source=${p.source ?? 'none'}`];
}

export function listing(services: readonly Service[], level: 1 | 2, workers = 1): string {
  if (level === 1) return [...new Set(services.map((s) => s.port))].map((p) => `${p}\n`).join('');
  return services
    .map((s) =>
      [
        `port=${s.port}`,
        `interface=${s.iface ?? '*'}`,
        describeTarget(s.target).replace(' ', '='),
        `uid=${s.uid ?? '-'}`,
        `gid=${s.gid ?? '-'}`,
        `timeout=${s.timeoutSec}`,
        `acp=${s.acp ?? '-'}`,
        `writefile=${s.writefile ?? '-'}`,
        `prefix=${s.prefix}`,
        `allow=${prefixList(s.access.allow)}`,
        `deny=${prefixList(s.access.deny)}`,
        `maxconn=${s.access.maxconn ?? '-'}`,
        `per-source=${s.access.perSource ?? '-'}`,
        `rate=${s.access.rate ?? '-'}`,
        `handler-timeout=${s.bounds.handlerTimeoutSec}`,
        `keepalive=${s.bounds.keepalive ? 'yes' : 'no'}`,
        `writefile-max=${s.bounds.writefileMax}`,
        `no-new-privs=${s.sandbox.noNewPrivs ? 'yes' : 'no'}`,
        `rlimits=${rlimitList(s.sandbox)}`,
        ...proxyFields(s.proxy),
        `loglevel=${s.loglevel}`,
        `workers=${workers}`,
      ].join('\t') + '\n',
    )
    .join('');
}
