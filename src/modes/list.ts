/**
 * `-z`: the ports, one a line. `-zz`: the service table, one service a line,
 * with its access lists and limits and the workers of its identity.
 */
import { formatPrefix } from '../table/access';
import { describeTarget, type Prefix, type Service } from '../table/service';

/** An access list as -zz shows it: canonical prefixes joined by commas, `-` when empty. */
function prefixList(list: readonly Prefix[]): string {
  return list.length === 0 ? '-' : list.map(formatPrefix).join(',');
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
        `workers=${workers}`,
      ].join('\t') + '\n',
    )
    .join('');
}
