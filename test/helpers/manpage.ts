/**
 * Reading man/tcpproxy.1 (and the README) the way the documentation tests
 * compare it with the code: sections by `.SH` title, tag lines, a rough
 * rendering, the `.EX` blocks; plus a fixed service-name resolver and a
 * temporary directory for the tests that try what the page says.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { PortResolver } from '../../src/table/address';
import { ROOT } from './daemon';

export { ROOT };

export const PAGE_FILE = path.join(ROOT, 'man', 'tcpproxy.1');
export const EXAMPLES = path.join(ROOT, 'examples');
export const PAGE = fs.readFileSync(PAGE_FILE, 'utf8');
export const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
export const LINES = PAGE.split('\n');

/** A fixed resolver, so the tests do not depend on the machine's /etc/services. */
const NAMES = new Map([
  ['smtp', 25],
  ['pop3', 110],
  ['nntp', 119],
]);
export const resolve: PortResolver = (name) => NAMES.get(name) ?? null;

/** Plain text of roff escapes used in the page: `\-`, `\e`, `\&`, `\|`, font changes, `\(xx`. */
export function unescape(text: string): string {
  return text
    .replace(/\\f[BIRP]/g, '')
    .replace(/\\-/g, '-')
    .replace(/\\e/g, '\\')
    .replace(/\\[&|c]/g, '')
    .replace(/\\\(em/g, '--')
    .replace(/\\\((lq|rq)/g, '"')
    .replace(/\\\(aq/g, "'");
}

/** The arguments of a macro line, with roff's double-quote grouping. */
export function macroArgs(rest: string): string[] {
  const args: string[] = [];
  for (const m of rest.matchAll(/"((?:[^"]|"")*)"|(\S+)/g)) args.push(m[1] !== undefined ? m[1].replace(/""/g, '"') : (m[2] ?? ''));
  return args;
}

/** Sections of the page by `.SH` title, as lines (comment lines dropped). */
export function sections(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let current: string[] | null = null;
  for (const line of LINES) {
    if (line.startsWith('.\\"')) continue;
    const sh = /^\.SH\s+(.*)$/.exec(line);
    if (sh) {
      current = [];
      out.set(macroArgs(sh[1] ?? '').join(' '), current);
    } else if (current) {
      current.push(line);
    }
  }
  return out;
}

export const SECTIONS = sections();

export function section(title: string): string[] {
  const s = SECTIONS.get(title);
  if (s === undefined) throw new Error(`man/tcpproxy.1 has no section ${title}`);
  return s;
}

/** The tag lines of a section: the line after each `.TP`, and after each `.TQ` (a further tag of the same entry). */
export function tags(lines: readonly string[]): string[] {
  return lines.flatMap((l, i) => ((l === '.TP' || l === '.TQ') && i + 1 < lines.length ? [lines[i + 1] ?? ''] : []));
}

/** The first word of a bold tag (`.B word`, `.BI "word " arg`, `.BR word ...`), unescaped. */
export function tagWord(tag: string): string | null {
  const m = /^\.B[IR]?\s+(.*)$/.exec(tag);
  if (!m) return null;
  const first = macroArgs(m[1] ?? '')[0];
  return first === undefined ? null : (unescape(first).trim().split(/\s+/)[0] ?? null);
}

/** Roughly what man(1) shows for a run of lines: enough for the SYNOPSIS and examples. */
export function render(lines: readonly string[]): string {
  const out: string[] = [];
  for (const line of lines) {
    if (line.startsWith('.\\"')) continue;
    const m = /^\.([A-Za-z]+)\s*(.*)$/.exec(line);
    if (!m) {
      out.push(unescape(line));
      continue;
    }
    const [, macro = '', rest = ''] = m;
    const args = macroArgs(rest).map(unescape);
    if (macro === 'br') out.push('\n');
    else if (['B', 'I'].includes(macro)) out.push(args.join(' '));
    else if (['BI', 'BR', 'IB', 'IR', 'RB', 'RI'].includes(macro)) out.push(args.join(''));
  }
  return out.join(' ').replace(/ *\n */g, '\n').trim();
}

/** The `.EX` … `.EE` blocks of a section, unescaped. */
export function examples(lines: readonly string[]): string[] {
  const blocks: string[] = [];
  let cur: string[] | null = null;
  for (const line of lines) {
    if (line === '.EX') cur = [];
    else if (line === '.EE' && cur) {
      blocks.push(cur.map(unescape).join('\n'));
      cur = null;
    } else if (cur) cur.push(line);
  }
  return blocks;
}

/** Where each of `phrases` first stands in `text`; expects every one to be there, naming any that is not. */
export function positionsOf(text: string, phrases: readonly string[]): number[] {
  const steps = phrases.map((t) => [t, text.indexOf(t)] as const);
  for (const [t, i] of steps) expect({ t, found: i >= 0 }).toEqual({ t, found: true });
  return steps.map(([, i]) => i);
}

/** Runs `body` with a fresh temporary directory, removed afterwards. */
export async function withTempDir<T>(body: (dir: string) => T | Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcpproxy-manpage-'));
  try {
    return await body(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
