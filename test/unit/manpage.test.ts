/**
 * Drift tests for the documentation: man/tcpproxy.1 against the code
 * (options, directives, exit codes, usage line, version) and the sample
 * files of examples/ against the parsers. Pure: no process, no port (the
 * page's lint and the messages it quotes from a run are in
 * test/integration/manpage-live.test.ts).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { OPTION_LETTERS, USAGE, parseArgs } from '../../src/table/cli';
import { configFileProblem, DIRECTIVES, parseConfig, readConfig, type ConfigResult } from '../../src/table/config';
import { formatConfigError } from '../../src/sys/errors';
import { EXIT_FAILURE, EXIT_OK, EXIT_SOFTWARE, EXIT_USAGE } from '../../src/sys/exit-codes';
import { DEFAULT_GID, DEFAULT_UID } from '../../src/process/privilege';
import { checkAccess } from '../../src/table/access';
import { NO_ACCESS_RULES, type Service } from '../../src/table/service';
import { GRACE_MS } from '../../src/modes/standalone';
import { openTranscript } from '../../src/session/transcript';
import { VERSION } from '../../src/sys/version';
import {
  EXAMPLES,
  examples,
  LINES,
  PAGE,
  positionsOf,
  README,
  render,
  resolve,
  ROOT,
  section,
  SECTIONS,
  tags,
  tagWord,
  unescape,
  withTempDir,
} from '../helpers/manpage';

/** The records of a transcript, read the way TRANSCRIPTS tells a reader to: header line, then count bytes. */
function parseTranscript(buf: Buffer): { time: string; direction: string; data: string }[] {
  const records: { time: string; direction: string; data: string }[] = [];
  let at = 0;
  while (at < buf.length) {
    const nl = buf.indexOf(0x0a, at);
    if (nl < 0) throw new Error(`header without newline at byte ${at}`);
    const header = buf.subarray(at, nl).toString('latin1');
    const m = /^([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z) (c>s|s>c) ([0-9]+)$/.exec(header);
    if (!m) throw new Error(`not a header line: ${JSON.stringify(header)}`);
    const count = Number(m[3]);
    const data = buf.subarray(nl + 1, nl + 1 + count);
    if (data.length !== count) throw new Error(`record of ${count} bytes cut short`);
    records.push({ time: m[1] ?? '', direction: m[2] ?? '', data: data.toString('latin1') });
    at = nl + 1 + count;
  }
  return records;
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
      'SECURITY',
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

  it('documents every option of src/table/cli.ts, --json, --help and --version, and no other', () => {
    const documented = tags(section('OPTIONS')).map(tagWord);
    const expected = [...OPTION_LETTERS.map((l) => `-${l}`), '--json', '--help', '--version'];
    expect([...documented].sort()).toEqual([...expected].sort());
  });

  it('documents every directive of src/table/config.ts, and no other', () => {
    const documented = tags(section('CONFIGURATION FILE')).map(tagWord);
    expect([...documented].sort()).toEqual([...DIRECTIVES].sort());
  });

  it('lists exit statuses 0, 1, 2 and 70, those of src/sys/exit-codes.ts', () => {
    const codes = tags(section('EXIT STATUS')).map((t) => /^\.B\s+([0-9]+)$/.exec(t)?.[1]);
    expect(codes).toEqual(['0', '1', '2', '70']);
    expect([EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_SOFTWARE].map(String)).toEqual(codes);
  });

  it('has the usage line of src/table/cli.ts as its SYNOPSIS', () => {
    const [usage, long] = render(section('SYNOPSIS')).split('\n');
    expect(`usage: ${usage ?? ''}`).toBe(USAGE);
    expect(long).toBe('tcpproxy --help | --version');
  });

  it('names the version of src/sys/version.ts wherever it names one', () => {
    expect(LINES.find((l) => l.startsWith('.TH '))).toMatch(new RegExp(`^\\.TH TCPPROXY 1 [0-9]{4}-[0-9]{2}-[0-9]{2} "tcpproxy ${VERSION.replace(/\./g, '\\.')}" "User Commands"$`));
    const named = [...PAGE.matchAll(/tcpproxy ([0-9]+\.[0-9]+\.[0-9]+)/g)].map((m) => m[1]);
    expect(named.length).toBeGreaterThanOrEqual(3);
    expect(new Set(named)).toEqual(new Set([VERSION]));
  });

  it('documents the mode decision: -s/-b, a connection on fd 0, the config file, else exit 2', () => {
    const subsections = section('MODES').filter((l) => l.startsWith('.SS '));
    expect(subsections).toEqual(['.SS Standalone', '.SS inetd mode', '.SS Socket activation']);
    const modes = render(section('MODES'));
    expect(modes).not.toMatch(/not implemented/i);
    // The four rules, in order.
    const rules = [
      'With -s or -b: standalone',
      'When file descriptor 0 is a connected TCP socket',
      'the default /etc/tcpproxy.conf included',
      'With a configuration file that does not say standalone no: standalone',
      'Otherwise there is nothing to serve.',
    ].map((r) => modes.indexOf(r));
    expect(rules.every((i) => i >= 0)).toBe(true);
    expect([...rules].sort((a, b) => a - b)).toEqual(rules);
  });

  it('documents inetd mode: fd 2 to /dev/null, syslog only, lookup, id drop before anything else, then ACP and execve or forwarding', () => {
    const inetd = render(section('MODES').slice(section('MODES').indexOf('.SS inetd mode'), section('MODES').indexOf('.SS Socket activation')));
    const at = positionsOf(inetd, [
      'is pointed at /dev/null',
      'logs to syslog only',
      'the entry for exactly that interface, else the entry of that port for any address',
      'it serves whatever port the connection arrived on',
      `exits with status ${EXIT_FAILURE}`,
      `or ${DEFAULT_UID} and ${DEFAULT_GID}`,
      'setgroups(2)',
      'setresgid(2)',
      'setresuid(2)',
      'root cannot be regained',
      'The access control program',
      'execve(2)',
      'same process id',
      'O_NONBLOCK cleared',
      'no other descriptor open',
      'every signal back to its default action',
      'forwards between descriptor 0 and that connection',
    ]);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    expect(inetd).toContain('The connection number in the log lines of inetd mode is the process id');
  });

  it('documents socket activation (Accept=no) and Accept=yes through inetd mode', () => {
    const modes = section('MODES');
    const sa = render(modes.slice(modes.indexOf('.SS Socket activation')));
    for (const t of [
      'Accept=no',
      'LISTEN_PID',
      'LISTEN_FDS',
      'from descriptor 3 on',
      'matched by its local address and port',
      'whatever socket it passed on that port',
      'Addresses that have no socket among those passed are bound as usual',
      'so that request handlers and access control programs do not inherit them',
      'Accept=yes',
      'serves in inetd mode',
      'StandardError=journal',
    ]) {
      expect(sa).toContain(t);
    }
    expect(tags(section('ENVIRONMENT')).map(tagWord)).toContain('LISTEN_FDS');
  });

  it('documents the refusal of an unsafe config file as root, with the messages of configFileProblem', () => {
    const prefix = 'tcpproxy:/etc/tcpproxy.conf: ';
    const documented = examples(section('CONFIGURATION FILE'))
      .flatMap((b) => b.split('\n'))
      .filter((l) => l.startsWith(prefix) && l.includes(': refusing it when started as root'))
      .map((l) => l.slice(prefix.length));
    expect(documented).toEqual([
      'is owned by uid 1000, not root: refusing it when started as root',
      'is writable by group (mode 0664): refusing it when started as root: chmod g-w /etc/tcpproxy.conf',
      'is writable by others (mode 0646): refusing it when started as root: chmod o-w /etc/tcpproxy.conf',
      'is writable by group and others (mode 0666): refusing it when started as root: chmod go-w /etc/tcpproxy.conf',
      'directory /etc is writable by group (mode 0775): refusing it when started as root: chmod g-w /etc',
      'symbolic link /etc/tcpproxy.conf is owned by uid 1000, not root: refusing it when started as root',
    ]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcpproxy-manpage-'));
    try {
      // As the page's /etc: the messages name this directory and this file.
      const asEtc = (problem: string | null): string =>
        (problem ?? '').replaceAll(dir, '/etc').replace(/^is owned by uid [0-9]+,/, 'is owned by uid 1000,');
      const file = path.join(dir, 'tcpproxy.conf');
      fs.writeFileSync(file, 'port 7\n    server 127.0.0.1:7\n');
      for (const mode of [0o664, 0o646, 0o666]) {
        fs.chmodSync(file, mode);
        // Owned by root (tests as root): the mode message; otherwise the owner message.
        expect(documented).toContain(asEtc(configFileProblem(file)));
      }
      if (process.geteuid?.() === 0) {
        fs.chmodSync(file, 0o644);
        fs.chmodSync(dir, 0o775);
        expect(documented).toContain(asEtc(configFileProblem(file)));
        fs.chmodSync(dir, 0o755);
        const real = path.join(dir, 'real.conf');
        fs.renameSync(file, real);
        fs.symlinkSync(real, file);
        fs.lchownSync(file, 1000, 1000);
        expect(documented).toContain(asEtc(configFileProblem(file)));
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(render(section('CONFIGURATION FILE'))).toContain(`exits with status ${EXIT_USAGE} before reading the file`);
  });

  it('documents transcripts, the pid file, detaching and SIGHUP reload as what this version does, in the page and the README', () => {
    for (const title of ['TRANSCRIPTS', 'PIDFILE', 'SIGNALS']) expect(SECTIONS.has(title)).toBe(true);
    positionsOf(render(section('OPTIONS')), [
      '-w writefile Record the traffic of each forwarded connection in a transcript file of its own, writefile.N.log (see TRANSCRIPTS)',
      '-D Do not detach in standalone mode',
    ]);
    expect(render(section('PIDFILE'))).toContain('With -p, the standalone daemon writes its process id');
    positionsOf(render(section('SIGNALS')), [
      'The master process of the standalone daemon handles these signals: SIGTERM, SIGINT Stop, letting the connections in progress finish.',
      'SIGHUP: configuration reloaded, serving',
    ]);
    positionsOf(README, [
      '## Daemon, pid file and signals',
      '- **Detaching** (standalone without `-D`)',
      '`tcpproxy: pidfile NAME: tcpproxy is already running as pid N`',
      '- **SIGHUP**: the config file is read again with the same options.',
      '## Transcripts',
    ]);
  });

  it('documents detaching: a new session on /dev/null in the same directory, returning once every port is bound', () => {
    const modes = section('MODES');
    const standaloneLines = modes.slice(modes.indexOf('.SS Standalone'), modes.indexOf('.SS inetd mode'));
    const text = render(standaloneLines);
    positionsOf(text, [
      'Without -D, standalone tcpproxy detaches',
      'a new session (setsid(2))',
      'no controlling terminal',
      'standard input, output and error are /dev/null',
      'it keeps the working directory',
      'with status 0 once every port is bound',
      "with the daemon's status after printing its message on standard error",
      '"tcpproxy: the daemon ended before it was ready"',
      'logs to syslog only',
      'With -D the process that was started is the daemon',
      'writes every log line to standard error as well as to syslog',
    ]);
    expect(fs.readFileSync(path.join(ROOT, 'src', 'modes', 'daemon.ts'), 'utf8')).toContain('tcpproxy: the daemon ended before it was ready');
    const options = render(section('OPTIONS'));
    expect(options).toContain('-D Do not detach in standalone mode');
    expect(render(section('LOGGING'))).toContain('a detached daemon logs to syslog only');
  });

  it('documents transcripts as src/session/transcript.ts writes them: exclusive 0600 files, header line + raw bytes', async () => {
    const text = render(section('TRANSCRIPTS'));
    for (const t of [
      'a file of its own named base.N.log',
      '(in inetd mode the process id)',
      'a name with 16 random hexadecimal digits added is used instead, base.N.hex.log',
      'It grows to at most writefile-max bytes (100 MiB unless set)',
      '"connection N: transcript path"',
      "after it has taken the service's identity",
      'O_CREAT, O_EXCL and O_NOFOLLOW and mode 0600',
      'an existing file is never overwritten or appended to, and a symbolic link at the name is never followed',
      'Request handlers are never recorded',
      'c>s for data from the client to the server',
      's>c for data from the server to the client',
      'UTC time of the read in ISO 8601 form with milliseconds',
      'followed by exactly count bytes',
      'with no newline or other separator after it',
      'end line says js',
    ]) {
      expect(text).toContain(t);
    }
    expect(render(section('OPTIONS'))).toContain('Request handlers are not recorded.');
    // The sample of the page reads back as the records it describes.
    const sample = examples(section('TRANSCRIPTS'));
    expect(sample).toHaveLength(1);
    expect(parseTranscript(Buffer.from(`${sample[0] ?? ''}\n`, 'latin1')).map((r) => [r.direction, r.data])).toEqual([
      ['c>s', 'hello\n'],
      ['s>c', 'echo:hello\n'],
    ]);
    await withTempDir(async (dir) => {
      const base = path.join(dir, 'trace');
      // Taken names: a file, and a symlink (dangling: following it would create the target).
      fs.writeFileSync(`${base}.5.log`, 'old');
      fs.symlinkSync(path.join(dir, 'target'), `${base}.6.log`);
      const t = openTranscript(base, 5, 1 << 20);
      expect(t.n).toBe(5);
      expect(t.path).toMatch(new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.5\\.[0-9a-f]{16}\\.log$`));
      const before = new Date().toISOString();
      t.write('c>s', Buffer.from('hello\n'));
      t.write('s>c', Buffer.from('echo:hello\n'));
      t.write('c>s', Buffer.from([0x00, 0x0a, 0xff]));
      await t.close();
      expect(fs.readFileSync(`${base}.5.log`, 'utf8')).toBe('old');
      expect(fs.existsSync(path.join(dir, 'target'))).toBe(false);
      expect(fs.statSync(t.path).mode & 0o777 & ~0o600).toBe(0);
      const records = parseTranscript(fs.readFileSync(t.path));
      expect(records.map((r) => [r.direction, r.data])).toEqual([
        ['c>s', 'hello\n'],
        ['s>c', 'echo:hello\n'],
        ['c>s', '\x00\n\xff'],
      ]);
      for (const r of records) expect(r.time >= before && r.time <= new Date().toISOString()).toBe(true);
    });
  });

  it('documents SIGTERM/SIGINT, SIGHUP and SIGUSR2 as src/modes/standalone.ts handles them, with the grace period GRACE_MS', () => {
    const sig = section('SIGNALS');
    expect(tags(sig).map(tagWord)).toEqual(['SIGTERM', 'SIGHUP', 'SIGUSR2']);
    const text = render(sig);
    const src = fs.readFileSync(path.join(ROOT, 'src', 'modes', 'standalone.ts'), 'utf8');
    const seconds = GRACE_MS / 1000;
    expect(text).toContain(`"SIGTERM: no new connections; live sessions have ${seconds} s to finish"`);
    expect(src).toContain('no new connections; live sessions have ${GRACE_MS / 1000} s to finish');
    expect(text).toContain(`up to ${seconds} seconds to end on their own`);
    expect(text).toContain(`so their sessions get ${seconds} seconds to finish`);
    expect(text).toContain('removes the pid file, logs "terminated" and exits with status 0');
    for (const m of [
      'SIGHUP: configuration has errors: keeping the running one',
      'SIGHUP: no configuration file to re-read',
      ': keeping the running configuration',
      'SIGHUP: configuration reloaded, serving',
      'stopped listening on',
      'is serving; this one stops accepting; live sessions have',
      '; this one goes on serving',
    ]) {
      expect({ m, page: text.includes(m), src: src.includes(m) }).toEqual({ m, page: true, src: true });
    }
    for (const t of ['binds the addresses that are new', 'closes those that are no longer configured', 'All other live sessions go on undisturbed']) {
      expect(text).toContain(t);
    }
    // Every mention of the grace period in the page is GRACE_MS.
    const graces = [...unescape(PAGE).matchAll(/([0-9]+) seconds? to (?:finish|end|the connections)/g)].map((m) => Number(m[1]));
    expect(graces.length).toBeGreaterThanOrEqual(3);
    expect(new Set(graces)).toEqual(new Set([seconds]));
  });

  it('lists in FILES exactly the sample files of examples/, the socket units as running tcpproxy in inetd mode and with socket activation', () => {
    const files = section('FILES');
    // The tag lines (after .TP, or .TQ for a second tag) that name a sample file.
    const listed = files.flatMap((l, i) => (['.TP', '.TQ'].includes(files[i - 1] ?? '') ? (/^\.I examples\/(\S+)$/.exec(unescape(l))?.[1] ?? []) : []));
    const shipped = fs
      .readdirSync(EXAMPLES, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.relative(EXAMPLES, path.join(e.parentPath, e.name)));
    expect([...listed].sort()).toEqual([...shipped].sort());
    const text = render(files);
    expect(text).toContain('examples/systemd/tcpproxy.socket a socket unit with Accept=no that passes the ports of examples/tcpproxy.conf to the daemon.');
    expect(text).toContain('a socket unit with Accept=yes and the service started for each connection, which runs tcpproxy in inetd mode.');
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

  it('uses documentation addresses only in its examples, and the private 10.1.0.0/16 for the office network', () => {
    const addresses = examples(section('EXAMPLES')).join('\n').match(/\b[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+\b/g) ?? [];
    expect(addresses.length).toBeGreaterThan(0);
    for (const a of addresses) expect(a).toMatch(/^(192\.0\.2|198\.51\.100|203\.0\.113|127\.0\.0|10\.1)\./);
  });

  it('has an office-network example in EXAMPLES whose lists and limits do what the page says', () => {
    const sample = examples(section('EXAMPLES')).find((b) => b.includes('allow 10.1.0.0/16'));
    expect(sample).toBeDefined();
    const [s] = okConfig(parseConfig(sample ?? '', 'EXAMPLES', resolve));
    const access = s?.access ?? NO_ACCESS_RULES;
    expect(access).toEqual({
      allow: [
        { family: 4, address: '10.1.0.0', bits: 16 },
        { family: 4, address: '10.1.99.10', bits: 32 },
      ],
      deny: [{ family: 4, address: '10.1.99.0', bits: 24 }],
      maxconn: 200,
      perSource: 4,
      rate: null,
    });
    expect(['10.1.5.7', '10.1.99.23', '10.1.99.10', '198.51.100.9'].map((c) => checkAccess(access, c))).toEqual([null, 'deny 10.1.99.0/24', null, 'no allow matched']);
    // The log lines it quotes give the rule checkAccess gives for that client.
    const quoted = examples(section('EXAMPLES'))
      .flatMap((b) => b.split('\n'))
      .filter((l) => l.includes(': refused '));
    expect(quoted).toEqual(['tcpproxy: service *:8080: refused 10.1.99.23:50114: deny 10.1.99.0/24', 'tcpproxy: service *:8080: refused 198.51.100.9:40022: no allow matched']);
    for (const l of quoted) {
      const m = /^tcpproxy: service \*:8080: refused ([0-9.]+):[0-9]+: (.*)$/.exec(l);
      expect(checkAccess(access, m?.[1] ?? '')).toBe(m?.[2]);
    }
  });

  it('documents the access lists and limits: scoping, precedence, mapped clients, runtime, inetd mode', () => {
    const cf = section('CONFIGURATION FILE');
    const sub = render(cf.slice(cf.indexOf('.SS Access lists and limits'), cf.indexOf('.SS Errors')));
    positionsOf(sub, [
      'a scope with at least one allow or deny line has both lists of its own',
      'the longest decides',
      'of the same length both hold it, the client is refused',
      'the client is refused if the lists have any allow',
      'it is matched as the IPv4 address a.b.c.d, against the IPv4 prefixes only',
      'A refused client is closed at once',
      'At most 10 such lines are written per second for a service',
      'N more refused',
      'maxconn and rate refuse nobody',
      'per-source works differently: a connection that would exceed it is accepted and closed at once',
      'all the workers of the service count against the same limits',
      'After a reload (SIGHUP) the new lists and limits apply to the connections accepted from then on',
      'In inetd mode each connection is a process of its own, so only the lists apply',
      'nowait.N',
      'instances, per_source and cps',
    ]);
    expect(render(section('OPTIONS'))).toContain('prefix=, allow= and deny= (the prefixes of the lists, each with its length, separated by commas), maxconn=, per-source=, rate=, the bounds');
  });
});

describe('man/tcpproxy.1: server groups, the PROXY protocol, source', () => {
  it('names the -zz fields in the order src/modes/list.ts prints them', () => {
    const text = render(section('OPTIONS'));
    positionsOf(text, [
      'rate=, the bounds and the sandbox (handler-timeout=, keepalive=, writefile-max=, no-new-privs=, rlimits=)',
      'send-proxy= (v1, v2 or none)',
      'accept-proxy= (none, any for every peer, or the trusted prefixes separated by commas)',
      'balance=, source= (none: the kernel\'s choice) and workers=',
    ]);
    expect(text).toContain('-b 8080 127.0.0.1:9001 127.0.0.1:9002');
  });

  it('quotes the source-address failure in the form the start check prints it, and says where it applies', () => {
    const cf = section('CONFIGURATION FILE');
    const quoted = examples(cf).filter((b) => b.includes('cannot bind source address'));
    expect(quoted).toEqual(['tcpproxy:/etc/tcpproxy.conf:12: cannot bind source address 192.0.2.9: EADDRNOTAVAIL (no such local address)']);
    const src = fs.readFileSync(path.join(ROOT, 'src', 'modes', 'listener.ts'), 'utf8');
    expect(src).toContain('`cannot bind source address ${addr}: ${err.code} (${describeCode(err.code)})`');
    expect(render(section('EXIT STATUS'))).toContain('a port or a source address that cannot be bound');
    expect(render(section('SIGNALS'))).toContain('or one of its source addresses cannot be bound');
    expect(render(cf)).toContain('In inetd mode there is no such check');
  });

  it('documents the runtime of groups and the PROXY protocol in FORWARDING', () => {
    const fw = section('FORWARDING');
    expect(fw.filter((l) => l.startsWith('.SS '))).toEqual(['.SS Server groups', '.SS PROXY protocol']);
    positionsOf(render(fw), [
      'down for 10 s',
      'up again',
      'Each worker keeps the state of the servers',
      'untrusted PROXY source',
      'longer than 4096 bytes',
      'no complete PROXY header within 5 s',
      'stay those the peer connected to',
    ]);
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

  it.each(FILES)('%s starts with a comment header, is named in the man page and the README', (name) => {
    const lines = read(name).split('\n');
    expect(lines[0]).toMatch(/^#/);
    expect(lines[1]).toMatch(/^#/);
    expect(unescape(PAGE)).toContain(`examples/${name}`);
    expect(README).toContain(name);
    expect(read(name)).not.toMatch(/NOT USABLE YET|once (inetd mode|socket activation) exists|(inetd mode|socket activation)[^.]*not implemented/i);
  });

  it('the README has a Modes section with the inetd.conf line of examples/inetd.conf', () => {
    const modes = README.slice(README.indexOf('## Modes'));
    expect(README).toContain('## Modes');
    expect(modes).toContain(content('inetd.conf')[0]);
    for (const t of ['standalone', 'inetd mode', 'Socket activation', 'LISTEN_FDS', 'Accept=yes', 'StandardError=journal']) expect(modes).toContain(t);
  });

  it('tcpproxy.conf parses, has the services of the man page sample, and records no transcripts', () => {
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
    // Reload by SIGHUP; stop by SIGTERM to the master only, so that sessions get their grace period.
    expect(unit('systemd/tcpproxy.service').get('ExecReload')).toEqual(['/bin/kill -HUP $MAINPID']);
    expect(unit('systemd/tcpproxy.service').get('KillMode')).toEqual(['mixed']);
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
