/**
 * The control socket: a unix stream socket of the standalone master, mode
 * 0600 (only the user that started the daemon may connect), that answers
 * read-only requests with one JSON document and closes. A request is one
 * line, at most MAX_REQUEST bytes: `status`, or `status sessions` for every
 * live session too. A client that has not sent a whole request within
 * CLIENT_MS, or has not taken its whole answer CLIENT_MS later, is dropped;
 * at most MAX_CLIENTS are served at once. Nothing here waits for a client:
 * writes are queued by the event loop, never blocking it.
 *
 * `tcpproxy -Z` is the other end (queryControl).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { errorText, StartError } from '../sys/errors';
import type { Logger } from '../sys/log';

export const MAX_REQUEST = 4096;
export const CLIENT_MS = 10_000;
export const MAX_CLIENTS = 16;
/** The longest answer `tcpproxy -Z` reads (a daemon with very many live sessions). */
const MAX_ANSWER = 256 * 1024 * 1024;

export type Request = { readonly status: true; readonly sessions: boolean };

/** The path is another live daemon's control socket. */
export class ControlBusyError extends StartError {}

/** Where the control socket is when neither `-S` nor `control` names one; null: nowhere (no runtime directory). */
export function defaultControlPath(asRoot: boolean, env: NodeJS.ProcessEnv = process.env): string | null {
  if (asRoot) return '/run/tcpproxy.sock';
  const dir = env['XDG_RUNTIME_DIR'];
  return dir !== undefined && dir.startsWith('/') ? path.join(dir, 'tcpproxy.sock') : null;
}

function parseRequest(line: string): Request | null {
  const words = line.trim().split(/\s+/);
  if (words[0] !== 'status' || words.length > 2) return null;
  if (words.length === 2 && words[1] !== 'sessions') return null;
  return { status: true, sessions: words.length === 2 };
}

/** Is a unix socket at `p` answered by a live process? */
function answered(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(p);
    const done = (v: boolean): void => {
      s.destroy();
      resolve(v);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(1000, () => done(true));
  });
}

export class ControlSocket {
  readonly path: string;
  private readonly server: net.Server;
  private clients = 0;

  private constructor(p: string, server: net.Server) {
    this.path = p;
    this.server = server;
  }

  /**
   * Listens on `p`. A socket file nobody answers on (a daemon that died) is
   * replaced; one that is answered, or anything else at `p`, is an error:
   * a StartError (exit 1) naming the path.
   */
  static async open(p: string, answer: (r: Request) => Promise<unknown>, log: Logger, takeOver = false): Promise<ControlSocket> {
    const fail = (why: string): never => {
      throw new StartError(`cannot listen on the control socket ${p}: ${why}`);
    };
    let st: fs.Stats | null = null;
    try {
      st = fs.lstatSync(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') fail(errorText(err));
    }
    if (st !== null) {
      if (!st.isSocket()) fail('the path exists and is not a socket');
      // An upgrade's new master takes the socket from the master it replaces.
      if (!takeOver && (await answered(p))) throw new ControlBusyError(`cannot listen on the control socket ${p}: another daemon answers on it`);
      try {
        fs.unlinkSync(p);
      } catch (err) {
        fail(`cannot remove the stale socket: ${errorText(err)}`);
      }
    }
    const server = net.createServer({ allowHalfOpen: true });
    // The socket file is made with the umask's mode: 0600 from its first
    // moment (a chmod after bind would leave a window). listen() binds
    // synchronously for a path.
    const old = process.umask(0o177);
    try {
      server.listen(p);
    } finally {
      process.umask(old);
    }
    await new Promise<void>((resolve, reject) => {
      server.once('listening', () => resolve());
      server.once('error', (err: NodeJS.ErrnoException) => reject(new StartError(`cannot listen on the control socket ${p}: ${err.code ?? errorText(err)}`)));
    });
    const c = new ControlSocket(p, server);
    server.on('connection', (sock) => c.serve(sock, answer, log));
    server.on('error', (err) => log.error(`control socket ${p}: ${errorText(err)}`));
    return c;
  }

  private serve(sock: net.Socket, answer: (r: Request) => Promise<unknown>, log: Logger): void {
    if (this.clients >= MAX_CLIENTS) {
      sock.destroy();
      return;
    }
    this.clients++;
    sock.once('close', () => this.clients--);
    sock.on('error', () => sock.destroy());
    // One deadline for the request, a fresh one for taking the answer.
    let timer = setTimeout(() => sock.destroy(), CLIENT_MS);
    sock.once('close', () => clearTimeout(timer));
    let buf = '';
    let asked = false;
    const reply = (body: unknown): void => {
      if (sock.destroyed) return;
      clearTimeout(timer);
      timer = setTimeout(() => sock.destroy(), CLIENT_MS);
      let text: string;
      try {
        text = JSON.stringify(body);
      } catch (err) {
        log.error(`control socket: the answer cannot be written: ${errorText(err)}`);
        text = JSON.stringify({ error: 'the answer is too large' });
      }
      sock.end(`${text}\n`);
    };
    // A client gone before its request (another daemon's start-up probe of the path) is closed at once.
    sock.once('end', () => {
      if (!asked) sock.destroy();
    });
    sock.setEncoding('latin1');
    sock.on('data', (chunk: string) => {
      if (asked) return;
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > MAX_REQUEST) reply({ error: `a request is one line of at most ${MAX_REQUEST} bytes` });
        return;
      }
      asked = true;
      sock.pause();
      const line = buf.slice(0, nl);
      const r = line.length > MAX_REQUEST ? null : parseRequest(line);
      if (r === null) {
        reply({ error: 'unknown request: this socket answers "status" and "status sessions"' });
        return;
      }
      answer(r).then(reply, (err: unknown) => {
        log.error(`control socket: ${errorText(err)}`);
        reply({ error: 'the daemon could not answer' });
      });
    });
  }

  /**
   * Leaves the path to the master that took it over (an upgrade): the server
   * is only unreferenced, never closed, because libuv unlinks a pipe's path
   * when its server closes, and the path is the new master's file now.
   * Nobody can reach this one any more (its file is gone); it ends with
   * the process.
   */
  abandon(): void {
    this.server.unref();
  }

  /** Stops listening; libuv removes the socket file (it unlinks a pipe server's path when the server closes). */
  close(): void {
    this.server.close();
  }
}

/** Asks the daemon at `p`; the parsed answer, or why there is none. */
export function queryControl(p: string, r: Request): Promise<{ ok: true; answer: unknown } | { ok: false; error: string }> {
  return new Promise((resolve) => {
    const sock = net.connect(p);
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const done = (v: { ok: true; answer: unknown } | { ok: false; error: string }): void => {
      if (settled) return;
      settled = true;
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(CLIENT_MS + 5000, () => done({ ok: false, error: `no answer from ${p}` }));
    sock.once('connect', () => sock.write(r.sessions ? 'status sessions\n' : 'status\n'));
    sock.on('data', (b: Buffer) => {
      size += b.length;
      if (size > MAX_ANSWER) return done({ ok: false, error: `the answer from ${p} is too long` });
      chunks.push(b);
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'ENOENT' ? 'no such socket (is the daemon running, with this socket?)' : err.code === 'ECONNREFUSED' ? 'nobody listens on it (the daemon is not running)' : err.code === 'EACCES' ? 'permission denied (the socket is its owner\'s only)' : errorText(err);
      done({ ok: false, error: `cannot reach the daemon at ${p}: ${why}` });
    });
    sock.once('end', () => {
      try {
        const answer: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        if (answer !== null && typeof answer === 'object' && typeof (answer as { error?: unknown }).error === 'string') {
          done({ ok: false, error: `the daemon at ${p} says: ${(answer as { error: string }).error}` });
        } else done({ ok: true, answer });
      } catch {
        done({ ok: false, error: `the answer from ${p} is not JSON` });
      }
    });
  });
}
