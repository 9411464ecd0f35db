/**
 * The client side of the integration tests: a socket whose every received
 * byte is hashed (and kept, unless told not to) from the moment it connects,
 * and whose end is recorded as one of: a clean FIN, an error (with its code),
 * or a close.
 */
import * as net from 'node:net';
import { StreamHash, type Digest } from './servers';
import { until } from './until';

const liveClients = new Set<Client>();

export interface ConnectOptions {
  /** Keep the received bytes for data(); default true. Off for large transfers. */
  readonly keep?: boolean;
  /** Bound on the connect itself; default 5000 ms. */
  readonly timeoutMs?: number;
  /** The source address to bind (e.g. 127.0.0.7: any of 127.0.0.0/8 works on the loopback); default the kernel's choice. */
  readonly localAddress?: string;
}

export class Client {
  readonly socket: net.Socket;
  /** Date.now() when the connection was established. */
  readonly connectedAt: number;
  /** Its own address and port, recorded at connect (a closed socket forgets them). */
  readonly local: { readonly address: string; readonly port: number };
  private readonly hash = new StreamHash();
  private readonly chunks: Buffer[] | null;
  /** Set at the peer's FIN. */
  ended = false;
  /** The first socket error (e.g. ECONNRESET), if any. */
  error: NodeJS.ErrnoException | null = null;
  /** Date.now() at 'close', or null while open. */
  closedAt: number | null = null;

  private constructor(socket: net.Socket, keep: boolean) {
    this.socket = socket;
    this.connectedAt = Date.now();
    this.local = { address: socket.localAddress ?? '', port: socket.localPort ?? 0 };
    this.chunks = keep ? [] : null;
    socket.on('data', (chunk: Buffer) => {
      this.hash.update(chunk);
      this.chunks?.push(chunk);
    });
    socket.on('end', () => {
      this.ended = true;
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.error ??= err;
    });
    socket.on('close', () => {
      this.closedAt = Date.now();
      liveClients.delete(this);
    });
    liveClients.add(this);
  }

  /** Connects to `host:port` ('*' means 127.0.0.1), from `localAddress` if given, and starts recording. */
  static connect(host: string, port: number, opts: ConnectOptions = {}): Promise<Client> {
    const target = host === '*' ? '127.0.0.1' : host;
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: target, port, ...(opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {}) });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${target}:${port} took more than ${opts.timeoutMs ?? 5000} ms`));
      }, opts.timeoutMs ?? 5000);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new Client(socket, opts.keep ?? true));
      });
    });
  }

  get received(): number {
    return this.hash.bytes;
  }

  digest(): Digest {
    return this.hash.digest();
  }

  /** Everything received so far (only with `keep`). */
  data(): Buffer {
    if (this.chunks === null) throw new Error('client was connected with keep: false');
    return Buffer.concat(this.chunks);
  }

  get closed(): boolean {
    return this.closedAt !== null;
  }

  /** Waits until at least `n` bytes have arrived; fails early if the connection closes first. */
  async waitBytes(n: number, timeoutMs = 10000): Promise<void> {
    await until(() => this.received >= n || this.closed, `${n} bytes (have ${this.received})`, timeoutMs);
    if (this.received < n) {
      throw new Error(`connection closed after ${this.received} of ${n} bytes${this.describeEnd()}`);
    }
  }

  /** Waits for 'close' (after a FIN, an error or our own destroy). */
  async waitClosed(timeoutMs = 10000): Promise<void> {
    await until(() => this.closed, 'the connection to close', timeoutMs);
  }

  /** Milliseconds from connect to close. */
  lifetimeMs(): number {
    if (this.closedAt === null) throw new Error('connection still open');
    return this.closedAt - this.connectedAt;
  }

  /** How the connection ended, for assertion messages. */
  describeEnd(): string {
    if (this.error !== null) return ` (error ${this.error.code ?? this.error.message})`;
    if (this.ended) return ' (clean end)';
    return this.closed ? ' (closed)' : '';
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Destroys every client socket still open. */
export function destroyAllClients(): void {
  for (const c of liveClients) c.destroy();
  liveClients.clear();
}
