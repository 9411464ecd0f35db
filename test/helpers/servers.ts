/**
 * Upstream servers for the integration tests: loopback only, ephemeral ports
 * unless a test needs a literal one, every socket tracked so that
 * closeAllServers() leaves nothing behind. Also the deterministic payloads
 * and the hashing both ends of a transfer compare.
 */
import { createCipheriv, createHash, type Hash } from 'node:crypto';
import * as net from 'node:net';

/** What one end received: byte count and sha256 (hex). */
export interface Digest {
  readonly bytes: number;
  readonly sha256: string;
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

export function digestOf(buf: Buffer): Digest {
  return { bytes: buf.length, sha256: sha256(buf) };
}

/** A running count and sha256 of a byte stream; digest() may be called at any time. */
export class StreamHash {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;

  update(chunk: Buffer): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
  }

  digest(): Digest {
    return { bytes: this.bytes, sha256: this.hash.copy().digest('hex') };
  }
}

/**
 * `n` deterministic pseudo-random bytes: the AES-128-CTR key stream of a key
 * derived from `seed`. Different seeds give unrelated payloads; it is fast
 * enough for 50 MB.
 */
export function payload(n: number, seed: number | string): Buffer {
  const key = createHash('sha256').update(`tcpproxy-test-payload:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const out = Buffer.concat([cipher.update(Buffer.alloc(n)), cipher.final()]);
  return out.subarray(0, n);
}

export interface ListenOptions {
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 0 (ephemeral). */
  readonly port?: number;
}

export interface Upstream {
  readonly server: net.Server;
  readonly host: string;
  readonly port: number;
  /** Every connection accepted so far, in order. */
  readonly sockets: net.Socket[];
  /** The remote address of each, recorded at accept (a closed socket forgets it). */
  readonly peers: string[];
  /** Errors seen on accepted sockets (an upstream must never crash the test run). */
  readonly errors: Error[];
  /** Stops listening and destroys the accepted sockets. */
  close(): Promise<void>;
}

const liveServers = new Set<Upstream>();

/**
 * A loopback server calling `handler` for each connection. Sockets are
 * half-open capable: a handler decides itself when to end its side.
 */
export function startServer(handler: (socket: net.Socket) => void, opts: ListenOptions = {}): Promise<Upstream> {
  const host = opts.host ?? '127.0.0.1';
  const sockets: net.Socket[] = [];
  const peers: string[] = [];
  const errors: Error[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.push(socket);
    peers.push(socket.remoteAddress ?? '');
    socket.on('error', (err) => errors.push(err));
    handler(socket);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: opts.port ?? 0 }, () => {
      server.off('error', reject);
      const address = server.address() as net.AddressInfo;
      const upstream: Upstream = {
        server,
        host,
        port: address.port,
        sockets,
        peers,
        errors,
        close: () =>
          new Promise<void>((done) => {
            liveServers.delete(upstream);
            for (const s of sockets) s.destroy();
            server.close(() => done());
          }),
      };
      liveServers.add(upstream);
      resolve(upstream);
    });
  });
}

/** Closes every server started through this module and not yet closed. */
export async function closeAllServers(): Promise<void> {
  await Promise.all([...liveServers].map((u) => u.close()));
}

/** Sends back everything it receives; ends its side after the client's FIN. */
export function echoServer(opts: ListenOptions = {}): Promise<Upstream> {
  return startServer((socket) => socket.pipe(socket), opts);
}

export interface SinkUpstream extends Upstream {
  /** One digest per connection whose client side has ended, in the order they ended. */
  readonly received: Digest[];
}

/**
 * Hashes everything it receives and records the digest at the client's FIN.
 * With `send`, it also writes `send` at once and ends its side after it
 * (both directions at the same time); without, it ends its side after the
 * client's FIN.
 */
export async function sinkServer(opts: ListenOptions & { readonly send?: Buffer } = {}): Promise<SinkUpstream> {
  const received: Digest[] = [];
  const upstream = await startServer((socket) => {
    const hash = new StreamHash();
    socket.on('data', (chunk: Buffer) => hash.update(chunk));
    socket.on('end', () => {
      received.push(hash.digest());
      if (opts.send === undefined) socket.end();
    });
    if (opts.send !== undefined) socket.end(opts.send);
  }, opts);
  return Object.assign(upstream, { received });
}

/** Writes `banner` as soon as a client connects, then echoes what it receives. */
export function speaksFirstServer(banner: string | Buffer, opts: ListenOptions = {}): Promise<Upstream> {
  return startServer((socket) => {
    socket.write(banner);
    socket.pipe(socket);
  }, opts);
}

/** Writes `data` and ends its side at once; whatever the client sends is read and dropped. */
export function senderServer(data: Buffer, opts: ListenOptions = {}): Promise<Upstream> {
  return startServer((socket) => {
    socket.resume();
    socket.on('end', () => socket.end());
    socket.end(data);
  }, opts);
}

export interface ResetUpstream extends Upstream {
  /** How many connections it has reset. */
  readonly resets: () => number;
}

/** Resets the connection (RST, SO_LINGER 0) once it has received at least `afterBytes` bytes. */
export async function resetServer(afterBytes: number, opts: ListenOptions = {}): Promise<ResetUpstream> {
  let resets = 0;
  const upstream = await startServer((socket) => {
    let got = 0;
    socket.on('data', (chunk: Buffer) => {
      got += chunk.length;
      if (got >= afterBytes && !socket.destroyed) {
        resets++;
        socket.resetAndDestroy();
      }
    });
  }, opts);
  return Object.assign(upstream, { resets: () => resets });
}
