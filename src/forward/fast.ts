/**
 * The policy of the native fast path (native/serve.cc): which services the
 * worker serves without a JS object per connection, compiled into what
 * native needs. A forwarding service to an IP literal, with no ACP and no
 * transcript, takes it under the splice engine; everything else (handlers,
 * ACPs, transcripts, host names, which are resolved for each connection,
 * and the JS engine) goes through the session code.
 */
import { isIP } from 'node:net';
import type { AccessRule, FastService } from '../sys/native';
import { formatPrefix } from '../table/access';
import { formatHostPort, type ServerAddress } from '../table/address';
import { describeTarget, listenKey, type Access, type Service } from '../table/service';
import type { EngineName } from './types';

/** The allow and deny lists as native matches them, with the words a refusal logs. */
export function accessRules(a: Access): AccessRule[] {
  const rule = (allow: boolean) => (p: Access['allow'][number]): AccessRule => ({
    allow,
    address: p.address,
    bits: p.bits,
    text: `${allow ? 'allow' : 'deny'} ${formatPrefix(p)}`,
  });
  return [...a.allow.map(rule(true)), ...a.deny.map(rule(false))];
}

/**
 * The compiled service, or null when the connection needs the session code.
 * `slot`: the service's place in the shared limits.
 */
export function fastService(
  s: Service,
  engine: EngineName,
  ids: { readonly uid: number; readonly gid: number },
  slot: number,
): FastService | null {
  if (engine !== 'splice' || s.target.kind !== 'server' || s.acp !== null || s.writefile !== null) return null;
  if (s.target.servers.length !== 1) return null;
  const [{ host, port }] = s.target.servers as [ServerAddress];
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
    slot,
    keepalive: s.bounds.keepalive,
    rules: accessRules(s.access),
    maxconn: s.access.maxconn ?? 0,
    perSource: s.access.perSource ?? 0,
    rate: s.access.rate ?? 0,
  };
}
