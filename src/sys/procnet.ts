/**
 * The host's listening TCP sockets, read from /proc/net/tcp and tcp6 (of
 * this process's network namespace). Standalone mode uses it to find a
 * foreign program on a port before binding with SO_REUSEPORT, which would
 * otherwise share the port with that program instead of failing.
 */
import * as fs from 'node:fs';

export interface ListeningSocket {
  /** Normalised IP literal: `0.0.0.0`, `::`, `127.0.0.2`, `::1`; IPv4-mapped shown as IPv4. */
  readonly address: string;
  readonly port: number;
  readonly inode: number;
}

const TCP_LISTEN = '0A';

/** The kernel prints each 32-bit word of the address in host (little-endian) byte order. */
function words(hex: string): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < hex.length; i += 8) {
    const w = hex.slice(i, i + 8);
    out.push([6, 4, 2, 0].map((j) => parseInt(w.slice(j, j + 2), 16)));
  }
  return out;
}

function addressOf(hex: string): string {
  const bytes = words(hex).flat();
  if (bytes.length === 4) return bytes.join('.');
  const mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return bytes.slice(12).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  // Shorten the longest run of zero groups (RFC 5952), as net.isIP-normalised text would.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

function parseTable(text: string): ListeningSocket[] {
  const out: ListeningSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== TCP_LISTEN) continue;
    const [addr, port] = (f[1] ?? '').split(':');
    if (addr === undefined || port === undefined) continue;
    out.push({ address: addressOf(addr), port: parseInt(port, 16), inode: Number(f[9]) });
  }
  return out;
}

/** Every TCP socket in LISTEN state; a table that cannot be read (no IPv6) counts as empty. */
export function listeningSockets(): ListeningSocket[] {
  const out: ListeningSocket[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    out.push(...parseTable(text));
  }
  return out;
}

/** The inode of the socket behind one of this process's fds, or null. */
export function socketInode(fd: number): number | null {
  try {
    const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/self/fd/${fd}`));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}
