/**
 * The master's end of a worker's IPC channel, made safe to read from a
 * worker it does not trust. Node's JSON channel (lib/internal/child_process.js
 * setupChannel, lib/internal/child_process/serialization.js, Node 20) has
 * no bound and no refusal of its own:
 *
 * - a line is buffered until its newline, however long (a worker can grow
 *   the master's memory until V8's string limit throws);
 * - a line that is not JSON throws out of the channel's read callback, and
 *   so does a `NODE_HANDLE_ACK` the master never asked for (an internal
 *   assertion): either is an uncaught exception that ends the master;
 * - a descriptor sent with a `NODE_HANDLE` message is turned into a
 *   net.Server or net.Socket in the master; one sent with any other
 *   message stays open in the master, unseen.
 *
 * There is no option for any of this (`serialization: 'advanced'` has the
 * same reader with a 4-byte length instead of the newline), so the read
 * callback of the channel's pipe handle is wrapped: the descriptor libuv
 * has just received is closed before Node sees it, a parse error is caught,
 * and a partial line longer than MAX_LINE stops the reading. Each of these,
 * and every internal (`NODE_*`) message, is reported to `refuse`, whose
 * caller kills the worker and disconnects (a stopped channel sees no end of
 * its own). The wrapping needs two of Node's own fields
 * (found by their symbols' names); guardChannel returns false when they are
 * not there (another Node version), and the caller says so in the log.
 */
import type { ChildProcess } from 'node:child_process';

/** The longest line a worker may send: its messages are a few dozen bytes. */
export const MAX_LINE = 64 * 1024;

interface PipeHandle {
  onread: (this: PipeHandle, buf?: ArrayBuffer) => void;
  pendingHandle: { close(): void } | null;
  readStop(): number;
  /** Node waits for the end of a partial message before it closes the channel. */
  buffering?: boolean;
  [key: symbol]: unknown;
}

function symbolNamed(o: object, name: string): symbol | undefined {
  return Object.getOwnPropertySymbols(o).find((s) => s.description === name);
}

function closeQuietly(h: unknown): void {
  try {
    (h as { close?: () => void } | null)?.close?.();
  } catch {
    // already closed
  }
}

/**
 * Guards `child`'s channel (see above); `refuse` gets a reason, possibly
 * more than once. Call before anything can be read, right after fork().
 */
export function guardChannel(child: ChildProcess, refuse: (why: string) => void): boolean {
  // Internal messages: the master never sends a descriptor, so it never needs
  // Node's acknowledgements, and never accepts one.
  child.removeAllListeners('internalMessage');
  child.on('internalMessage', (_m: unknown, handle: unknown) => {
    closeQuietly(handle);
    refuse('sent an internal message');
  });
  const handleKey = symbolNamed(child, 'kChannelHandle');
  const pipe = handleKey === undefined ? undefined : ((child as unknown as Record<symbol, unknown>)[handleKey] as PipeHandle | undefined);
  if (pipe === undefined || typeof pipe.onread !== 'function') return false;
  const bufferKey = symbolNamed(pipe, 'kJSONBuffer');
  if (bufferKey === undefined || typeof pipe[bufferKey] !== 'string') return false;
  const read = pipe.onread;
  let stopped = false;
  const stop = (why: string): void => {
    stopped = true;
    pipe[bufferKey] = '';
    pipe.buffering = false;
    pipe.readStop();
    refuse(why);
  };
  pipe.onread = function (this: PipeHandle, buf?: ArrayBuffer): void {
    const passed = pipe.pendingHandle;
    if (passed !== null) {
      pipe.pendingHandle = null;
      closeQuietly(passed);
      refuse('passed a descriptor');
    }
    // After a stop, only the end of the channel is passed on (so Node closes it).
    if (stopped && buf !== undefined) return;
    try {
      read.call(this, buf);
    } catch {
      stop('sent a line that is not JSON');
      return;
    }
    const partial = pipe[bufferKey];
    if (typeof partial === 'string' && partial.length > MAX_LINE) stop(`sent a line longer than ${MAX_LINE} bytes`);
  };
  return true;
}
