/**
 * Drift tests for the documentation: man/tcpproxy.1 against the code
 * (options, directives, exit codes, usage line, version), the page's lint
 * status, and the sample files of examples/ against the parsers.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { PortResolver } from '../../src/address';
import { OPTION_LETTERS, USAGE, parseArgs } from '../../src/cli';
import { DIRECTIVES, parseConfig, readConfig, type ConfigResult } from '../../src/config';
import { formatConfigError } from '../../src/errors';
import { EXIT_FAILURE, EXIT_OK, EXIT_SOFTWARE, EXIT_USAGE } from '../../src/exit-codes';
import type { Service } from '../../src/service';
import { VERSION } from '../../src/version';

const ROOT = path.join(__dirname, '..', '..');
const PAGE_FILE = path.join(ROOT, 'man', 'tcpproxy.1');
const EXAMPLES = path.join(ROOT, 'examples');
const PAGE = fs.readFileSync(PAGE_FILE, 'utf8');
const LINES = PAGE.split('\n');

/** A fixed resolver, so the tests do not depend on the machine's /etc/services. */
const NAMES = new Map([
  ['smtp', 25],
  ['pop3', 110],
  ['nntp', 119],
]);
const resolve: PortResolver = (name) => NAMES.get(name) ?? null;

/** Plain text of roff escapes used in the page: `\-`, `\e`, `\&`, `\|`, font changes, `\(xx`. */
function unescape(text: string): string {
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
function macroArgs(rest: string): string[] {
  const args: string[] = [];
  for (const m of rest.matchAll(/"((?:[^"]|"")*)"|(\S+)/g)) args.push(m[1] !== undefined ? m[1].replace(/""/g, '"') : (m[2] ?? ''));
  return args;
}

/** Sections of the page by `.SH` title, as lines (comment lines dropped). */
function sections(): Map<string, string[]> {
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

const SECTIONS = sections();

function section(title: string): string[] {
  const s = SECTIONS.get(title);
  if (s === undefined) throw new Error(`man/tcpproxy.1 has no section ${title}`);
  return s;
}

/** The tag lines of a section: the line after each `.TP`. */
function tags(lines: readonly string[]): string[] {
  return lines.flatMap((l, i) => (l === '.TP' && i + 1 < lines.length ? [lines[i + 1] ?? ''] : []));
}

/** The first word of a bold tag (`.B word`, `.BI "word " arg`, `.BR word ...`), unescaped. */
function tagWord(tag: string): string | null {
  const m = /^\.B[IR]?\s+(.*)$/.exec(tag);
  if (!m) return null;
  const first = macroArgs(m[1] ?? '')[0];
  return first === undefined ? null : (unescape(first).trim().split(/\s+/)[0] ?? null);
}

/** Roughly what man(1) shows for a run of lines: enough for the SYNOPSIS and examples. */
function render(lines: readonly string[]): string {
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
function examples(lines: readonly string[]): string[] {
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

function okConfig(r: ConfigResult): Service[] {
  if (!r.ok) throw new Error(`unexpected errors:\n${r.errors.map(formatConfigError).join('\n')}`);
  return [...r.config.services];
}

describe('man/tcpproxy.1: content', () => {
  it('has the sections an administrator looks for', () => {
    for (const title of [
      'NAME',
      'SYNOPSIS',
      'DESCRIPTION',
      'OPTIONS',
      'CONFIGURATION FILE',
      'MODES',
      'PROCESS MODEL AND IDENTITIES',
      'REQUEST HANDLERS',
      'ACCESS CONTROL',
      'FORWARDING',
      'LOGGING',
      'TRANSCRIPTS',
      'PIDFILE',
      'ENVIRONMENT',
      'FILES',
      'EXIT STATUS',
      'EXAMPLES',
      'NOTES',
      'SEE ALSO',
    ]) {
      expect(SECTIONS.has(title)).toBe(true);
    }
  });

  it('documents every option of src/cli.ts, --help and --version, and no other', () => {
    const documented = tags(section('OPTIONS')).map(tagWord);
    const expected = [...OPTION_LETTERS.map((l) => `-${l}`), '--help', '--version'];
    expect([...documented].sort()).toEqual([...expected].sort());
  });

  it('documents every directive of src/config.ts, and no other', () => {
    const documented = tags(section('CONFIGURATION FILE')).map(tagWord);
    expect([...documented].sort()).toEqual([...DIRECTIVES].sort());
  });

  it('lists exit statuses 0, 1, 2 and 70, those of src/exit-codes.ts', () => {
    const codes = tags(section('EXIT STATUS')).map((t) => /^\.B\s+([0-9]+)$/.exec(t)?.[1]);
    expect(codes).toEqual(['0', '1', '2', '70']);
    expect([EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_SOFTWARE].map(String)).toEqual(codes);
  });

  it('has the usage line of src/cli.ts as its SYNOPSIS', () => {
    const [usage, long] = render(section('SYNOPSIS')).split('\n');
    expect(`usage: ${usage ?? ''}`).toBe(USAGE);
    expect(long).toBe('tcpproxy --help | --version');
  });

  it('names the version of src/version.ts wherever it names one', () => {
    expect(LINES.find((l) => l.startsWith('.TH '))).toMatch(new RegExp(`^\\.TH TCPPROXY 1 [0-9]{4}-[0-9]{2}-[0-9]{2} "tcpproxy ${VERSION.replace(/\./g, '\\.')}" "User Commands"$`));
    const named = [...PAGE.matchAll(/tcpproxy ([0-9]+\.[0-9]+\.[0-9]+)/g)].map((m) => m[1]);
    expect(named.length).toBeGreaterThanOrEqual(3);
    expect(new Set(named)).toEqual(new Set([VERSION]));
  });

  it('says that inetd mode, socket activation, transcripts and the pidfile are not implemented yet', () => {
    const subsections = section('MODES').filter((l) => l.startsWith('.SS '));
    expect(subsections).toEqual(['.SS Standalone', '.SS inetd mode (not implemented yet)', '.SS Socket activation (not implemented yet)']);
    expect(render(section('MODES'))).toContain('This version does not implement inetd mode.');
    expect(render(section('MODES'))).toContain('This version does not implement socket activation.');
    expect(render(section('TRANSCRIPTS'))).toMatch(/^Not implemented yet\./);
    expect(render(section('PIDFILE'))).toMatch(/^Not implemented yet\./);
  });

  it('has a sample configuration in EXAMPLES that parses', () => {
    const sample = examples(section('EXAMPLES')).find((b) => b.startsWith('# /etc/tcpproxy.conf'));
    expect(sample).toBeDefined();
    const services = okConfig(parseConfig(sample ?? '', 'EXAMPLES', resolve));
    expect(services.map((s) => `${s.port} ${s.iface ?? '*'}`)).toEqual([
      '25 192.0.2.1',
      '25 198.51.100.7',
      '119 192.0.2.1',
      '119 192.0.2.2',
      '110 198.51.100.7',
    ]);
  });

  it('uses documentation addresses only in its examples', () => {
    const addresses = examples(section('EXAMPLES')).join('\n').match(/\b[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+\b/g) ?? [];
    expect(addresses.length).toBeGreaterThan(0);
    for (const a of addresses) expect(a).toMatch(/^(192\.0\.2|198\.51\.100|203\.0\.113|127\.0\.0)\./);
  });
});

describe('man/tcpproxy.1: lint', () => {
  const have = (cmd: string, args: string[]): boolean => spawnSync(cmd, args, { stdio: 'ignore' }).error === undefined;
  // In CI mandoc is a prerequisite (.ci/run installs it): a missing one fails the test there.
  const itMandoc = process.env['CI'] === 'true' || have('mandoc', ['-Tlint', '/dev/null']) ? it : it.skip;
  const itGroff = have('groff', ['-v']) ? it : it.skip;

  itMandoc('is clean under mandoc -Tlint -W warning', () => {
    const r = spawnSync('mandoc', ['-Tlint', '-W', 'warning', PAGE_FILE], { encoding: 'utf8' });
    expect(r.error).toBeUndefined();
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(r.status).toBe(0);
  });

  itGroff('is clean under groff -man -ww -z', () => {
    const r = spawnSync('groff', ['-man', '-ww', '-z', PAGE_FILE], { encoding: 'utf8' });
    expect(r.error).toBeUndefined();
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(r.status).toBe(0);
  });
});

describe('examples/', () => {
  const file = (name: string): string => path.join(EXAMPLES, name);
  const read = (name: string): string => fs.readFileSync(file(name), 'utf8');
  /** Lines that are neither blank nor comments. */
  const content = (name: string): string[] => read(name).split('\n').filter((l) => l.trim() !== '' && !l.trimStart().startsWith('#'));
  /** `Key=value` settings of a systemd unit. */
  const unit = (name: string): Map<string, string[]> => {
    const m = new Map<string, string[]>();
    for (const l of content(name)) {
      const kv = /^([A-Za-z]+)=(.*)$/.exec(l);
      if (kv) m.set(kv[1] ?? '', [...(m.get(kv[1] ?? '') ?? []), kv[2] ?? '']);
    }
    return m;
  };
  /** The tcpproxy arguments of a command line, checked by the command-line parser. */
  const tcpproxyArgs = (words: string[]): string[] => {
    expect(words[0]).toMatch(/\/tcpproxy$/);
    const r = parseArgs(words.slice(1), resolve);
    expect(r).toMatchObject({ ok: true });
    return words.slice(1);
  };

  const FILES = [
    'tcpproxy.conf',
    'inetd.conf',
    'xinetd.d/tcpproxy',
    'systemd/tcpproxy.socket',
    'systemd/tcpproxy.service',
    'systemd/tcpproxy-inetd.socket',
    'systemd/tcpproxy-inetd@.service',
  ];

  it.each(FILES)('%s starts with a comment header and is named in the man page', (name) => {
    const lines = read(name).split('\n');
    expect(lines[0]).toMatch(/^#/);
    expect(lines[1]).toMatch(/^#/);
    expect(unescape(PAGE)).toContain(`examples/${name}`);
  });

  it('tcpproxy.conf parses, has the services of the man page sample, and nothing this version refuses', () => {
    const r = readConfig(file('tcpproxy.conf'), resolve);
    const services = okConfig(r);
    expect(r.ok && r.config.standalone).not.toBe(false);
    expect(services.map((s) => `${s.port} ${s.iface ?? '*'}`)).toEqual([
      '25 192.0.2.1',
      '25 198.51.100.7',
      '119 192.0.2.1',
      '119 192.0.2.2',
      '110 198.51.100.7',
      '8080 *',
    ]);
    for (const s of services) expect(s.writefile).toBeNull();
    expect(services.find((s) => s.port === 110)).toMatchObject({ uid: 110, gid: 110, target: { kind: 'exec' } });
  });

  it('inetd.conf has a nowait stream line starting tcpproxy with valid arguments', () => {
    const lines = content('inetd.conf');
    expect(lines).toHaveLength(1);
    const [service, socketType, proto, wait, user, program, argv0, ...args] = (lines[0] ?? '').split(/\s+/);
    expect(service).toMatch(/:79$/);
    expect([socketType, proto, wait, user]).toEqual(['stream', 'tcp', 'nowait', 'root']);
    expect(argv0).toBe('tcpproxy');
    tcpproxyArgs([program ?? '', ...args]);
  });

  it('xinetd.d/tcpproxy is a disabled stream service starting tcpproxy with valid arguments', () => {
    const attrs = new Map(
      content('xinetd.d/tcpproxy')
        .map((l) => /^\s*([a-z_]+)\s*=\s*(.*?)\s*$/.exec(l))
        .flatMap((m) => (m ? [[m[1] ?? '', m[2] ?? ''] as const] : [])),
    );
    expect(attrs.get('disable')).toBe('yes');
    expect(attrs.get('socket_type')).toBe('stream');
    expect(attrs.get('wait')).toBe('no');
    tcpproxyArgs([attrs.get('server') ?? '', ...(attrs.get('server_args') ?? '').split(/\s+/)]);
  });

  it('systemd/tcpproxy.socket and tcpproxy.service: Accept=no, the daemon in the foreground', () => {
    expect(unit('systemd/tcpproxy.socket').get('Accept')).toEqual(['no']);
    const exec = unit('systemd/tcpproxy.service').get('ExecStart') ?? [];
    expect(exec).toHaveLength(1);
    expect(tcpproxyArgs((exec[0] ?? '').split(/\s+/))).toContain('-D');
  });

  it('systemd/tcpproxy-inetd.socket and tcpproxy-inetd@.service: Accept=yes, socket on stdin, stderr to the journal', () => {
    expect(unit('systemd/tcpproxy-inetd.socket').get('Accept')).toEqual(['yes']);
    const svc = unit('systemd/tcpproxy-inetd@.service');
    expect(svc.get('StandardInput')).toEqual(['socket']);
    expect(svc.get('StandardError')).toEqual(['journal']);
    const exec = svc.get('ExecStart') ?? [];
    expect(exec).toHaveLength(1);
    tcpproxyArgs((exec[0] ?? '').split(/\s+/));
  });
});
