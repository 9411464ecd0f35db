/**
 * The benchmark's echo upstream, run as its own process (pinned to the load
 * CPU by the parent): echoes every byte back, closes after the peer's FIN,
 * and holds idle connections for as long as they stay open. It lives in a
 * different process from the load generator so each stays well under the
 * RLIMIT_NOFILE hard limit with 9,000 idle connections.
 *
 * IPC: sends {type:'listening', port}; answers {type:'count'} with
 * {type:'count', open, accepted}.
 */
import * as net from 'node:net';

export type UpstreamMsg = { type: 'listening'; port: number } | { type: 'count'; open: number; accepted: number };

function main(): void {
  let open = 0;
  let accepted = 0;
  const server = net.createServer({ noDelay: true }, (sock) => {
    open++;
    accepted++;
    sock.on('data', (d) => sock.write(d));
    sock.on('error', () => {});
    sock.on('close', () => open--);
  });
  server.on('error', (err) => {
    process.stderr.write(`bench upstream: ${err.message}\n`);
    process.exit(1);
  });
  server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
    const addr = server.address() as net.AddressInfo;
    process.send?.({ type: 'listening', port: addr.port } satisfies UpstreamMsg);
  });
  process.on('message', (m: { type: string }) => {
    if (m.type === 'count') process.send?.({ type: 'count', open, accepted } satisfies UpstreamMsg);
  });
  process.on('disconnect', () => process.exit(0));
}

if (require.main === module) main();
