/** Polling with a deadline: the only way tests wait for something to happen. */

const POLL_MS = 15;

/**
 * Resolves once `cond` returns true; checks every 15 ms and throws
 * `timed out after N ms waiting for WHAT` when the deadline passes. `what`
 * may be a function, called only then (to include state such as a proxy's
 * stderr at the time of failure). An exception from `cond` is passed on at once.
 */
export async function until(
  cond: () => boolean | Promise<boolean>,
  what: string | (() => string),
  timeoutMs = 10000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
    }
    await new Promise<void>((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/**
 * The other half of until(), for what must NOT happen: checks `cond` every
 * 15 ms for `windowMs` and throws `WHAT stopped holding after N ms` the first
 * time it is false (e.g. a connection that must keep waiting while a limit is
 * reached). Bounded by the window; never a way to wait for something.
 */
export async function holds(
  cond: () => boolean | Promise<boolean>,
  what: string | (() => string),
  windowMs: number,
): Promise<void> {
  const start = Date.now();
  const end = start + windowMs;
  for (;;) {
    if (!(await cond())) {
      throw new Error(`${typeof what === 'string' ? what : what()} stopped holding after ${Date.now() - start} ms (of ${windowMs})`);
    }
    if (Date.now() >= end) return;
    await new Promise<void>((resolve) => setTimeout(resolve, POLL_MS));
  }
}
