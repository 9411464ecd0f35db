/**
 * Real peers for the interop tests (test/interop): HAProxy and nginx's
 * stream module, each started by the test in the foreground on loopback
 * with a config generated into a directory of its own, and a "silent"
 * upstream that never completes a TCP handshake.
 *
 * - HAProxy: `haproxy -db -f CONF` (-db: foreground, no daemon, no
 *   master-worker); `global` without `daemon`, `defaults mode tcp` with
 *   timeouts, one frontend and one backend per listener; its log (one line a
 *   connection) goes to its stderr, for failure messages.
 * - nginx: `nginx -e stderr -p PREFIX/ -c CONF -g 'daemon off;'`, the stream
 *   module loaded by the config (Debian builds it as a dynamic module:
 *   libnginx-mod-stream), pid file and logs in PREFIX; the config has no http
 *   block, so nginx needs none of its http temporary paths.
 *
 * Both are started through helpers/daemon launch() in a process group of
 * their own, so killLaunched() (helpers/setup cleanUpAfterEach) ends them
 * and their workers by pid; a handle's stop() does it at once. Ports are
 * the caller's literal ones (helpers/ports freePort) or picked here the same
 * way. Readiness is read from the kernel: a LISTEN socket on each port held
 * by the started process (/proc/net/tcp{,6} and its fds), polled with a
 * deadline. Not by connecting to it: HAProxy in TCP mode connects to its
 * server for every client at once, so a probe would be one more connection
 * at the upstream (and a spurious session in tcpproxy behind it).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Client } from './client';
import { launch, onPath, type Launched } from './daemon';
import { freePort } from './ports';
import { socketInodesOf, TCP_LISTEN, tcpSockets } from './proc';
import { until } from './until';

export const HAPROXY = '/usr/sbin/haproxy';
export const NGINX = '/usr/sbin/nginx';
/** Debian's dynamic stream module (package libnginx-mod-stream). */
export const NGINX_STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';

/** What to install when a peer is missing (the packages .ci/run installs). */
export const PEER_PACKAGES = 'apt-get install -y haproxy nginx-light libnginx-mod-stream';

/** Why the peers cannot run here (a missing program or module, with the fix), or null. */
export function missingPeers(): string | null {
  const missing = [HAPROXY, NGINX, NGINX_STREAM_MODULE].filter((f) => !fs.existsSync(f));
  if (onPath('python3') === null) missing.push('python3 (the silent server)');
  return missing.length === 0 ? null : `missing ${missing.join(', ')}: ${PEER_PACKAGES}`;
}

/** Throws unless HAProxy, nginx with its stream module and python3 are installed (a failure, never a skip). */
export function requirePeers(): void {
  const why = missingPeers();
  if (why !== null) throw new Error(`test/interop needs real HAProxy and nginx: ${why}`);
}

export interface Bind {
  /** An IP literal (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
}

/** A started peer: its process (launch) plus its config and where it listens. */
export interface Peer extends Launched {
  readonly conf: string;
  readonly binds: readonly Bind[];
}

/** `127.0.0.1:80`, `[::1]:80`: the address syntax HAProxy and nginx both take. */
export function hostPort(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

async function pickPort(host: string, port: number | undefined): Promise<number> {
  return port ?? freePort(host);
}

/** True when `pid` holds a LISTEN socket on `port` (IPv4 or IPv6). */
export function holdsListener(pid: number, port: number): boolean {
  const mine = socketInodesOf(pid);
  return tcpSockets().some((s) => s.state === TCP_LISTEN && s.localPort === port && mine.has(s.inode));
}

/** Resolves once `p` listens on every bind; fails with its output if it exits first or the deadline passes. */
export async function waitPeerListening(p: Launched, binds: readonly Bind[], timeoutMs = 10000): Promise<void> {
  const what = (): string =>
    `${p.argv.join(' ')} to listen on ${binds.map((b) => hostPort(b.host, b.port)).join(', ')}; ` +
    `exit ${JSON.stringify(p.exit())}; stderr:\n${p.stderr()}`;
  await until(() => p.exit() !== null || binds.every((b) => holdsListener(p.pid, b.port)), what, timeoutMs);
  if (p.exit() !== null) throw new Error(`exited before listening: ${what()}`);
}

async function startPeer(argv: readonly string[], conf: string, binds: readonly Bind[], timeoutMs: number): Promise<Peer> {
  const p = launch(argv, { detached: true });
  const peer: Peer = Object.assign(p, { conf, binds });
  try {
    await waitPeerListening(peer, binds, timeoutMs);
  } catch (e) {
    await peer.stop(2000);
    throw e;
  }
  return peer;
}

// ------------------------------------------------------------------ HAProxy

export interface HaproxyServer {
  readonly host: string;
  readonly port: number;
  /** `send-proxy` (1) or `send-proxy-v2` (2) on the server line. */
  readonly sendProxy?: 1 | 2;
  /** `source ADDR` on the server line: the address HAProxy connects from (IPv4 only in HAProxy 2.6's syntax here). */
  readonly source?: string;
}

export interface HaproxyFrontend {
  readonly bind: { readonly host: string; readonly port?: number };
  /** `accept-proxy` on the bind line: every client must send a PROXY header (v1 or v2). */
  readonly acceptProxy?: boolean;
  readonly servers: readonly HaproxyServer[];
}

/** The config of HAProxy with `frontends` (frontend fN, backend bN each), listening on `binds`. */
export function haproxyConfig(frontends: readonly HaproxyFrontend[], binds: readonly Bind[]): string {
  const lines = [
    'global',
    '  log stderr format raw local0 info',
    '  maxconn 1024',
    'defaults',
    '  mode tcp',
    '  log global',
    '  option tcplog',
    '  timeout connect 5s',
    '  timeout client 60s',
    '  timeout server 60s',
  ];
  frontends.forEach((f, i) => {
    const b = binds[i];
    if (b === undefined) throw new Error('haproxyConfig: a bind per frontend');
    lines.push(`frontend f${i}`, `  bind ${hostPort(b.host, b.port)}${f.acceptProxy === true ? ' accept-proxy' : ''}`, `  default_backend b${i}`);
    lines.push(`backend b${i}`, '  balance roundrobin');
    f.servers.forEach((s, j) => {
      const opts = [
        ...(s.sendProxy === 1 ? ['send-proxy'] : s.sendProxy === 2 ? ['send-proxy-v2'] : []),
        ...(s.source !== undefined ? [`source ${s.source}`] : []),
      ];
      lines.push(`  server s${j} ${hostPort(s.host, s.port)}${opts.map((o) => ` ${o}`).join('')}`);
    });
  });
  return lines.join('\n') + '\n';
}

/** Starts `haproxy -db -f CONF` (config written into a new directory under `dir`) and waits until it listens. */
export async function startHaproxy(dir: string, frontends: readonly HaproxyFrontend[], timeoutMs = 10000): Promise<Peer> {
  const binds: Bind[] = [];
  for (const f of frontends) binds.push({ host: f.bind.host, port: await pickPort(f.bind.host, f.bind.port) });
  const home = fs.mkdtempSync(path.join(dir, 'haproxy-'));
  const conf = path.join(home, 'haproxy.cfg');
  fs.writeFileSync(conf, haproxyConfig(frontends, binds), { mode: 0o600 });
  return startPeer([HAPROXY, '-db', '-f', conf], conf, binds, timeoutMs);
}

// -------------------------------------------------------------------- nginx

export interface NginxServer {
  readonly listen: { readonly host: string; readonly port?: number };
  /** `proxy_protocol` on the listen line: every client must send a PROXY header (v1 or v2). */
  readonly proxyProtocol: boolean;
  /** The `return` value (nginx variables allowed; `\n` as nginx's escape): sent, then the connection is closed. */
  readonly returns: string;
}

/**
 * What nginx answers with PROXY_ADDRESSES: `$proxy_protocol_addr:$proxy_protocol_port
 * $proxy_protocol_server_addr:$proxy_protocol_server_port\n` (addresses as nginx prints
 * them: IPv6 without brackets).
 */
export const PROXY_ADDRESSES = '$proxy_protocol_addr:$proxy_protocol_port $proxy_protocol_server_addr:$proxy_protocol_server_port\\n';

/** nginx's rendering of PROXY_ADDRESSES for a header from `src` to `dst`. */
export function nginxAddresses(src: { readonly address: string; readonly port: number }, dst: { readonly address: string; readonly port: number }): string {
  return `${src.address}:${src.port} ${dst.address}:${dst.port}\n`;
}

/** The config of nginx (prefix `prefix`) with one stream server per entry, listening on `binds`. */
export function nginxConfig(prefix: string, servers: readonly NginxServer[], binds: readonly Bind[]): string {
  const lines = [
    `load_module ${NGINX_STREAM_MODULE};`,
    `pid ${path.join(prefix, 'nginx.pid')};`,
    'error_log stderr info;',
    'worker_processes 1;',
    'events { worker_connections 1024; }',
    'stream {',
  ];
  servers.forEach((s, i) => {
    const b = binds[i];
    if (b === undefined) throw new Error('nginxConfig: a bind per server');
    lines.push('  server {', `    listen ${hostPort(b.host, b.port)}${s.proxyProtocol ? ' proxy_protocol' : ''};`, `    return "${s.returns}";`, '  }');
  });
  lines.push('}');
  return lines.join('\n') + '\n';
}

/** Starts nginx in the foreground (prefix and config in a new directory under `dir`) and waits until it listens. */
export async function startNginx(dir: string, servers: readonly NginxServer[], timeoutMs = 10000): Promise<Peer> {
  const binds: Bind[] = [];
  for (const s of servers) binds.push({ host: s.listen.host, port: await pickPort(s.listen.host, s.listen.port) });
  const prefix = fs.mkdtempSync(path.join(dir, 'nginx-'));
  const conf = path.join(prefix, 'nginx.conf');
  fs.writeFileSync(conf, nginxConfig(prefix, servers, binds), { mode: 0o600 });
  // -e stderr: the error log before the config is read (the default is under /var/log/nginx).
  return startPeer([NGINX, '-e', 'stderr', '-p', `${prefix}/`, '-c', conf, '-g', 'daemon off;'], conf, binds, timeoutMs);
}

// -------------------------------------------------------------- the silent one

/**
 * python3: a listening socket with a backlog of 0 that never accepts; prints
 * its port and waits to be killed. Once one connection fills its accept queue
 * the kernel drops every further SYN (a full accept queue drops SYNs whatever
 * the syncookie setting), so a connect to it neither succeeds nor fails: it
 * times out, as to a host that drops packets, with nothing but loopback.
 */
const SILENT = `
import signal, socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_STREAM)
s.bind((sys.argv[1], 0))
s.listen(0)
sys.stdout.write('%d\\n' % s.getsockname()[1])
sys.stdout.flush()
while True:
    signal.pause()
`;

/** The accept queue length (rx_queue) of the LISTEN socket on `port` that `pid` holds, or null when there is none. */
export function acceptQueue(pid: number, port: number): number | null {
  const mine = socketInodesOf(pid);
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || parseInt(f[3] ?? '', 16) !== TCP_LISTEN || !mine.has(Number(f[9]))) continue;
      const local = f[1] ?? '';
      if (parseInt(local.slice(local.lastIndexOf(':') + 1), 16) !== port) continue;
      return parseInt((f[4] ?? '0:0').split(':')[1] ?? '0', 16);
    }
  }
  return null;
}

export interface SilentServer {
  readonly host: string;
  readonly port: number;
  readonly proc: Launched;
  /** The one connection that fills the accept queue (a helpers/client Client: destroyAllClients ends it). */
  readonly filler: Client;
  close(): Promise<void>;
}

/** A server on `host` (an ephemeral port) that completes no handshake (see SILENT); ready once its queue is full. */
export async function silentServer(host = '127.0.0.1'): Promise<SilentServer> {
  const python = onPath('python3');
  if (python === null) throw new Error('python3 is not on PATH: the silent server needs it');
  const proc = launch([python, '-c', SILENT, host], { detached: true });
  try {
    await until(() => /^\d+\n/.test(proc.stdout()) || proc.exit() !== null, 'the silent server to print its port', 10000);
    if (proc.exit() !== null) throw new Error(`the silent server exited: ${JSON.stringify(proc.exit())}\n${proc.stderr()}`);
    const port = Number(proc.stdout().trim());
    const filler = await Client.connect(host, port);
    await until(() => (acceptQueue(proc.pid, port) ?? 0) >= 1, `the filler connection in the accept queue of ${hostPort(host, port)}`, 5000);
    return {
      host,
      port,
      proc,
      filler,
      close: async () => {
        filler.destroy();
        await proc.stop(2000);
      },
    };
  } catch (e) {
    proc.kill();
    throw e;
  }
}
