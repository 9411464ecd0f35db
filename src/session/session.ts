/**
 * One client connection, from hand-over to its end record: access control,
 * then a request handler or the upstream connection and forwarding.
 * Independent of the process that runs it: a standalone worker and inetd
 * mode call `runSession` with a client the engine already holds.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import type * as JsForward from '../forward/js';
import { keepAlive, restoreNonblocking, socketFd } from '../forward/socket';
import type { Endpoints, Engine, Forwarding, ForwardResult, HeldClient } from '../forward/types';
import { errorText } from '../sys/errors';
import type { Logger } from '../sys/log';
import { native } from '../sys/native';
import { formatHostPort, plainAddress } from '../table/address';
import { DEFAULT_TIMEOUT_SEC, describeTarget, listenKey, type Sandbox, type Service } from '../table/service';
import { clientName } from './clientname';
import type * as Handlers from './handler';
import type * as Transcripts from './transcript';
import type { Transcript } from './transcript';
import { connectGroup } from './upstream';

/*
 * Loaded on first use: in inetd mode a process serves one connection, and a
 * forward needs neither the handler code nor transcripts nor the JS pump.
 */
/* eslint-disable @typescript-eslint/no-require-imports */
const handlers = (): typeof Handlers => require('./handler') as typeof Handlers;
const transcripts = (): typeof Transcripts => require('./transcript') as typeof Transcripts;
const jsForward = (): typeof JsForward => require('../forward/js') as typeof JsForward;
/* eslint-enable @typescript-eslint/no-require-imports */

/** Loads now all the code the session may load on first use (see preloadFor): the worker's, which serves any service. */
export function preloadAll(): void {
  handlers();
  transcripts();
  jsForward();
}

/**
 * Loads now the code that serving `service` will run, for a process about to
 * drop its privileges: below a directory only root may enter (a private
 * checkout, root's home) the service's ids could not load it later.
 */
export function preloadFor(service: Service): void {
  if (service.acp !== null || service.target.kind === 'exec') handlers();
  if (service.writefile !== null) {
    transcripts();
    jsForward();
  }
}

export interface SessionContext {
  /** Connection number, unique in this daemon; shown in every line of the connection. */
  readonly id: number;
  readonly client: HeldClient;
  readonly service: Service;
  readonly engine: Engine;
  readonly log: Logger;
  /** `-y`: handlers and ACPs start from an empty environment. */
  readonly clearEnv: boolean;
  /** Ids this process runs with, for the log. */
  readonly ids: { readonly uid: number; readonly gid: number };
  /**
   * inetd mode: become the handler (execve, same pid, the socket already on
   * fds 0 and 1) instead of spawning it. Returns only by throwing.
   */
  readonly execInPlace?: (argv: readonly string[], env: NodeJS.ProcessEnv, sandbox: Sandbox) => never;
  /** Aborting ends the session at once: forwarding reset, handler and ACP killed. */
  readonly signal?: AbortSignal;
  /** Told what the session is doing (a worker's status socket and counts). */
  readonly watch?: SessionWatch;
}

/** What a session is doing, as the status socket's -ZZ shows it. */
export type SessionPhase = 'starting' | 'acp' | 'handler' | 'connecting' | 'forwarding';

export interface SessionWatch {
  /** The session moved on; `forwarding` comes with the forwarding, for its bytes so far. */
  phase(p: SessionPhase, f?: Forwarding): void;
  /** A connect to the server at `server` (its place in the group) failed. */
  connectFailed(server: number): void;
}

export interface SessionEnd {
  /** The forwarding record, or null when the connection was not forwarded. */
  readonly result: ForwardResult | null;
  /** False when tcpproxy failed the connection (upstream unreachable, handler not started). */
  readonly ok: boolean;
}

/** Formats the end record of a connection for the log. */
export function describeEnd(r: ForwardResult): string {
  // An `error` without a record (no call failed, so no errno) still names its side.
  const detail = r.error === undefined ? (r.side ?? '') : `${r.side === undefined ? '' : `${r.side}: `}${r.error.message}`;
  const why = detail === '' ? r.end : `${r.end} (${detail})`;
  return `${r.bytesUp} bytes up, ${r.bytesDown} down, ${r.durationMs} ms, ${why}, ${r.path}`;
}

/**
 * Runs the connection to its end; never rejects. Whatever fails in it (a
 * system call, a rejected promise, a bug) is logged and ends this
 * connection only: the client is closed unless a handler or a forwarding
 * already has it.
 */
export async function runSession(ctx: SessionContext): Promise<SessionEnd> {
  let holding = true;
  const hold: Hold = {
    release: () => {
      if (!holding) return;
      holding = false;
      ctx.engine.release(ctx.client);
    },
    handOver: () => {
      holding = false;
    },
  };
  try {
    return await serve(ctx, hold);
  } catch (err) {
    // Nothing in here may throw: the client is closed first, then the lines are logged.
    let closing: unknown = null;
    try {
      hold.release();
    } catch (e) {
      closing = e;
    }
    try {
      ctx.log.error(`connection ${ctx.id}: failed: ${errorText(err)}`);
      if (closing !== null) ctx.log.error(`connection ${ctx.id}: cannot close the client: ${errorText(closing)}`);
    } catch {
      // No log to tell.
    }
    return { result: null, ok: false };
  }
}

/** Who has the client: the session, until it closes it or gives it to a handler or a forwarding. */
interface Hold {
  /** Closes the client if the session still has it (at most once). */
  release(): void;
  /** A forwarding owns the client from now on. */
  handOver(): void;
}

async function serve(ctx: SessionContext, hold: Hold): Promise<SessionEnd> {
  const { client, service, log, id, engine, watch } = ctx;
  const tag = `connection ${id}`;
  // `loglevel quiet`: a connection's informational lines are left out; its warnings and errors never.
  const info = service.loglevel === 'quiet' ? (): void => {} : (m: string): void => log.info(m);
  const e = client.endpoints;
  const via = e.via === undefined ? '' : ` via ${formatHostPort(e.via.address, e.via.port)}`;
  info(
    `${tag}: client ${formatHostPort(e.clientAddress, e.clientPort)}${via} on ${formatHostPort(e.localAddress, e.localPort)}: ` +
      `${describeTarget(service.target)}, uid ${ctx.ids.uid} gid ${ctx.ids.gid}`,
  );
  // Dead peers end even with `timeout 0`; a handler's socket keeps the option.
  if (service.bounds.keepalive) keepAlive(client);
  const needEnv = service.acp !== null || service.target.kind === 'exec';
  const env = needEnv
    ? handlers().handlerEnv({
        prefix: service.prefix,
        endpoints: e,
        clientName: await clientName(e.clientAddress),
        clearEnv: ctx.clearEnv,
        base: process.env,
      })
    : {};

  if (service.acp !== null) {
    // An ACP is always bounded: with `timeout 0` (no idle timeout) it gets the default.
    const acpMs = (service.timeoutSec > 0 ? service.timeoutSec : DEFAULT_TIMEOUT_SEC) * 1000;
    watch?.phase('acp');
    const v = await handlers().runAcp(service.acp, client, env, acpMs, service.sandbox, ctx.signal);
    restoreNonblocking(client);
    const text = `${tag}: acp ${service.acp}: ${v.granted ? 'granted' : 'denied'} (${v.status})${v.message ? `: ${v.message}` : ''}`;
    if (v.granted) info(text);
    else {
      log.warn(text);
      hold.release();
      return { result: null, ok: true };
    }
  }

  if (service.target.kind === 'exec') {
    const argv = service.target.argv;
    if (ctx.execInPlace) {
      info(`${tag}: exec ${argv.join(' ')}`);
      try {
        ctx.execInPlace(argv, env, service.sandbox);
      } catch (err) {
        log.error(`${tag}: ${argv[0] ?? ''}: ${(err as Error).message}`);
        hold.release();
        return { result: null, ok: false };
      }
    }
    const started = Date.now();
    watch?.phase('handler');
    const exit = await handlers().runHandler(argv, client, env, service.sandbox, ctx.signal, {
      stderr: (line) => log.info(`${tag}: ${argv[0] ?? ''}: ${line}`),
      // The handler holds the connection now; our copy must not keep it open.
      spawned: () => hold.release(),
    }, service.bounds.handlerTimeoutSec);
    const text = `${tag}: end: handler ${argv[0] ?? ''} pid ${exit.pid ?? '-'} ${exit.status}, ${Date.now() - started} ms`;
    const handlerRan = !exit.status.startsWith('spawn');
    if (handlerRan) info(text);
    else log.error(text);
    return { result: null, ok: handlerRan };
  }

  const { proxy } = service;
  watch?.phase('connecting');
  const upstream = await connectGroup(
    { key: listenKey(service), servers: service.target.servers, balance: proxy.balance, source: proxy.source, defaultPort: e.localPort },
    e.clientAddress,
    {
      attemptFailed: (server, message, index) => {
        log.error(`${tag}: ${server}: ${message}`);
        watch?.connectFailed(index);
      },
      health: (line, down) => (down ? log.warn(line) : log.info(line)),
    },
  );
  if (upstream === null) {
    hold.release();
    return { result: null, ok: false };
  }
  const server = upstream.sock;
  // The end line's route, read now (a closed socket no longer knows its addresses) and
  // worded as native words it: IPv4-mapped as IPv4, `?` for an address gone. None when quiet.
  let route = '';
  if (service.loglevel !== 'quiet') {
    const hostPort = (a: string | undefined, p: number | undefined): string => (a === undefined || p === undefined ? '?' : formatHostPort(plainAddress(a), p));
    const to = hostPort(server.remoteAddress, server.remotePort);
    const from = hostPort(server.localAddress, server.localPort);
    route = `client ${formatHostPort(e.clientAddress, e.clientPort)} on ${formatHostPort(e.localAddress, e.localPort)}, server ${to} from ${from}`;
    if (service.loglevel === 'verbose') log.info(`${tag}: connected to ${to} from ${from}`);
  }
  if (service.bounds.keepalive) keepAlive(server);
  if (proxy.sendProxy !== null) {
    const problem = sendProxyHeader(server, proxy.sendProxy, e);
    if (problem !== null) {
      log.error(`${tag}: ${upstream.server}: cannot send the PROXY header: ${problem}`);
      server.destroy();
      hold.release();
      return { result: null, ok: false };
    }
  }
  let transcript: Transcript | null = null;
  if (service.writefile !== null) {
    try {
      transcript = transcripts().openTranscript(service.writefile, id, service.bounds.writefileMax);
      info(`${tag}: transcript ${transcript.path}`);
    } catch (err) {
      log.error(`${tag}: transcript ${service.writefile}.${id}.log: ${(err as Error).message}`);
    }
  }
  return new Promise((resolve) => {
    const finish = (r: ForwardResult): void => {
      // The end line once the transcript is on disk: whoever reads the log may read the file.
      const written = transcript ? transcript.close() : Promise.resolve();
      void written.then(() => {
        if (transcript?.failure) log.error(`${tag}: transcript ${transcript.path}: ${transcript.failure}: recording stopped`);
        info(`${tag}: end: ${route}, ${describeEnd(r)}`);
        resolve({ result: r, ok: true });
      });
    };
    try {
      // A transcribed connection goes through the copying JS path; the others keep the engine's.
      // Wrapping the client may still fail while it is ours; the forwarding owns it from the
      // call on, on every path (a pump that cannot start has closed both fds): it is handed
      // over first, so a failure below never closes its number again.
      const sock = transcript ? socketOf(client) : null;
      hold.handOver();
      const f =
        transcript && sock
          ? jsForward().forwardJs(sock, server, service.timeoutSec * 1000, finish, (d, chunk) => transcript.write(d, chunk))
          : engine.forward(client, server, service.timeoutSec * 1000, finish);
      watch?.phase('forwarding', f);
      if (ctx.signal?.aborted) f.abort();
      else ctx.signal?.addEventListener('abort', () => f.abort(), { once: true });
    } catch (err) {
      void transcript?.close();
      log.error(`${tag}: cannot forward: ${(err as Error).message}`);
      hold.release();
      server.destroy();
      resolve({ result: null, ok: false });
    }
  });
}

/**
 * Writes the PROXY header for the client's endpoints to a just-connected
 * upstream, before any client byte; null, or why it could not.
 */
function sendProxyHeader(server: net.Socket, version: 1 | 2, e: Endpoints): string | null {
  const header = native().proxyBuild(
    version,
    { address: e.clientAddress, port: e.clientPort },
    { address: e.localAddress, port: e.localPort },
  );
  try {
    // Nothing is queued on the socket yet: the kernel takes these few bytes whole.
    const n = fs.writeSync(socketFd(server), header);
    return n === header.length ? null : 'short write';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? errorText(err);
  }
}

/** The client as a net.Socket, wrapping a raw fd when the engine held one. */
function socketOf(client: HeldClient): net.Socket {
  if (client.kind === 'socket') return client.sock;
  return new net.Socket({ fd: client.fd, readable: true, writable: true, allowHalfOpen: true });
}
