/** `-z`: the ports, one a line. `-zz`: the service table, one service a line, with the workers of its identity. */
import { describeTarget, type Service } from '../table/service';

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
        `workers=${workers}`,
      ].join('\t') + '\n',
    )
    .join('');
}
