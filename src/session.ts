/**
 * One client connection, from hand-over to its end record. Independent of
 * the process that runs it: the standalone master (and later each worker)
 * and inetd mode call `runSession` with a client the engine already holds.
 */
import type * as net from 'node:net';
import { formatHostPort } from './address';
import type { Engine, ForwardResult, HeldClient } from './forward';
import type { Logger } from './log';
import { describeTarget, type Service } from './service';
import { connectUpstream } from './upstream';

export interface SessionContext {
  /** Connection number, unique in this daemon; shown in every line of the connection. */
  readonly id: number;
  readonly client: HeldClient;
  readonly service: Service;
  readonly engine: Engine;
  readonly log: Logger;
}

export interface SessionEnd {
  readonly result: ForwardResult | null;
}

/** Formats the end record of a connection for the log. */
export function describeEnd(r: ForwardResult): string {
  const why = r.error === undefined ? r.end : `${r.end} (${r.side === undefined ? '' : `${r.side}: `}${r.error})`;
  return `${r.bytesUp} bytes up, ${r.bytesDown} down, ${r.durationMs} ms, ${why}, ${r.path}`;
}

/** Runs the connection to its end; never rejects. */
export async function runSession(ctx: SessionContext): Promise<SessionEnd> {
  const { client, service, log, id, engine } = ctx;
  const tag = `connection ${id}`;
  const e = client.endpoints;
  log.info(
    `${tag}: client ${formatHostPort(e.clientAddress, e.clientPort)} on ${formatHostPort(e.localAddress, e.localPort)}: ${describeTarget(service.target)}`,
  );
  if (service.target.kind !== 'server') {
    log.error(`${tag}: exec handlers are not implemented yet`);
    engine.release(client);
    return { result: null };
  }
  const { host, port } = service.target.server;
  const upstreamPort = port ?? e.localPort;
  let server: net.Socket;
  try {
    server = await connectUpstream(host, upstreamPort);
  } catch (err) {
    log.error(`${tag}: server ${formatHostPort(host, upstreamPort)}: ${(err as Error).message}`);
    engine.release(client);
    return { result: null };
  }
  return new Promise((resolve) => {
    try {
      engine.forward(client, server, service.timeoutSec * 1000, (r) => {
        log.info(`${tag}: end: ${describeEnd(r)}`);
        resolve({ result: r });
      });
    } catch (err) {
      log.error(`${tag}: cannot forward: ${(err as Error).message}`);
      engine.release(client);
      server.destroy();
      resolve({ result: null });
    }
  });
}
