// Builds proxied connections the way the daemon does, on loopback with
// kernel-chosen ports: a pauseOnConnect listener accepts the test's client,
// net.connect reaches the real upstream server, and both proxy-side sockets are
// handed to native.pump() as dup'd fds.
import * as net from 'node:net';
import type { Addon, PumpHandle, PumpResult } from '../../../src/sys/native';
import { fdTargets } from '../../helpers/proc';
import { StreamHash } from '../../helpers/servers';

const HOST = '127.0.0.1';

/** Takes over a socket's fd: a CLOEXEC dup for the pump, and the JS socket destroyed. */
export function takeFd(addon: Addon, sock: net.Socket): number {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no fd');
  const dup = addon.dupCloexec(fd);
  sock.destroy();
  return dup;
}

/** Everything a socket receives until EOF: byte count and sha256. */
export function sink(sock: net.Socket): Promise<{ bytes: number; sha256: string; text: string }> {
  const hash = new StreamHash();
  let head = '';
  return new Promise((resolve, reject) => {
    sock.on('data', (b: Buffer) => {
      hash.update(b);
      if (head.length < 256) head += b.toString('latin1');
    });
    sock.once('end', () => resolve({ ...hash.digest(), text: head }));
    sock.once('error', reject);
  });
}

/** Open fds of this process, and how many of them are pipes. */
export function fdSnapshot(): { total: number; pipes: number } {
  const targets = fdTargets('self');
  return { total: targets.length, pipes: targets.filter((t) => t.startsWith('pipe:')).length };
}

export interface Session {
  /** The test's client, connected to the proxy listener. */
  readonly client: net.Socket;
  /** The real server's end of the proxy's upstream connection. */
  readonly upstream: net.Socket;
  readonly handle: PumpHandle;
  readonly result: Promise<PumpResult>;
  /** How many times `done` ran (must end at exactly 1). */
  doneCalls(): number;
  settled(): boolean;
  readonly clientErrors: NodeJS.ErrnoException[];
  readonly upstreamErrors: NodeJS.ErrnoException[];
}

export interface Pair {
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  /** The proxy's accepted client socket, as an fd. */
  readonly clientFd: number;
  /** The proxy's upstream socket, as an fd. */
  readonly serverFd: number;
  readonly clientErrors: NodeJS.ErrnoException[];
  readonly upstreamErrors: NodeJS.ErrnoException[];
}

export interface OpenOptions {
  readonly idleMs?: number;
  readonly copy?: boolean;
  /** splice-auto (the pump's default when left out). */
  readonly auto?: boolean;
  /** Runs (and is awaited) once the upstream connection exists, before pump() starts. */
  readonly beforePump?: (upstream: net.Socket) => Promise<void> | void;
}

/** Sockets that an 'accept' handler saw, claimable by the peer's port. */
class AcceptQueue {
  private readonly waiting = new Map<number, (s: net.Socket) => void>();
  private readonly ready = new Map<number, net.Socket>();

  push(sock: net.Socket): void {
    const port = sock.remotePort as number;
    const w = this.waiting.get(port);
    if (w) {
      this.waiting.delete(port);
      w(sock);
    } else {
      this.ready.set(port, sock);
    }
  }

  claim(port: number): Promise<net.Socket> {
    const s = this.ready.get(port);
    if (s) {
      this.ready.delete(port);
      return Promise.resolve(s);
    }
    return new Promise((resolve) => this.waiting.set(port, resolve));
  }
}

export class PumpRig {
  private readonly sockets = new Set<net.Socket>();
  private readonly sessions: Session[] = [];
  private readonly accepted = new AcceptQueue();
  private readonly upstreamAccepted = new AcceptQueue();

  private readonly addon: Addon;
  private readonly listener: net.Server;
  private readonly upstreamServer: net.Server;

  private constructor(addon: Addon, listener: net.Server, upstreamServer: net.Server) {
    this.addon = addon;
    this.listener = listener;
    this.upstreamServer = upstreamServer;
    listener.on('connection', (sock) => this.accepted.push(sock));
    upstreamServer.on('connection', (sock) => {
      this.track(sock);
      sock.on('error', () => undefined); // recorded per session in open()
      this.upstreamAccepted.push(sock);
    });
  }

  static async start(addon: Addon): Promise<PumpRig> {
    const listener = net.createServer({ pauseOnConnect: true });
    const upstream = net.createServer({ allowHalfOpen: true });
    await Promise.all([listen(listener), listen(upstream)]);
    return new PumpRig(addon, listener, upstream);
  }

  private track(sock: net.Socket): void {
    this.sockets.add(sock);
    sock.once('close', () => this.sockets.delete(sock));
  }

  /**
   * A connected client and upstream with the proxy's two sockets taken over as
   * fds, not yet pumped (the caller owns the fds).
   */
  async pair(opts: Pick<OpenOptions, 'beforePump'> = {}): Promise<Pair> {
    const { addon } = this;
    const client = net.connect({ host: HOST, port: port(this.listener), allowHalfOpen: true });
    this.track(client);
    const clientErrors: NodeJS.ErrnoException[] = [];
    client.on('error', (e) => clientErrors.push(e));
    await new Promise<void>((resolve, reject) => {
      client.once('connect', resolve);
      client.once('error', reject);
    });
    const accepted = await this.accepted.claim(client.localPort as number);

    // Pause and take the fd inside the 'connect' handler: Node skips its first
    // read for a paused socket, so bytes the server sends early stay in the
    // kernel buffer for the pump.
    const proxySide = net.connect({ host: HOST, port: port(this.upstreamServer), allowHalfOpen: true });
    let proxyPort = 0;
    const serverFd = await new Promise<number>((resolve, reject) => {
      proxySide.once('error', reject);
      proxySide.once('connect', () => {
        proxySide.pause();
        proxyPort = proxySide.localPort as number;
        resolve(takeFd(addon, proxySide));
      });
    });
    const clientFd = takeFd(addon, accepted);
    const upstream = await this.upstreamAccepted.claim(proxyPort);
    const upstreamErrors: NodeJS.ErrnoException[] = [];
    upstream.on('error', (e) => upstreamErrors.push(e));
    await opts.beforePump?.(upstream);
    return { client, upstream, clientFd, serverFd, clientErrors, upstreamErrors };
  }

  /** A pumped connection. */
  async open(opts: OpenOptions = {}): Promise<Session> {
    const p = await this.pair(opts);
    let calls = 0;
    let settled = false;
    let resolveResult: (r: PumpResult) => void = () => undefined;
    const result = new Promise<PumpResult>((resolve) => (resolveResult = resolve));
    const base = { client: p.clientFd, server: p.serverFd, idleMs: opts.idleMs ?? 0 };
    const pump = this.addon.pump;
    if (!pump) throw new Error('addon has no pump()');
    const req = {
      ...base,
      ...(opts.copy === undefined ? {} : { copy: opts.copy }),
      ...(opts.auto === undefined ? {} : { auto: opts.auto }),
    };
    const handle = pump(req, (r) => {
      calls++;
      settled = true;
      resolveResult(r);
    });
    const session: Session = {
      client: p.client,
      upstream: p.upstream,
      handle,
      result,
      doneCalls: () => calls,
      settled: () => settled,
      clientErrors: p.clientErrors,
      upstreamErrors: p.upstreamErrors,
    };
    this.sessions.push(session);
    return session;
  }

  /** Ends every session still running, destroys every socket, closes both servers. */
  async close(): Promise<void> {
    for (const s of this.sessions) s.handle.abort();
    await Promise.all(this.sessions.map((s) => s.result));
    for (const s of this.sockets) s.destroy();
    await Promise.all([close(this.listener), close(this.upstreamServer)]);
  }
}

function listen(server: net.Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolve());
  });
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function port(server: net.Server): number {
  return (server.address() as net.AddressInfo).port;
}
