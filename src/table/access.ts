/**
 * Access lists: the prefixes of `allow` and `deny` (parsePrefix,
 * formatPrefix) and the check of a client address against a service's
 * lists (checkAccess). Pure. An Access stays plain data (it crosses the IPC
 * to the workers); the form checkAccess compares on, 32-bit words sorted
 * longest prefix first, is built on the first check of each Access object
 * and kept in a WeakMap.
 */
import { normalizeIp, type Parsed } from './address';
import { quote } from '../sys/text';
import type { Access, Prefix } from './service';

const PREFIX_SYNTAX = 'expected an IPv4 or IPv6 address with an optional /length';

/**
 * An `allow`/`deny` prefix: an IPv4 or IPv6 literal (no brackets), with an
 * optional decimal `/LEN` (no leading zero); without one, the single address.
 * Host bits must be zero, and an IPv4-mapped IPv6 address must be written as
 * IPv4 (a client `::ffff:a.b.c.d` is matched as IPv4).
 */
export function parsePrefix(text: string): Parsed<Prefix> {
  const fail = (why: string): Parsed<Prefix> => ({ ok: false, error: `invalid prefix ${quote(text)}: ${why}` });
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const lenText = slash < 0 ? null : text.slice(slash + 1);
  if (addrText.startsWith('[') || (lenText !== null && !/^(0|[1-9][0-9]*)$/.test(lenText))) return fail(PREFIX_SYNTAX);
  const address = normalizeIp(addrText);
  if (address === null) return fail(PREFIX_SYNTAX);
  const family = address.includes(':') ? 6 : 4;
  const max = family === 4 ? 32 : 128;
  const bits = lenText === null ? max : Number(lenText);
  if (bits > max) return fail(`the length must be 0-${max}`);
  const words = addressWords(address);
  if (words === null) return fail(PREFIX_SYNTAX); // not reached: normalizeIp's forms parse
  if (family === 6 && bits >= 96 && isMapped(words)) {
    const v4 = formatV4(words[3] ?? 0);
    return fail(`write an IPv4-mapped address as IPv4 (${lenText === null ? v4 : `${v4}/${bits - 96}`})`);
  }
  const network = maskWords(words, bits);
  if (network.some((w, i) => w !== words[i])) {
    return fail(`host bits are set (the network is ${formatPrefix({ family, address: formatWords(family, network), bits })})`);
  }
  return { ok: true, value: { family, address, bits } };
}

/** The canonical text of a prefix, always with its length: `10.0.0.0/8`, `127.0.0.7/32`, `2001:db8::/32`. */
export function formatPrefix(p: Prefix): string {
  return `${p.address}/${p.bits}`;
}

/**
 * Whether a client may connect: null when admitted, else the rule that
 * refuses it, `deny PREFIX` or `no allow matched`. The longest prefix of
 * either list that contains the client decides; an allow and a deny of the
 * same length: denied. When none matches, the client is refused if the
 * lists have any allow, else admitted. `client` is an address as Node's
 * remoteAddress gives it (`127.0.0.1`, `::1`, `::ffff:127.0.0.1`); an
 * IPv4-mapped one is matched as IPv4, against the IPv4 prefixes only. A
 * client that is no IP address matches no prefix.
 */
export function checkAccess(access: Access, client: string): string | null {
  if (access.allow.length === 0 && access.deny.length === 0) return null;
  const table = compiled(access);
  let verdict: Verdict | undefined;
  if (client.includes(':')) {
    const w = CLIENT_WORDS;
    if (!parseV6(client, w)) verdict = undefined;
    else if (w[0] === 0 && w[1] === 0 && w[2] === 0xffff) verdict = match4(table, w[3] ?? 0);
    else verdict = match6(table, w);
  } else {
    const a = parseV4(client, 0, client.length);
    verdict = a < 0 ? undefined : match4(table, a | 0);
  }
  if (verdict !== undefined) return verdict;
  return table.anyAllow ? 'no allow matched' : null;
}

/** null: admitted by an allow; a string: the deny that refuses. */
type Verdict = string | null;

/**
 * An Access compiled for matching: per family, the rules sorted by length,
 * longest first and a deny before an allow of the same length, so that the
 * first match decides. Networks and masks are signed 32-bit words (four per
 * IPv6 rule), compared with `(addr & mask) === net`.
 */
interface Compiled {
  readonly anyAllow: boolean;
  readonly net4: Int32Array;
  readonly mask4: Int32Array;
  readonly verdict4: readonly Verdict[];
  readonly net6: Int32Array;
  readonly mask6: Int32Array;
  readonly verdict6: readonly Verdict[];
}

const COMPILED = new WeakMap<Access, Compiled>();
/** Scratch words of the IPv6 client being checked (checkAccess is synchronous). */
const CLIENT_WORDS = new Int32Array(4);

function compiled(access: Access): Compiled {
  let c = COMPILED.get(access);
  if (c === undefined) {
    c = compile(access);
    COMPILED.set(access, c);
  }
  return c;
}

function compile(access: Access): Compiled {
  const rules = [...access.deny.map((p) => ({ p, verdict: `deny ${formatPrefix(p)}` })), ...access.allow.map((p) => ({ p, verdict: null }))];
  // Stable sort: at the same length the denies, listed first, stay first.
  rules.sort((a, b) => b.p.bits - a.p.bits);
  const build = (family: 4 | 6): { net: Int32Array; mask: Int32Array; verdict: Verdict[] } => {
    const n = family === 4 ? 1 : 4;
    const mine = rules.filter((r) => r.p.family === family);
    const net = new Int32Array(mine.length * n);
    const mask = new Int32Array(mine.length * n);
    mine.forEach(({ p }, i) => {
      const words = addressWords(p.address);
      const max = family === 4 ? 32 : 128;
      if (words === null || words.length !== n || !Number.isInteger(p.bits) || p.bits < 0 || p.bits > max) {
        // Every Prefix comes from parsePrefix: anything else is a bug, not a rule to skip.
        throw new Error(`checkAccess: not a valid IPv${family} prefix: ${JSON.stringify(p)}`);
      }
      const m = maskWords(new Array<number>(n).fill(-1), p.bits);
      for (let k = 0; k < n; k++) {
        mask[i * n + k] = m[k] ?? 0;
        net[i * n + k] = (words[k] ?? 0) & (m[k] ?? 0);
      }
    });
    return { net, mask, verdict: mine.map((r) => r.verdict) };
  };
  const v4 = build(4);
  const v6 = build(6);
  return {
    anyAllow: access.allow.length > 0,
    net4: v4.net,
    mask4: v4.mask,
    verdict4: v4.verdict,
    net6: v6.net,
    mask6: v6.mask,
    verdict6: v6.verdict,
  };
}

function match4(t: Compiled, addr: number): Verdict | undefined {
  const { net4, mask4 } = t;
  for (let i = 0; i < net4.length; i++) {
    if ((addr & (mask4[i] ?? 0)) === net4[i]) return t.verdict4[i];
  }
  return undefined;
}

function match6(t: Compiled, w: Int32Array): Verdict | undefined {
  const { net6, mask6 } = t;
  const w0 = w[0] ?? 0;
  const w1 = w[1] ?? 0;
  const w2 = w[2] ?? 0;
  const w3 = w[3] ?? 0;
  for (let i = 0, k = 0; k < net6.length; i++, k += 4) {
    if (
      (w0 & (mask6[k] ?? 0)) === net6[k] &&
      (w1 & (mask6[k + 1] ?? 0)) === net6[k + 1] &&
      (w2 & (mask6[k + 2] ?? 0)) === net6[k + 2] &&
      (w3 & (mask6[k + 3] ?? 0)) === net6[k + 3]
    ) {
      return t.verdict6[i];
    }
  }
  return undefined;
}

/** `words` with all but the first `bits` bits cleared (signed 32-bit words). */
function maskWords(words: readonly number[], bits: number): number[] {
  return words.map((w, i) => {
    const keep = Math.min(32, Math.max(0, bits - 32 * i));
    return keep === 0 ? 0 : w & (-1 << (32 - keep));
  });
}

/**
 * A client address as 16 bytes, IPv4 (and IPv4-mapped IPv6) as
 * ::ffff:a.b.c.d, as native/access.cc keys clients; null if not an IP.
 */
export function clientKey(text: string): Uint8Array | null {
  const w = addressWords(text);
  if (w === null) return null;
  const words = w.length === 1 ? [0, 0, 0xffff, w[0] ?? 0] : w;
  const out = new Uint8Array(16);
  words.forEach((word, i) => new DataView(out.buffer).setInt32(i * 4, word));
  return out;
}

function isMapped(words: readonly number[]): boolean {
  return words[0] === 0 && words[1] === 0 && words[2] === 0xffff;
}

/** The words of an IP literal: one for IPv4, four for IPv6; null if it is none. */
function addressWords(text: string): number[] | null {
  if (text.includes(':')) {
    const w = new Int32Array(4);
    return parseV6(text, w) ? [...w] : null;
  }
  const a = parseV4(text, 0, text.length);
  return a < 0 ? null : [a | 0];
}

function formatV4(word: number): string {
  return [word >>> 24, (word >>> 16) & 0xff, (word >>> 8) & 0xff, word & 0xff].join('.');
}

/** The normalizeIp form of the address of these words. */
function formatWords(family: 4 | 6, words: readonly number[]): string {
  if (family === 4) return formatV4(words[0] ?? 0);
  const groups = words.flatMap((w) => [(w >>> 16).toString(16), (w & 0xffff).toString(16)]);
  return normalizeIp(groups.join(':')) ?? groups.join(':');
}

/**
 * Dotted-quad IPv4 in text[start, end), as isIP accepts it (decimal parts
 * 0-255, no leading zero): the address as an unsigned 32-bit number, or -1.
 */
function parseV4(text: string, start: number, end: number): number {
  let value = 0;
  let parts = 0;
  let i = start;
  while (parts < 4) {
    const first = i;
    let part = 0;
    while (i < end) {
      const c = text.charCodeAt(i) - 48;
      if (c < 0 || c > 9) break;
      part = part * 10 + c;
      i++;
    }
    const digits = i - first;
    if (digits === 0 || digits > 3 || part > 255 || (digits > 1 && text.charCodeAt(first) === 48)) return -1;
    value = value * 256 + part;
    parts++;
    if (parts < 4) {
      if (i >= end || text.charCodeAt(i) !== 46) return -1;
      i++;
    }
  }
  return i === end ? value : -1;
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

const GROUPS = new Uint16Array(8);

/**
 * An IPv6 literal (no brackets; a `%zone` is ignored) into four signed
 * 32-bit words in `out`: groups of 1-4 hex digits, at most one `::`, an
 * optional dotted IPv4 tail. False, with `out` undefined, if it is none.
 */
function parseV6(text: string, out: Int32Array): boolean {
  const pct = text.indexOf('%');
  const end = pct < 0 ? text.length : pct;
  const g = GROUPS;
  let n = 0;
  let gap = -1;
  let i = 0;
  if (text.charCodeAt(0) === 58) {
    if (text.charCodeAt(1) !== 58) return false;
    gap = 0;
    i = 2;
  }
  while (i < end) {
    if (n === 8) return false;
    const first = i;
    let group = 0;
    while (i < end) {
      const d = hexDigit(text.charCodeAt(i));
      if (d < 0) break;
      group = group * 16 + d;
      i++;
    }
    const digits = i - first;
    if (i < end && text.charCodeAt(i) === 46) {
      // The IPv4 tail: the last two groups.
      if (n > 6) return false;
      const v4 = parseV4(text, first, end);
      if (v4 < 0) return false;
      g[n++] = v4 >>> 16;
      g[n++] = v4 & 0xffff;
      i = end;
      break;
    }
    if (digits === 0 || digits > 4) return false;
    g[n++] = group;
    if (i === end) break;
    if (text.charCodeAt(i) !== 58) return false;
    i++;
    if (text.charCodeAt(i) === 58) {
      if (gap >= 0) return false;
      gap = n;
      i++;
    } else if (i === end) {
      return false; // a trailing single ':'
    }
  }
  if (gap < 0 ? n !== 8 : n > 7) return false;
  const zeros = 8 - n;
  for (let k = 0; k < 4; k++) {
    const hi = groupAt(g, 2 * k, gap, zeros);
    const lo = groupAt(g, 2 * k + 1, gap, zeros);
    out[k] = (hi << 16) | lo;
  }
  return true;
}

/** Group `pos` of the full address, with `zeros` zero groups inserted at `gap`. */
function groupAt(g: Uint16Array, pos: number, gap: number, zeros: number): number {
  if (gap < 0 || pos < gap) return g[pos] ?? 0;
  if (pos < gap + zeros) return 0;
  return g[pos - zeros] ?? 0;
}
