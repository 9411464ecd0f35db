/**
 * The metrics process: serves `GET /metrics` in the Prometheus text format
 * on the listening socket the master bound for `metrics [interface:]port`
 * (fd 4 of the fork). It drops to the default service ids (when started by
 * root) and makes itself non-dumpable before it answers anything: the root
 * master never parses HTTP. For each scrape it asks the master for a
 * snapshot (MetricsSnapshot) over IPC and renders it with prom-client's
 * exposition code.
 *
 * HTTP: only `/metrics` (404 otherwise), GET or HEAD (405 otherwise), no
 * request body; a request whose head is over 8 KiB is refused (431, Node's
 * bound), and a connection idle for 10 s, or a request not complete within
 * 10 s, is closed.
 */
import * as http from 'node:http';
import type * as net from 'node:net';
import { Registry, type Metric } from 'prom-client';
import { DURATION_BUCKETS_MS } from '../sys/native';
import { dropPrivileges, nonDumpable, type Identity } from './privilege';

/** What the master sends for a scrape: its counts now. */
export interface MetricsSnapshot {
  readonly version: string;
  readonly services: readonly {
    /** Labels: the service's port and interface (`*` for every one). */
    readonly port: number;
    readonly interface: string;
    readonly live: number;
    readonly sessions: number;
    readonly refused: { readonly deny: number; readonly noAllow: number; readonly perSource: number; readonly proxy: number };
    readonly bytesUp: number;
    readonly bytesDown: number;
    /** Ended sessions per DURATION_BUCKETS_MS bucket (and a last for longer), not cumulative, and their summed ms. */
    readonly durations: readonly number[];
    readonly durationMs: number;
    readonly servers: readonly { readonly server: string; readonly up: boolean; readonly connectFailed: number }[];
  }[];
  readonly workers: number;
  readonly workerRestarts: number;
}

export interface MetricsInit {
  readonly type: 'init';
  /** The listening socket's fd in this process. */
  readonly fd: number;
  /** The ids to drop to, or null (not started by root). */
  readonly expect: Identity | null;
}

export interface MetricsAnswer {
  readonly type: 'snapshot';
  readonly req: number;
  readonly snapshot: MetricsSnapshot | null;
}

export type ToMetrics = MetricsInit | MetricsAnswer;
/** The one message the metrics process sends: a scrape's question. */
export interface ScrapeRequest {
  readonly type: 'scrape';
  readonly req: number;
}

export const IDLE_MS = 10_000;
export const MAX_HEAD = 8 * 1024;

type Value = { readonly labels: Record<string, string | number>; readonly value: number; readonly metricName?: string };

/**
 * A metric whose values come from the snapshot being rendered: the shape
 * prom-client's Registry takes (name, help, type, get()), so its own code
 * writes the HELP and TYPE lines and escapes the label values.
 */
function metric(name: string, help: string, type: 'counter' | 'gauge' | 'histogram', values: () => Value[]): Metric {
  const m = { name, help, type, aggregator: 'sum', get: async () => ({ name, help, type, values: values(), aggregator: 'sum' }) };
  return m as unknown as Metric;
}

/** The text of `/metrics` for `s`. */
export async function renderMetrics(s: MetricsSnapshot): Promise<string> {
  const r = new Registry();
  const per = <T>(f: (v: MetricsSnapshot['services'][number], l: { port: number; interface: string }) => T[]): T[] =>
    s.services.flatMap((v) => f(v, { port: v.port, interface: v.interface }));
  r.registerMetric(metric('tcpproxy_build_info', 'The running tcpproxy: its version and Node.js.', 'gauge', () => [{ labels: { version: s.version, node: process.version }, value: 1 }]));
  r.registerMetric(metric('tcpproxy_sessions_total', 'Sessions admitted, by service.', 'counter', () => per((v, l) => [{ labels: l, value: v.sessions }])));
  r.registerMetric(metric('tcpproxy_sessions_live', 'Live sessions, by service.', 'gauge', () => per((v, l) => [{ labels: l, value: v.live }])));
  r.registerMetric(
    metric('tcpproxy_refused_total', 'Clients refused, by service and reason.', 'counter', () =>
      per((v, l) => [
        { labels: { ...l, reason: 'deny' }, value: v.refused.deny },
        { labels: { ...l, reason: 'no-allow' }, value: v.refused.noAllow },
        { labels: { ...l, reason: 'per-source' }, value: v.refused.perSource },
        { labels: { ...l, reason: 'proxy' }, value: v.refused.proxy },
      ]),
    ),
  );
  r.registerMetric(
    metric('tcpproxy_bytes_total', 'Bytes forwarded by the sessions that ended, by service and direction (up: client to server).', 'counter', () =>
      per((v, l) => [
        { labels: { ...l, direction: 'up' }, value: v.bytesUp },
        { labels: { ...l, direction: 'down' }, value: v.bytesDown },
      ]),
    ),
  );
  r.registerMetric(
    metric('tcpproxy_upstream_connect_failures_total', 'Failed connects to an upstream server, by service and server.', 'counter', () =>
      per((v, l) => v.servers.map((x) => ({ labels: { ...l, server: x.server }, value: x.connectFailed }))),
    ),
  );
  r.registerMetric(
    metric('tcpproxy_upstream_up', 'Whether an upstream server is up (0: marked down after a failed connect).', 'gauge', () =>
      per((v, l) => v.servers.map((x) => ({ labels: { ...l, server: x.server }, value: x.up ? 1 : 0 }))),
    ),
  );
  r.registerMetric(
    metric('tcpproxy_session_duration_seconds', 'Durations of the sessions that ended, by service.', 'histogram', () =>
      per((v, l) => {
        let cumulative = 0;
        const out: Value[] = DURATION_BUCKETS_MS.map((ms, i) => {
          cumulative += v.durations[i] ?? 0;
          return { metricName: 'tcpproxy_session_duration_seconds_bucket', labels: { ...l, le: ms / 1000 }, value: cumulative };
        });
        const count = v.durations.reduce((n, x) => n + x, 0);
        out.push({ metricName: 'tcpproxy_session_duration_seconds_bucket', labels: { ...l, le: '+Inf' }, value: count });
        out.push({ metricName: 'tcpproxy_session_duration_seconds_sum', labels: l, value: v.durationMs / 1000 });
        out.push({ metricName: 'tcpproxy_session_duration_seconds_count', labels: l, value: count });
        return out;
      }),
    ),
  );
  r.registerMetric(metric('tcpproxy_workers', 'Worker processes running.', 'gauge', () => [{ labels: {}, value: s.workers }]));
  r.registerMetric(metric('tcpproxy_worker_restarts_total', 'Workers restarted after they ended unasked.', 'counter', () => [{ labels: {}, value: s.workerRestarts }]));
  return r.metrics();
}

/** How long a scrape waits for the master's snapshot. */
const SNAPSHOT_MS = 5000;
/** How long one snapshot answers every scrape. */
const SHARE_MS = 100;
/** Connections served at once; more are closed at once (a scraper needs one). */
const MAX_CONNECTIONS = 64;

export function runMetrics(): void {
  let started = false;
  let nextReq = 1;
  const waiting = new Map<number, (s: MetricsSnapshot | null) => void>();
  // Scrapes at the same time share one question to the master, and its answer
  // serves for SHARE_MS: however many clients ask, the master hears at most
  // about ten questions a second.
  let shared: { at: number; answer: Promise<MetricsSnapshot | null> } | null = null;
  const snapshot = (): Promise<MetricsSnapshot | null> => {
    const now = Date.now();
    if (shared !== null && now - shared.at < SHARE_MS) return shared.answer;
    const answer = ask();
    shared = { at: now, answer };
    void answer.then((s) => {
      // A failed question is not kept: the next scrape asks again.
      if (s === null && shared?.answer === answer) shared = null;
    });
    return answer;
  };
  const ask = (): Promise<MetricsSnapshot | null> =>
    new Promise((resolve) => {
      const req = nextReq++;
      const timer = setTimeout(() => {
        waiting.delete(req);
        resolve(null);
      }, SNAPSHOT_MS);
      waiting.set(req, (s) => {
        clearTimeout(timer);
        resolve(s);
      });
      if (process.connected) process.send?.({ type: 'scrape', req } satisfies ScrapeRequest);
    });

  const answer = (res: http.ServerResponse, code: number, text: string, type = 'text/plain; charset=utf-8'): void => {
    res.writeHead(code, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  };

  const serve = (fd: number): void => {
    // connectionsCheckingInterval: Node checks the request timeouts only this often (30 s by default).
    const server = http.createServer({ maxHeaderSize: MAX_HEAD, requestTimeout: IDLE_MS, headersTimeout: IDLE_MS, connectionsCheckingInterval: 1000 }, (req, res) => {
      const url = (req.url ?? '').split('?')[0];
      if (url !== '/metrics') return answer(res, 404, 'not found: the metrics are at /metrics\n');
      if (req.method !== 'GET' && req.method !== 'HEAD') return answer(res, 405, 'only GET\n');
      if (Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined) return answer(res, 413, 'no request body\n');
      void snapshot().then(async (s) => {
        if (s === null) return answer(res, 503, 'tcpproxy did not answer\n');
        answer(res, 200, await renderMetrics(s), Registry.PROMETHEUS_CONTENT_TYPE);
      });
    });
    server.keepAliveTimeout = IDLE_MS;
    server.maxConnections = MAX_CONNECTIONS;
    // A connection with nothing going on for 10 s is closed (between requests, or before the first).
    server.setTimeout(IDLE_MS, (sock: net.Socket) => sock.destroy());
    server.on('clientError', (err: NodeJS.ErrnoException, sock: net.Socket) => {
      if (!sock.writable) return sock.destroy();
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
      sock.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    });
    server.listen({ fd });
  };

  process.on('message', (m: ToMetrics) => {
    if (m.type === 'init') {
      if (started) return;
      started = true;
      if (m.expect !== null) {
        const problem = dropPrivileges(m.expect);
        if (problem !== null) {
          process.stderr.write(`tcpproxy: metrics: cannot drop privileges to uid ${m.expect.uid} gid ${m.expect.gid}: ${problem}\n`);
          process.exit(1);
        }
      }
      const undumpable = nonDumpable();
      if (undumpable !== null) {
        process.stderr.write(`tcpproxy: metrics: cannot make itself non-dumpable: ${undumpable}\n`);
        process.exit(1);
      }
      process.title = 'tcpproxy: metrics';
      serve(m.fd);
      if (process.connected) process.send?.({ type: 'ready' });
      return;
    }
    if (m.type === 'snapshot') {
      const done = waiting.get(m.req);
      waiting.delete(m.req);
      done?.(m.snapshot);
    }
  });
  process.on('disconnect', () => process.exit(0));
  // The master stops this process itself; a group signal is not for it.
  process.on('SIGHUP', () => undefined);
  process.on('SIGINT', () => undefined);
}

if (require.main === module) runMetrics();
