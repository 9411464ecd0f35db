/** Setups that several suites build the same way. */
import { freePortOn } from './ports';
import { speaksFirstServer, type Upstream } from './servers';
import type { TempDir } from './setup';

export interface TwoInterfaces {
  /** The port, free on both 127.0.0.2 and 127.0.0.3. */
  readonly port: number;
  /** Greets with `banner A\n`: the upstream of 127.0.0.2. */
  readonly upstreamA: Upstream;
  /** Greets with `banner B\n`: the upstream of 127.0.0.3. */
  readonly upstreamB: Upstream;
  /** The config file (in `tmp`): the port on the two interfaces, each forwarding to its upstream. */
  readonly conf: string;
}

/** One port on two interfaces (127.0.0.2, 127.0.0.3), each routed to an upstream of its own that speaks first. */
export async function twoInterfaces(tmp: TempDir): Promise<TwoInterfaces> {
  const upstreamA = await speaksFirstServer('banner A\n');
  const upstreamB = await speaksFirstServer('banner B\n');
  const port = await freePortOn(['127.0.0.2', '127.0.0.3']);
  const conf = tmp.config([
    `port ${port}`,
    '  interface 127.0.0.2',
    `    server 127.0.0.1:${upstreamA.port}`,
    '  interface 127.0.0.3',
    `    server 127.0.0.1:${upstreamB.port}`,
  ]);
  return { port, upstreamA, upstreamB, conf };
}
