/**
 * One client connection, from hand-over to its end record. Independent of
 * the process that runs it: standalone workers and inetd mode both call
 * `runSession` with a paused client socket and the service found for it.
 */
import type * as net from 'node:net';
import { formatHostPort, plainAddress } from './address';
import type { Forwarder, ForwardResult } from './forward';
import type { Logger } from './log';
import { describeTarget, type Service } from './service';
import { connectUpstream } from './upstream';

export interface SessionContext {
  /** Connection number, unique in this daemon; shown in every line of the connection. */
  readonly id: number;
  readonly client: net.Socket;
  readonly service: Service;
  readonly forward: Forwarder;
  readonly log: Logger;
}

export interface SessionEnd {
  readonly result: ForwardResult | null;
}

function peer(sock: net.Socket): string {
  return formatHostPort(plainAddress(sock.remoteAddress), sock.remotePort ?? 0);
}

function local(sock: net.Socket): string {
  return formatHostPort(plainAddress(sock.localAddress), sock.localPort ?? 0);
}

/** Formats the end record of a connection for the log. */
export function describeEnd(r: ForwardResult): string {
  const why = r.error === undefined ? r.end : `${r.end} (${r.side ?? ''} ${r.error})`.replace('( ', '(');
  return `${r.bytesUp} bytes up, ${r.bytesDown} down, ${r.durationMs} ms, ${why}, ${r.path}`;
}

/** Runs the connection to its end; never rejects. */
export async function runSession(ctx: SessionContext): Promise<SessionEnd> {
  const { client, service, log, id } = ctx;
  const tag = `connection ${id}`;
  const localPort = client.localPort ?? 0;
  log.info(`${tag}: client ${peer(client)} on ${local(client)}: ${describeTarget(service.target)}`);
  if (service.target.kind !== 'server') {
    log.error(`${tag}: exec handlers are not implemented yet`);
    client.destroy();
    return { result: null };
  }
  const { host, port } = service.target.server;
  const upstreamPort = port ?? localPort;
  // A client that resets while we connect must not crash the process.
  const early = (err: Error): void => log.info(`${tag}: client gone while connecting: ${err.message}`);
  client.on('error', early);
  let server: net.Socket;
  try {
    server = await connectUpstream(host, upstreamPort);
  } catch (err) {
    log.error(`${tag}: server ${formatHostPort(host, upstreamPort)}: ${(err as Error).message}`);
    client.destroy();
    return { result: null };
  }
  client.off('error', early);
  if (client.destroyed) {
    server.destroy();
    log.info(`${tag}: client closed before the server answered`);
    return { result: null };
  }
  return new Promise((resolve) => {
    try {
      ctx.forward(client, server, service.timeoutSec * 1000, (r) => {
        log.info(`${tag}: end: ${describeEnd(r)}`);
        resolve({ result: r });
      });
    } catch (err) {
      log.error(`${tag}: cannot forward: ${(err as Error).message}`);
      client.destroy();
      server.destroy();
      resolve({ result: null });
    }
  });
}
