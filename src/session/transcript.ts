/**
 * Transcripts (`-w base` / `writefile base`): one file per connection,
 * `<base>.<N>.log`, created by the service identity with
 * O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, so an existing file or a symlink
 * planted at the name is never written through. When the connection's own
 * name is taken, a name with a random part (`<base>.<N>.<hex>.log`) is taken
 * instead: names nobody can guess, so no pile of pre-created files can stop
 * the recording. Each chunk is a header line `<ISO time> <c>s|s>c> <bytes>\n`,
 * then the raw bytes exactly as forwarded.
 *
 * Writes are asynchronous (the forwarding never waits for the disk) and
 * bounded: the file stops growing at `writefile-max` bytes, and a disk that
 * falls more than PENDING_MAX bytes behind stops the recording too; either
 * way the session logs why at its end, and the connection goes on.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';

export type Direction = 'c>s' | 's>c';

export interface Transcript {
  readonly path: string;
  /** The number in the file name (the connection number). */
  readonly n: number;
  /** Why recording stopped (a write error, the size cap, a slow disk), if it did. */
  readonly failure: string | null;
  write(direction: Direction, chunk: Buffer): void;
  /** Closes the file once what is queued is written; resolves when it is closed. */
  close(): Promise<void>;
}

/** Random names tried after the connection's own one is taken (each a 64-bit guess nobody made). */
const ATTEMPTS = 8;
/** Bytes queued for the disk at most; beyond, recording stops rather than hold memory. */
export const PENDING_MAX = 16 * 1024 * 1024;

function create(path: string): number {
  const { O_CREAT, O_EXCL, O_NOFOLLOW, O_WRONLY } = fs.constants;
  return fs.openSync(path, O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY, 0o600);
}

export function openTranscript(base: string, n: number, maxBytes: number): Transcript {
  let fd = -1;
  let path = `${base}.${n}.log`;
  try {
    fd = create(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    for (let i = 0; fd < 0; i++) {
      path = `${base}.${n}.${randomBytes(8).toString('hex')}.log`;
      try {
        fd = create(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || i + 1 >= ATTEMPTS) throw e;
      }
    }
  }
  const file = fd;
  let failure: string | null = null;
  let written = 0; // bytes given to the queue, headers included
  let queue: Buffer[] = [];
  let queued = 0;
  let writing = false;
  let closing = false;
  let closed = false;
  let onClosed: () => void = () => {};
  const done = new Promise<void>((resolve) => (onClosed = resolve));

  const finish = (): void => {
    if (closed) return;
    closed = true;
    fs.close(file, () => onClosed());
  };
  const flush = (): void => {
    if (writing) return;
    if (queue.length === 0) {
      if (closing) finish();
      return;
    }
    writing = true;
    const bufs = queue;
    queue = [];
    queued = 0;
    fs.writev(file, bufs, (err) => {
      writing = false;
      // A full disk must not break the connection; the session logs it at the end.
      if (err) {
        failure ??= `write ${err.code ?? err.message}`;
        queue = [];
        queued = 0;
      }
      flush();
    });
  };

  return {
    path,
    n,
    get failure() {
      return failure;
    },
    write(direction, chunk) {
      if (failure !== null || closing) return;
      let data = chunk;
      let header = `${new Date().toISOString()} ${direction} ${data.length}\n`;
      if (written + header.length + data.length > maxBytes) {
        // What still fits, so the file ends at the cap with a header that tells the truth.
        const room = maxBytes - written - header.length;
        failure = `writefile-max ${maxBytes} bytes reached`;
        if (room <= 0) return;
        data = data.subarray(0, room);
        header = `${new Date().toISOString()} ${direction} ${data.length}\n`;
        if (written + header.length + data.length > maxBytes) return;
      }
      if (queued + header.length + data.length > PENDING_MAX) {
        failure = `the disk fell ${PENDING_MAX} bytes behind`;
        return;
      }
      const h = Buffer.from(header);
      // The chunk is the forwarder's: it may be reused once this returns.
      queue.push(h, Buffer.from(data));
      queued += h.length + data.length;
      written += h.length + data.length;
      flush();
    },
    close() {
      closing = true;
      flush();
      return done;
    },
  };
}
