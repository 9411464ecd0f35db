// The reverse-lookup starvation attack, run inside a private network and
// mount namespace that lookups.test.ts sets up (`lo` up, its own
// /etc/resolv.conf naming 127.0.0.53 and its own /etc/hosts mounted over
// the system's; 127.0.0.1 is not in that hosts file, so every client's name
// is asked of DNS). Here: a DNS server on 127.0.0.53 that reads every query
// and never answers, an upstream on 127.0.0.2 known by the host name
// upstream.tcpproxy.test, and `tcpproxy -D -f CONFIG` with two services of
// the same worker: an exec service (/usr/bin/env, which needs
// PROXY_CLIENTNAME) and a forwarding service to the upstream by its name
// (resolved with getaddrinfo on the worker's libuv threadpool). 50 clients
// of the exec service connect at once; once the silent server has their
// questions, one client of the forwarding service measures how long the
// upstream's greeting takes. Prints one line of JSON and exits 0; every
// step is bounded, and tcpproxy's process group is killed at the end.
//
//   node lookups-scenario.cjs CLI DIR
'use strict';
const { spawn } = require('node:child_process');
const dgram = require('node:dgram');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const [cli, dir] = process.argv.slice(2);
const CLIENTS = 50;
const GREETING = 'upstream here\n';

const { setTimeout: delay } = require('node:timers/promises');

/** Polls `cond` every 10 ms until it holds or `ms` pass; true if it held. */
async function until(cond, ms) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() >= deadline) return false;
    await delay(10);
  }
  return true;
}

function freePort(host) {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A client: what it received, when it ended (ms after `t0`). */
function client(port, t0) {
  const c = { data: '', endMs: null, error: null, firstMs: null };
  const sock = net.connect({ host: '127.0.0.1', port });
  sock.on('data', (b) => {
    if (c.firstMs === null) c.firstMs = Date.now() - t0;
    c.data += b.toString('latin1');
  });
  sock.on('error', (e) => (c.error = e.code || e.message));
  sock.on('close', () => (c.endMs = Date.now() - t0));
  c.sock = sock;
  return c;
}

async function main() {
  const queries = [];
  const silent = dgram.createSocket('udp4');
  silent.on('message', (msg) => queries.push(msg.length));
  await new Promise((resolve, reject) => {
    silent.once('error', reject);
    silent.bind(53, '127.0.0.53', resolve);
  });

  const upstream = net.createServer((s) => {
    s.on('error', () => {});
    s.end(GREETING);
  });
  await new Promise((resolve) => upstream.listen(0, '127.0.0.2', resolve));
  const upPort = upstream.address().port;

  const execPort = await freePort('127.0.0.1');
  let fwdPort = await freePort('127.0.0.1');
  while (fwdPort === execPort) fwdPort = await freePort('127.0.0.1');
  const conf = path.join(dir, 'lookups.conf');
  fs.writeFileSync(
    conf,
    [
      `port ${execPort}`,
      '  interface 127.0.0.1',
      '    exec /usr/bin/env',
      `port ${fwdPort}`,
      '  interface 127.0.0.1',
      `    server upstream.tcpproxy.test:${upPort}`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  );

  let stderr = '';
  const proxy = spawn(process.execPath, [cli, '-D', '-f', conf], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  proxy.stderr.setEncoding('utf8').on('data', (s) => (stderr += s));
  const result = { queries: 0, upstream: null, exec: null, stderr: '' };
  try {
    const ready = await until(() => (stderr.match(/^\S+Z tcpproxy: listening on /gm) || []).length >= 2 && /worker .* ready/.test(stderr), 10000);
    if (!ready) throw new Error('tcpproxy did not start');

    const t0 = Date.now();
    const execClients = [];
    for (let i = 0; i < CLIENTS; i++) execClients.push(client(execPort, t0));
    // The attack is under way once the silent server holds every client's
    // question (getnameinfo, on the threadpool, asked at most 4 at a time).
    await until(() => queries.length >= CLIENTS, 3000);
    result.queriesBefore = queries.length;

    const t1 = Date.now();
    const fwd = client(fwdPort, t1);
    await until(() => fwd.data === GREETING || fwd.endMs !== null, 5000);
    result.upstream = { ms: fwd.firstMs, data: fwd.data, error: fwd.error };
    fwd.sock.destroy();

    await until(() => execClients.every((c) => c.endMs !== null), 15000);
    const names = {};
    for (const c of execClients) {
      const m = /^PROXY_CLIENTNAME=(.*)$/m.exec(c.data);
      const name = m ? m[1] : c.endMs === null ? '(open)' : '(none)';
      names[name] = (names[name] || 0) + 1;
    }
    result.exec = {
      closed: execClients.filter((c) => c.endMs !== null).length,
      names,
      maxEndMs: Math.max(...execClients.map((c) => c.endMs ?? Infinity)),
    };
    for (const c of execClients) c.sock.destroy();
    result.queries = queries.length;
    // A handler's end is logged once it is reaped, a moment after its client saw the close.
    await until(() => (stderr.match(/: end: handler /g) || []).length >= CLIENTS, 5000);
  } catch (err) {
    result.failure = err.message;
  } finally {
    try {
      process.kill(-proxy.pid, 'SIGKILL');
    } catch {
      // gone
    }
    await until(() => proxy.exitCode !== null || proxy.signalCode !== null, 5000);
    silent.close();
    upstream.close();
  }
  result.stderr = stderr;
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stdout.write(JSON.stringify({ failure: err.stack || String(err) }) + '\n');
    process.exit(1);
  },
);
