/**
 * Transcripts (`-w base` / `writefile base`): one file per connection,
 * `<base>.<N>.log`, created by the service identity with
 * O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, so an existing file or a symlink
 * planted at the name is never written through: the next N is taken instead.
 * Each chunk is a header line `<ISO time> <c>s|s>c> <bytes>\n`, then the raw
 * bytes exactly as forwarded.
 */
import * as fs from 'node:fs';

export type Direction = 'c>s' | 's>c';

export interface Transcript {
  readonly path: string;
  /** The number in the file name (the connection number unless that name was taken). */
  readonly n: number;
  /** The write error that stopped recording, if one did. */
  readonly failure: string | null;
  write(direction: Direction, chunk: Buffer): void;
  close(): void;
}

/** Names tried after the connection's own number is taken. */
const ATTEMPTS = 1000;

export function openTranscript(base: string, n: number): Transcript {
  const { O_CREAT, O_EXCL, O_NOFOLLOW, O_WRONLY } = fs.constants;
  let last: unknown;
  for (let i = 0; i < ATTEMPTS; i++) {
    const path = `${base}.${n + i}.log`;
    let fd: number;
    try {
      fd = fs.openSync(path, O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY, 0o600);
    } catch (err) {
      last = err;
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw err;
    }
    let failure: string | null = null;
    return {
      path,
      n: n + i,
      get failure() {
        return failure;
      },
      write(direction, chunk) {
        if (failure !== null) return;
        try {
          fs.writeSync(fd, `${new Date().toISOString()} ${direction} ${chunk.length}\n`);
          fs.writeSync(fd, chunk);
        } catch (err) {
          // A full disk must not break the connection; the session logs it at the end.
          failure = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        }
      },
      close() {
        fs.closeSync(fd);
      },
    };
  }
  throw last;
}
