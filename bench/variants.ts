/**
 * The things measured: no proxy at all, tcpproxy with each engine, haproxy
 * (mode tcp, one thread, splice both ways) and socat (a process per
 * connection), each forwarding 127.0.0.1:PORT to one upstream; and, for the
 * request handler, tcpproxy with each engine and openbsd-inetd (`nowait`)
 * running /bin/cat for every connection. Each is started pinned to the proxy
 * CPU and is stopped by pid.
 */
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LOG_STAMP, which } from '../test/helpers/daemon';
import { INETD, inetdLine } from '../test/helpers/inetd';
import { freePort } from '../test/helpers/ports';
import { alive, isListening, listensOn } from '../test/helpers/proc';
import { until } from '../test/helpers/until';
import { killTree, pinned } from './children';

export type VariantName = 'direct' | 'splice' | 'base' | 'js' | 'haproxy' | 'socat' | 'inetd' | 'acl' | 'sendproxy' | 'acceptproxy';

export const VARIANT_LABELS: Record<VariantName, string> = {
  direct: 'direct',
  splice: 'tcpproxy splice',
  base: 'tcpproxy splice, --base build',
  js: 'tcpproxy js',
  haproxy: 'haproxy splice',
  socat: 'socat',
  inetd: 'openbsd-inetd',
  acl: 'tcpproxy splice, 100-prefix allow list',
  sendproxy: 'tcpproxy splice, send-proxy v2',
  acceptproxy: 'tcpproxy splice, accept-proxy',
};

/** The variants in front of the echo and iperf3 upstreams. */
export const PROXY_VARIANTS: readonly VariantName[] = ['direct', 'splice', 'base', 'js', 'haproxy', 'socat'];
/**
 * The variants measured for a cost against plain splice, connection rate
 * only: an access list, a PROXY v2 header written to the upstream (the echo
 * upstream drops it), a PROXY v2 header read from the client (the load
 * sends it).
 */
export const ACL_VARIANTS: readonly VariantName[] = ['acl', 'sendproxy', 'acceptproxy'];
/** Prefixes in the acl variant's allow list: 99 that never match the client, then the one that admits it. */
export const ACL_PREFIXES = 100;

/** The variants that run the request handler for each connection. */
export const HANDLER_VARIANTS: readonly VariantName[] = ['splice', 'js', 'inetd'];

/** What an instance serves: forwarding to the echo or the iperf3 upstream, or the handler. */
export type InstanceKind = 'echo' | 'iperf' | 'handler';

/** The request handler: echoes its standard input to its standard output until EOF. */
export const HANDLER = '/bin/cat';

/**
 * inetd's limit on how often a service may start per minute (-R; default
 * 256, after which it stops the service for ten minutes): far above any rate
 * here.
 */
const INETD_RATE = 1_000_000_000;

export interface StartContext {
  readonly proxyCpu: number;
  readonly tmpDir: string;
  /** dist/src/tcpproxy.js */
  readonly tcpproxy: string;
  /** The same file of another build (`--base DIR`), run by the base variant; null without --base. */
  readonly baseTcpproxy: string | null;
  /** Most idle connections a test will hold (haproxy's maxconn). */
  readonly maxConns: number;
}

export class Instance {
  readonly variant: VariantName;
  readonly kind: InstanceKind;
  /** The upstream it forwards to; 0 for the handler. */
  readonly upstreamPort: number;
  port = 0;
  child: ChildProcess | null = null;
  /** The proxy's stderr, for tcpproxy and haproxy. */
  logFile: string | null = null;
  private logOffset = 0;
  /** Lines of the log that are not per-connection records: crashes, restarts, warnings. */
  readonly events: string[] = [];
  starts = 0;
  /**
   * tcpproxy: how many connections each forwarding path (splice, copy, js)
   * ended on, or, for the handler, how it ended (`handler exit 0`), from the log.
   */
  readonly paths: Record<string, number> = {};

  constructor(variant: VariantName, kind: InstanceKind, upstreamPort: number) {
    this.variant = variant;
    this.kind = kind;
    this.upstreamPort = upstreamPort;
  }

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  get label(): string {
    return VARIANT_LABELS[this.variant];
  }

  isAlive(): boolean {
    if (this.variant === 'direct') return true;
    const pid = this.pid;
    return pid !== null && this.child?.exitCode === null && this.child.signalCode === null && alive(pid);
  }

  /** New lines of the proxy's log since the last call, minus per-connection records. */
  scanLog(): string[] {
    if (!this.logFile) return [];
    let fd: number;
    try {
      fd = fs.openSync(this.logFile, 'r');
    } catch {
      return [];
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= this.logOffset) return [];
      const buf = Buffer.alloc(size - this.logOffset);
      fs.readSync(fd, buf, 0, buf.length, this.logOffset);
      const text = buf.toString('utf8');
      const cut = text.lastIndexOf('\n') + 1;
      this.logOffset += Buffer.byteLength(text.slice(0, cut));
      const lines: string[] = [];
      for (const raw of text.slice(0, cut).split('\n')) {
        // Log lines without their time and prefix (-D: `TIME tcpproxy: `).
        const l = raw.replace(LOG_STAMP, '');
        if (l === '' || / ready, pid \d+$/.test(l) || /^connection \d+: (client|connected to) /.test(l)) continue;
        const handler = /^connection \d+: end: handler \S* pid \S+ (.*), \d+ ms$/.exec(l);
        const end = handler ? null : /^connection \d+: end: .*, (\w+)$/.exec(l);
        const how = handler ? `handler ${handler[1] ?? '?'}` : end?.[1];
        if (how !== undefined) this.paths[how] = (this.paths[how] ?? 0) + 1;
        else lines.push(l);
      }
      this.events.push(...lines);
      return lines;
    } finally {
      fs.closeSync(fd);
    }
  }

  async start(ctx: StartContext): Promise<void> {
    this.starts++;
    if (this.variant === 'direct') {
      this.port = this.upstreamPort;
      return;
    }
    const tag = `${this.variant}-${this.kind}-${this.starts}`;
    this.logFile = path.join(ctx.tmpDir, `${tag}.log`);
    this.logOffset = 0;
    const logFd = fs.openSync(this.logFile, 'w');
    try {
      if (this.variant === 'splice' || this.variant === 'js' || this.variant === 'base') await this.startTcpproxy(ctx, logFd);
      else if (this.variant === 'acl') await this.startTcpproxyAcl(ctx, tag, logFd);
      else if (this.variant === 'sendproxy') await this.startTcpproxyConf(ctx, tag, logFd, ['  send-proxy v2']);
      else if (this.variant === 'acceptproxy') await this.startTcpproxyConf(ctx, tag, logFd, ['  accept-proxy 127.0.0.1/32']);
      else if (this.variant === 'haproxy') await this.startHaproxy(ctx, tag, logFd);
      else if (this.variant === 'inetd') await this.startInetd(ctx, tag, logFd);
      else await this.startSocat(ctx, logFd);
    } catch (err) {
      await this.stop();
      throw err;
    } finally {
      fs.closeSync(logFd);
    }
  }

  private async waitFor(what: string, ok: () => boolean, timeoutMs = 10_000): Promise<void> {
    await until(
      () => {
        if (ok()) return true;
        if (this.isAlive()) return false;
        const log = this.logFile ? fs.readFileSync(this.logFile, 'utf8').slice(-2000) : '';
        throw new Error(`${this.label} exited before ${what}${log ? `:\n${log}` : ''}`);
      },
      `${this.label}: ${what}`,
      timeoutMs,
    );
  }

  private async startTcpproxy(ctx: StartContext, logFd: number): Promise<void> {
    const base = this.variant === 'base';
    if (base && ctx.baseTcpproxy === null) throw new Error('the base variant needs --base DIR');
    this.child = pinned(
      ctx.proxyCpu,
      process.execPath,
      [base ? (ctx.baseTcpproxy as string) : ctx.tcpproxy, '-D', '-b', '127.0.0.1:0', this.kind === 'handler' ? HANDLER : `127.0.0.1:${this.upstreamPort}`],
      { stdio: ['ignore', 'ignore', logFd], env: { ...process.env, TCPPROXY_ENGINE: base ? 'splice' : this.variant } },
    );
    const file = this.logFile as string;
    let text = '';
    await this.waitFor('"listening on" line', () => {
      text = fs.readFileSync(file, 'utf8');
      return /listening on 127\.0\.0\.1:\d+/.test(text) && / ready, pid \d+/.test(text);
    });
    this.port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(text)?.[1]);
    this.scanLog();
  }

  /** tcpproxy splice from a config file whose service has an allow list of ACL_PREFIXES prefixes, the client's last. */
  private async startTcpproxyAcl(ctx: StartContext, tag: string, logFd: number): Promise<void> {
    const misses = Array.from({ length: ACL_PREFIXES - 1 }, (_, i) => `10.${i >> 4}.${(i & 15) * 16}.0/20`);
    const lines: string[] = [];
    for (let i = 0; i < misses.length; i += 10) lines.push(`  allow ${misses.slice(i, i + 10).join(' ')}`);
    lines.push('  allow 127.0.0.1/32');
    await this.startTcpproxyConf(ctx, tag, logFd, lines);
  }

  /** tcpproxy splice from a config file: one service on 127.0.0.1 to the upstream, with `extra` lines in it. */
  private async startTcpproxyConf(ctx: StartContext, tag: string, logFd: number, extra: readonly string[]): Promise<void> {
    this.port = await freePort();
    const conf = path.join(ctx.tmpDir, `${tag}.conf`);
    const lines = [`port ${this.port}`, '  interface 127.0.0.1', `  server 127.0.0.1:${this.upstreamPort}`, ...extra];
    fs.writeFileSync(conf, `${lines.join('\n')}\n`, { mode: 0o600 });
    this.child = pinned(ctx.proxyCpu, process.execPath, [ctx.tcpproxy, '-D', '-f', conf], {
      stdio: ['ignore', 'ignore', logFd],
      env: { ...process.env, TCPPROXY_ENGINE: 'splice' },
    });
    const file = this.logFile as string;
    await this.waitFor('"listening on" line', () => {
      const text = fs.readFileSync(file, 'utf8');
      return text.includes(`listening on 127.0.0.1:${this.port}`) && / ready, pid \d+/.test(text);
    });
    this.scanLog();
  }

  private async startHaproxy(ctx: StartContext, tag: string, logFd: number): Promise<void> {
    this.port = await freePort();
    const maxconn = ctx.maxConns + 100;
    const cfg = [
      'global',
      '  nbthread 1',
      `  maxconn ${maxconn}`,
      // Pipes are pooled and only held while data is in flight; the default
      // (maxconn / 4) would need more fds than RLIMIT_NOFILE allows here.
      '  maxpipes 512',
      'defaults',
      '  mode tcp',
      `  maxconn ${maxconn}`,
      '  timeout connect 5s',
      '  timeout client 10m',
      '  timeout server 10m',
      '  option splice-request',
      '  option splice-response',
      'frontend fe',
      `  bind 127.0.0.1:${this.port} backlog 4096`,
      '  default_backend be',
      'backend be',
      `  server s1 127.0.0.1:${this.upstreamPort}`,
      '',
    ].join('\n');
    const file = path.join(ctx.tmpDir, `${tag}.cfg`);
    fs.writeFileSync(file, cfg);
    this.child = pinned(ctx.proxyCpu, 'haproxy', ['-f', file, '-db'], { stdio: ['ignore', logFd, logFd] });
    await this.waitFor(`listener on port ${this.port}`, () => isListening(this.port));
  }

  /**
   * `inetd -i -R RATE CONF` (foreground, no debug output: it logs nothing per
   * connection), CONF one `nowait` line running the handler as nobody. inetd
   * writes /run/inetd.pid whatever its options and removes it at exit, so it
   * runs in a mount namespace of its own with an empty tmpfs on /run: the
   * host's pid file (a system inetd's, a test's) is never touched. unshare,
   * sh and taskset exec in place, so the pid is inetd's.
   */
  private async startInetd(ctx: StartContext, tag: string, logFd: number): Promise<void> {
    this.port = await freePort();
    const conf = path.join(ctx.tmpDir, `${tag}.conf`);
    const line = inetdLine({ host: '127.0.0.1', port: this.port, program: HANDLER, argv: ['cat'], user: 'nobody' });
    fs.writeFileSync(conf, `${line}\n`, { mode: 0o600 });
    const privateRun = `${which('mount')} -t tmpfs -o mode=0755 tmpfs /run && exec "$@"`;
    this.child = pinned(
      ctx.proxyCpu,
      which('unshare'),
      ['-m', '--propagation', 'private', '--', '/bin/sh', '-c', privateRun, 'sh', INETD, '-i', '-R', String(INETD_RATE), conf],
      { stdio: ['ignore', logFd, logFd] },
    );
    const pid = this.pid as number;
    await this.waitFor(`listener on port ${this.port}`, () => listensOn(pid, '127.0.0.1', this.port));
  }

  private async startSocat(ctx: StartContext, logFd: number): Promise<void> {
    this.port = await freePort();
    this.child = pinned(
      ctx.proxyCpu,
      'socat',
      [`TCP-LISTEN:${this.port},fork,reuseaddr,bind=127.0.0.1,backlog=4096`, `TCP:127.0.0.1:${this.upstreamPort}`],
      { stdio: ['ignore', logFd, logFd] },
    );
    await this.waitFor(`listener on port ${this.port}`, () => isListening(this.port));
  }

  async stop(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (child) await killTree(child, 3000);
    this.scanLog();
  }
}
