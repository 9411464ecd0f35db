/**
 * accept-proxy in the session code and in inetd mode: whether a peer may
 * send a PROXY header, and reading it (natively: peeked, never a byte past
 * it) within its bound.
 */
import { native } from '../sys/native';
import { checkAccess } from '../table/access';
import type { Access, Prefix } from '../table/service';

/** A connection that has not sent its whole header by then is closed (native/proxy.h kProxyHeaderTimeoutMs). */
export const PROXY_HEADER_TIMEOUT_MS = 5000;

export const UNTRUSTED = 'untrusted PROXY source';

const TRUSTED = new WeakMap<readonly Prefix[], Access>();

/** Whether `peer` may send a PROXY header (an empty list trusts every source). */
export function isTrustedSource(trusted: readonly Prefix[], peer: string): boolean {
  if (trusted.length === 0) return true;
  let access = TRUSTED.get(trusted);
  if (access === undefined) {
    access = { allow: trusted, deny: [], maxconn: null, perSource: null, rate: null };
    TRUSTED.set(trusted, access);
  }
  return checkAccess(access, peer) === null;
}

export type HeaderOutcome =
  /** `client`: the header's source; null: keep the real peer (v1 UNKNOWN, v2 LOCAL). */
  | { readonly ok: true; readonly client: { readonly address: string; readonly port: number } | null }
  | { readonly ok: false; readonly reason: string };

/** Reads the PROXY header at the start of the connection on `fd` (which stays the caller's). */
export function readProxyHeader(fd: number): Promise<HeaderOutcome> {
  return new Promise((resolve) => {
    native().proxyRead(fd, PROXY_HEADER_TIMEOUT_MS, (r) => {
      if (r.status === 'ok') resolve({ ok: true, client: r.local ? null : r.source });
      else if (r.status === 'timeout') resolve({ ok: false, reason: `no complete PROXY header within ${PROXY_HEADER_TIMEOUT_MS / 1000} s` });
      else if (r.status === 'invalid') resolve({ ok: false, reason: r.reason });
      else resolve({ ok: false, reason: 'incomplete PROXY header' });
    });
  });
}
