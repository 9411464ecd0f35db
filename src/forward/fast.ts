/**
 * The policy of the native fast path (native/serve.cc): which services the
 * worker serves without a JS object per connection, compiled into what
 * native needs. A forwarding service whose servers (one, or a group) are
 * all IP literals, with no ACP and no transcript, takes it under the splice
 * engine, send-proxy, accept-proxy, balance and source included; everything
 * else (handlers,
 * ACPs, transcripts, host names, which are resolved for each connection,
 * and the JS engine) goes through the session code.
 */
import { isIP } from 'node:net';
import type { AccessRule, FastServer, FastService } from '../sys/native';
import { formatPrefix } from '../table/access';
import { formatHostPort } from '../table/address';
import { describeTarget, listenKey, type Access, type Prefix, type Service } from '../table/service';
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

/** The sources that may send a PROXY header, as allow rules. */
export function trustedRules(trusted: readonly Prefix[]): AccessRule[] {
  return trusted.map((p) => ({ allow: true, address: p.address, bits: p.bits, text: `accept-proxy ${formatPrefix(p)}` }));
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
  const servers: FastServer[] = [];
  for (const { host, port } of s.target.servers) {
    // A host name is resolved for each connection: the session code's.
    if (isIP(host) === 0) return null;
    const upstreamPort = port ?? s.port;
    servers.push({ address: host, port: upstreamPort, text: `server ${formatHostPort(host, upstreamPort)}` });
  }
  const { proxy } = s;
  return {
    key: listenKey(s),
    // The same words as the session code's accept and connect-error lines.
    acceptTail: `: ${describeTarget(s.target)}, uid ${ids.uid} gid ${ids.gid}`,
    servers,
    balance: proxy.balance,
    sendProxy: proxy.sendProxy ?? 0,
    source: proxy.source,
    acceptProxy: proxy.acceptProxy === null ? null : trustedRules(proxy.acceptProxy),
    idleMs: s.timeoutSec * 1000,
    slot,
    keepalive: s.bounds.keepalive,
    rules: accessRules(s.access),
    maxconn: s.access.maxconn ?? 0,
    perSource: s.access.perSource ?? 0,
    rate: s.access.rate ?? 0,
    logLevel: s.loglevel === 'quiet' ? 0 : s.loglevel === 'normal' ? 1 : 2,
  };
}
