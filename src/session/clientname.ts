/**
 * The client's name for PROXY_CLIENTNAME, found within one bound and
 * without the libuv threadpool: the name /etc/hosts gives the address
 * (taken as it is: root's file, not confirmed against DNS), else a DNS PTR lookup through c-ares (node:dns Resolver, whose sockets are
 * on the event loop: a server that never answers holds no thread, unlike
 * getnameinfo), confirmed by looking the name up again (A or AAAA, by the
 * client's family) and finding the client's address among the answers. A
 * name of either source is kept only if it is a host name; in every other
 * case the name is the address itself.
 */
import type * as Dns from 'node:dns';
import * as fs from 'node:fs';
import { isIP } from 'node:net';
import { normalizeIp } from '../table/address';

/** Bound on the whole lookup, reverse and forward. */
export const CLIENTNAME_TIMEOUT_MS = 2000;
export const HOSTS_FILE = '/etc/hosts';
/** Longest host name (RFC 1035, without the final dot). */
const NAME_MAX = 253;
/** A label of a host name (RFC 952, 1123): letters and digits, hyphens only inside, 1 to 63 of them. */
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export interface ClientNameOptions {
  readonly timeoutMs?: number;
  /** DNS servers (`127.0.0.1:5353`) instead of those of /etc/resolv.conf (tests). */
  readonly servers?: readonly string[];
  readonly hostsFile?: string;
}

/**
 * The name in lower case without a final dot, if it is a host name: labels
 * of letters, digits and inner hyphens, 1 to 63 each, 253 in all; else null.
 * A handler may pass the name on to a shell or a command line, where one
 * starting with `-` would read as an option and an empty label as something
 * else than a name.
 */
export function hostName(text: string): string | null {
  const name = text.toLowerCase().replace(/\.$/, '');
  if (name === '' || name.length > NAME_MAX || !name.split('.').every((l) => LABEL.test(l))) return null;
  // A name that reads as an address would pass for another client.
  if (isIP(name) !== 0) return null;
  return name;
}

/** Address → first name, of the hosts file as it was when last read (re-read when it changes). */
let hostsCache: { readonly file: string; readonly stamp: string; readonly names: ReadonlyMap<string, string> } | null = null;

/**
 * The name the hosts file gives `address` (its first line for it, the
 * first name there, as getnameinfo's files lookup), read synchronously: a
 * local file, and no threadpool request that could wait behind others.
 * Undefined when the file has no line for it (or is not a regular file).
 */
function fromHosts(file: string, address: string): string | undefined {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(file, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
  if (st === undefined || !st.isFile()) return undefined;
  const stamp = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  if (hostsCache?.file !== file || hostsCache.stamp !== stamp) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      return undefined;
    }
    const names = new Map<string, string>();
    for (const line of text.split('\n')) {
      const [addr, name] = (line.split('#')[0] ?? '').trim().split(/\s+/);
      const key = addr === undefined ? null : normalizeIp(addr);
      if (key !== null && name !== undefined && !names.has(key)) names.set(key, name);
    }
    hostsCache = { file, stamp, names };
  }
  return hostsCache.names.get(address);
}

/**
 * PROXY_CLIENTNAME for a client at `address`; never rejects, resolves
 * within the bound (to the address when there is no confirmed name).
 */
export function clientName(address: string, opts: ClientNameOptions = {}): Promise<string> {
  const plain = normalizeIp(address);
  const family = isIP(address);
  if (plain === null || family === 0) return Promise.resolve(address);
  const listed = fromHosts(opts.hostsFile ?? HOSTS_FILE, plain);
  if (listed !== undefined) return Promise.resolve(hostName(listed) ?? address);
  const timeoutMs = opts.timeoutMs ?? CLIENTNAME_TIMEOUT_MS;
  return new Promise((resolve) => {
    let resolver: Dns.Resolver;
    try {
      // One resolver per lookup: cancel() at the bound then ends only this client's queries.
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- node:dns on first use (inetd mode starts a process per connection)
      resolver = new (require('node:dns') as typeof Dns).Resolver({ timeout: timeoutMs, tries: 1 });
      if (opts.servers !== undefined) resolver.setServers([...opts.servers]);
    } catch {
      resolve(address);
      return;
    }
    let done = false;
    const finish = (name: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(name);
    };
    // At the bound the queries still out are cancelled: their callbacks (ECANCELLED) find it done.
    const timer = setTimeout(() => {
      finish(address);
      resolver.cancel();
    }, timeoutMs);
    try {
      resolver.reverse(plain, (err, names) => {
        if (done) return;
        const name = err ? null : (names.map(hostName).find((n) => n !== null) ?? null);
        if (name === null) return finish(address);
        const confirm = (e: NodeJS.ErrnoException | null, addrs: string[]): void => {
          finish(!e && addrs.some((a) => normalizeIp(a) === plain) ? name : address);
        };
        try {
          if (family === 6) resolver.resolve6(name, confirm);
          else resolver.resolve4(name, confirm);
        } catch {
          finish(address);
        }
      });
    } catch {
      finish(address);
    }
  });
}
