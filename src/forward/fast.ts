/**
 * The policy of the native fast path (native/serve.cc): which services the
 * worker serves without a JS object per connection, compiled into what
 * native needs. A forwarding service to an IP literal, with no ACP and no
 * transcript, takes it under the splice engine; everything else (handlers,
 * ACPs, transcripts, host names, which are resolved for each connection,
 * and the JS engine) goes through the session code.
 */
import { isIP } from 'node:net';
import type { FastService } from '../sys/native';
import { formatHostPort } from '../table/address';
import { describeTarget, listenKey, type Service } from '../table/service';
import type { EngineName } from './types';

/** The compiled service, or null when the connection needs the session code. */
export function fastService(s: Service, engine: EngineName, ids: { readonly uid: number; readonly gid: number }): FastService | null {
  if (engine !== 'splice' || s.target.kind !== 'server' || s.acp !== null || s.writefile !== null) return null;
  const { host, port } = s.target.server;
  if (isIP(host) === 0) return null;
  const upstreamPort = port ?? s.port;
  if (upstreamPort < 1) return null;
  return {
    key: listenKey(s),
    // The same words as the session code's accept and connect-error lines.
    acceptTail: `: ${describeTarget(s.target)}, uid ${ids.uid} gid ${ids.gid}`,
    serverText: `server ${formatHostPort(host, upstreamPort)}`,
    address: host,
    port: upstreamPort,
    idleMs: s.timeoutSec * 1000,
  };
}
