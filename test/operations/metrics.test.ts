/**
 * Prometheus metrics (issue 15 item 2), through the built CLI as root, on
 * both engines: after a known workload (one client refused, one session of
 * 1000 bytes each way, one of 10 bytes that failed over from a dead server
 * to a live one) /metrics is parsed by prometheus_client's own parser (the
 * Debian package python3-prometheus-client) and every value checked; it is
 * served by a process of uid nobody, not root nor a service's uid; only GET
 * /metrics is answered, a request head over 8 KiB is refused and an idle
 * connection is closed after 10 s; a metrics port that is a service's
 * fails the start, and a bad `metrics` line is a config error at its line.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { clientText, echoThrough } from '../helpers/access';
import { Client } from '../helpers/client';
import { ENGINES, re, runCli, runToExit, waitLog, withProxy, type Proxy } from '../helpers/daemon';
import { freePort } from '../helpers/ports';
import { alive } from '../helpers/proc';
import { requireRoot } from '../helpers/root';
import { digestOf, echoServer, payload } from '../helpers/servers';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';
import { VERSION } from '../../src/sys/version';

beforeAll(requireRoot);
const tmp = useTempDir('tcpproxy-metrics-');
cleanUpAfterEach();

/** The system's python3 (the one with python3-prometheus-client), not whatever python3 is first on PATH. */
const PYTHON = '/usr/bin/python3';
const PARSE = [
  'import json, sys',
  'from prometheus_client.parser import text_string_to_metric_families',
  'out = []',
  'for f in text_string_to_metric_families(sys.stdin.read()):',
  '    for s in f.samples:',
  '        out.append([f.name, f.type, s.name, s.labels, s.value])',
  'print(json.dumps(out))',
].join('\n');

type Sample = [family: string, type: string, name: string, labels: Record<string, string>, value: number];

async function parse(text: string): Promise<Sample[]> {
  const r = await runToExit([PYTHON, '-c', PARSE], { input: text });
  if (r.code !== 0) throw new Error(`the Prometheus parser refused the metrics (${r.code}): ${r.stderr}\n${text}`);
  return JSON.parse(r.stdout) as Sample[];
}

function get(port: number, urlPath: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: urlPath, method: opts.method ?? 'GET', headers: opts.headers ?? {}, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body }));
    });
    req.on('error', reject);
    req.setTimeout(10000, () => req.destroy(new Error(`no answer to ${urlPath}`)));
    req.end();
  });
}

async function connectionOf(p: Proxy, c: Client): Promise<number> {
  const m = await waitLog(p.stderr, new RegExp(`^connection (\\d+): client ${re(clientText(c))} on `));
  return Number(m[1]);
}

async function workload(name: string): Promise<{ conf: string; port: number; groupPort: number; metricsPort: number; up: number; dead: number; deadPort: number }> {
  const up = await echoServer();
  const [port, groupPort, dead, metricsPort, deadPort] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
  const conf = path.join(tmp.path, `${name}.conf`);
  fs.writeFileSync(
    conf,
    [`metrics 127.0.0.1:${metricsPort}`, `port ${port}`, '  interface 127.0.0.1', `    server 127.0.0.1:${up.port}`, '    deny 127.0.0.9',
      `port ${groupPort}`, '  interface 127.0.0.1', `    server 127.0.0.1:${dead} 127.0.0.1:${up.port}`,
      `port ${deadPort}`, '  interface 127.0.0.1', `    server 127.0.0.1:${dead}`, ''].join('\n'),
    { mode: 0o600 },
  );
  return { conf, port, groupPort, metricsPort, up: up.port, dead, deadPort };
}

describe.each(ENGINES)('%s engine', (engine) => {
  it('/metrics, parsed by prometheus_client, has the values of a known workload', async () => {
    const w = await workload(`known-${engine}`);
    await withProxy(['-f', w.conf, '-S', 'none'], { env: { TCPPROXY_ENGINE: engine }, listeners: 3 }, async (p) => {
      await waitLog(p.stderr, /^metrics on 127\.0\.0\.1:\d+ ready, pid \d+$/);
      const refused = await Client.connect('127.0.0.1', w.port, { localAddress: '127.0.0.9' });
      await refused.waitClosed(5000);
      for (const [port, n] of [[w.port, 1000], [w.groupPort, 10]] as const) {
        const c = await Client.connect('127.0.0.1', port);
        const data = payload(n, `metrics-${engine}-${port}`);
        expect(await echoThrough(c, data)).toEqual(digestOf(data));
        await waitLog(p.stderr, new RegExp(`^connection ${await connectionOf(p, c)}: end: `));
      }
      // A session whose only server is down: counted and timed like the others on both engines.
      const lost = await Client.connect('127.0.0.1', w.deadPort);
      await lost.waitClosed(10000);
      await waitLog(p.stderr, new RegExp(`^connection ${await connectionOf(p, lost)}: server 127\\.0\\.0\\.1:${w.dead}: connect ECONNREFUSED `));
      const dsv = { port: String(w.deadPort), interface: '127.0.0.1' };
      await until(async () => (await parse((await get(w.metricsPort, '/metrics')).body)).some((x) => x[2] === 'tcpproxy_session_duration_seconds_count' && x[3]['port'] === dsv.port && x[4] === 1), 'the failed session in the histogram', 10000);
      const r = await get(w.metricsPort, '/metrics');
      expect({ status: r.status, type: r.type }).toEqual({ status: 200, type: 'text/plain; version=0.0.4; charset=utf-8' });
      const samples = await parse(r.body);
      const value = (name: string, labels: Record<string, string>): number | undefined =>
        samples.find((s) => s[2] === name && Object.entries(labels).every(([k, v]) => s[3][k] === v) && Object.keys(s[3]).length === Object.keys(labels).length)?.[4];
      const svc = { port: String(w.port), interface: '127.0.0.1' };
      const grp = { port: String(w.groupPort), interface: '127.0.0.1' };
      expect({
        build: value('tcpproxy_build_info', { version: VERSION, node: process.version }),
        sessions: [value('tcpproxy_sessions_total', svc), value('tcpproxy_sessions_total', grp)],
        live: [value('tcpproxy_sessions_live', svc), value('tcpproxy_sessions_live', grp)],
        refused: ['deny', 'no-allow', 'per-source', 'proxy'].map((reason) => value('tcpproxy_refused_total', { ...svc, reason })),
        bytes: [value('tcpproxy_bytes_total', { ...svc, direction: 'up' }), value('tcpproxy_bytes_total', { ...svc, direction: 'down' }), value('tcpproxy_bytes_total', { ...grp, direction: 'up' })],
        failures: [value('tcpproxy_upstream_connect_failures_total', { ...grp, server: `127.0.0.1:${w.dead}` }), value('tcpproxy_upstream_connect_failures_total', { ...grp, server: `127.0.0.1:${w.up}` })],
        up: [value('tcpproxy_upstream_up', { ...grp, server: `127.0.0.1:${w.dead}` }), value('tcpproxy_upstream_up', { ...grp, server: `127.0.0.1:${w.up}` }), value('tcpproxy_upstream_up', { ...svc, server: `127.0.0.1:${w.up}` })],
        durations: [value('tcpproxy_session_duration_seconds_count', svc), value('tcpproxy_session_duration_seconds_bucket', { ...svc, le: '+Inf' }), value('tcpproxy_session_duration_seconds_bucket', { ...svc, le: '3600' })],
        workers: value('tcpproxy_workers', {}),
        restarts: value('tcpproxy_worker_restarts_total', {}),
      }).toEqual({
        build: 1,
        sessions: [1, 1],
        live: [0, 0],
        refused: [1, 0, 0, 0],
        bytes: [1000, 1000, 10],
        failures: [1, 0],
        up: [0, 1, 1],
        durations: [1, 1, 1],
        workers: 1,
        restarts: 0,
      });
      // Each family has its TYPE: counters, gauges, one histogram.
      const types = new Map(samples.map((s) => [s[0], s[1]]));
      expect(Object.fromEntries(types)).toEqual({
        tcpproxy_build_info: 'gauge',
        tcpproxy_sessions: 'counter',
        tcpproxy_sessions_live: 'gauge',
        tcpproxy_refused: 'counter',
        tcpproxy_bytes: 'counter',
        tcpproxy_upstream_connect_failures: 'counter',
        tcpproxy_upstream_up: 'gauge',
        tcpproxy_session_duration_seconds: 'histogram',
        tcpproxy_workers: 'gauge',
        tcpproxy_worker_restarts: 'counter',
      });
    });
  });
});

describe('the metrics process', () => {
  it('runs as nobody (not the default service uid 65535); answers only GET /metrics; refuses a head over 8 KiB; closes idle connections', async () => {
    const w = await workload('http');
    await withProxy(['-f', w.conf, '-S', 'none'], { listeners: 3 }, async (p) => {
      const m = await waitLog(p.stderr, /^metrics on 127\.0\.0\.1:\d+ ready, pid (\d+)$/);
      const status = fs.readFileSync(`/proc/${m[1]}/status`, 'latin1');
      expect([/^Uid:\s+(.*)$/m.exec(status)?.[1], /^Gid:\s+(.*)$/m.exec(status)?.[1], /^Groups:[ \t]*(.*)$/m.exec(status)?.[1]]).toEqual([
        '65534\t65534\t65534\t65534',
        '65534\t65534\t65534\t65534',
        '',
      ]);
      expect((await get(w.metricsPort, '/')).status).toBe(404);
      expect((await get(w.metricsPort, '/metrics/x')).status).toBe(404);
      expect((await get(w.metricsPort, '/metrics', { method: 'POST' })).status).toBe(405);
      expect((await get(w.metricsPort, '/metrics?x=1')).status).toBe(200);
      expect((await get(w.metricsPort, '/metrics', { headers: { 'X-Big': 'a'.repeat(9000) } })).status).toBe(431);
      // 60 scrapes at once: all answered, by the same process (they share one question to the master).
      const all = await Promise.all(Array.from({ length: 60 }, () => get(w.metricsPort, '/metrics')));
      expect(all.map((r) => r.status)).toEqual(Array.from({ length: 60 }, () => 200));
      expect(p.stderr()).not.toMatch(/metrics on .*: .*killing it/);
      expect(alive(Number(m[1]))).toBe(true);
      // A connection that sends nothing is closed after 10 s.
      const idle = net.connect(w.metricsPort, '127.0.0.1');
      let closedAt: number | null = null;
      idle.on('error', () => undefined);
      idle.on('close', () => (closedAt = Date.now()));
      await new Promise<void>((resolve) => idle.once('connect', () => resolve()));
      const since = Date.now();
      await until(() => closedAt !== null, 'the metrics process to close an idle connection', 16000);
      expect((closedAt ?? 0) - since).toBeGreaterThanOrEqual(9000);
    });
  }, 40000);

  it('a metrics port that is a service\'s fails the start; a bad metrics line is an error at its line', async () => {
    const w = await workload('clash');
    const clash = path.join(tmp.path, 'clash-metrics.conf');
    fs.writeFileSync(clash, fs.readFileSync(w.conf, 'utf8').replace(`metrics 127.0.0.1:${w.metricsPort}`, `metrics ${w.port}`), { mode: 0o600 });
    const r = await runCli(['-D', '-S', 'none', '-f', clash]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`metrics *:${w.port}: the port of service 127.0.0.1:${w.port}\n`);
    const bad = path.join(tmp.path, 'bad-metrics.conf');
    fs.writeFileSync(bad, `port 9\n  server 127.0.0.1:9\nmetrics 127.0.0.1:junk\n`, { mode: 0o600 });
    const z = await runCli(['-zz', '-f', bad]);
    expect(z.code).toBe(2);
    expect(z.stderr).toMatch(new RegExp(`^tcpproxy:${re(bad)}:3: metrics: `, 'm'));
  });
});
