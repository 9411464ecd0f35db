/**
 * The benchmark's echo upstream, run as its own process (pinned to the load
 * CPU by the parent): echoes every byte back, closes after the peer's FIN,
 * and holds idle connections for as long as they stay open. It lives in a
 * different process from the load generator so each stays well under the
 * RLIMIT_NOFILE hard limit with 9,000 idle connections.
 *
 * A connection that begins with the PROXY protocol v2 signature (the
 * send-proxy variant) has that header dropped before the echo: the load
 * client gets back only its own bytes. The load's payload ('a' × 64) never
 * looks like the signature.
 *
 * IPC: sends {type:'listening', port}; answers {type:'count'} with
 * {type:'count', open, accepted}.
 */
import * as net from 'node:net';

/** The 12 bytes a PROXY protocol v2 header starts with. */
const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

/**
 * Echoes `sock`, first dropping a PROXY v2 header if the connection starts
 * with one (the header's length is in bytes 14-15 of it).
 */
function echo(sock: net.Socket): void {
  let head: Buffer | null = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => {
    if (head === null) {
      sock.write(d);
      return;
    }
    head = head.length === 0 ? d : Buffer.concat([head, d]);
    const n = Math.min(head.length, V2_SIGNATURE.length);
    if (!head.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) {
      sock.write(head);
      head = null;
      return;
    }
    if (head.length < 16) return;
    const total = 16 + head.readUInt16BE(14);
    if (head.length < total) return;
    const rest = head.subarray(total);
    head = null;
    if (rest.length > 0) sock.write(rest);
  });
}

export type UpstreamMsg = { type: 'listening'; port: number } | { type: 'count'; open: number; accepted: number };

function main(): void {
  let open = 0;
  let accepted = 0;
  const server = net.createServer({ noDelay: true }, (sock) => {
    open++;
    accepted++;
    echo(sock);
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
