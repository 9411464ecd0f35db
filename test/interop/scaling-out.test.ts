/**
 * The README's "Scaling out" examples (examples/scaling-out/), run as
 * written with only their addresses and ports replaced by loopback ones:
 *
 * - a client (127.0.0.7) → HAProxy (haproxy-front.cfg, send-proxy-v2,
 *   roundrobin) → two tcpproxy instances (tcpproxy-behind-balancer.conf:
 *   accept-proxy from the balancer only, balance source, send-proxy v2) →
 *   two application servers that read the header: each answer names the
 *   client HAProxy saw, both instances take turns, and one client address
 *   always reaches the same application server;
 * - a client → one tcpproxy (tcpproxy-front.conf: roundrobin, send-proxy v2,
 *   source) → three nginx stream servers (nginx-backend.conf, listen
 *   proxy_protocol): 6 connections, 2 to each server, each told the client
 *   and seeing tcpproxy connect from the source address.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Client } from '../helpers/client';
import { assertBuilt, launch, re, ROOT, waitLog } from '../helpers/daemon';
import { explained, startTcpproxy } from '../helpers/interop';
import { HAPROXY, NGINX, requirePeers, waitPeerListening, type Bind } from '../helpers/peers';
import { freePort } from '../helpers/ports';
import { headerServer, replyAddresses } from '../helpers/proxy-header';
import { requireRoot } from '../helpers/root';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';
import { until } from '../helpers/until';

beforeAll(() => {
  assertBuilt();
  requireRoot();
  requirePeers();
});
const tmp = useTempDir('tcpproxy-interop-scaling-');
cleanUpAfterEach();

const CLIENT = '127.0.0.7';
const EXAMPLES = path.join(ROOT, 'examples', 'scaling-out');

/** The example `name`, each `[from, to]` replaced (every occurrence; each must occur). */
function example(name: string, replace: ReadonlyArray<readonly [string | RegExp, string]>): string {
  let text = fs.readFileSync(path.join(EXAMPLES, name), 'utf8');
  for (const [from, to] of replace) {
    const before = text;
    text = typeof from === 'string' ? text.split(from).join(to) : text.replace(from, to);
    if (text === before) throw new Error(`${name}: ${String(from)} does not occur`);
  }
  return text;
}

/** One connection from CLIENT: sends nothing, reads the answer until EOF. */
async function ask(port: number): Promise<{ text: string; client: Client }> {
  const c = await Client.connect('127.0.0.1', port, { localAddress: CLIENT });
  await until(() => c.ended || c.closed, () => `an answer and EOF (have ${JSON.stringify(c.data().toString())})`, 10000);
  c.socket.end();
  return { text: c.data().toString(), client: c };
}

describe('examples/scaling-out', () => {
  it('HAProxy (send-proxy-v2) → two tcpproxy (accept-proxy, balance source, send-proxy v2) → application servers that read the header', async () => {
    const apps = [await headerServer({ reply: replyAddresses }), await headerServer({ reply: replyAddresses })];
    const [p1, p2, front] = [await freePort(), await freePort(), await freePort()];
    const behind = (port: number): string[] =>
      example('tcpproxy-behind-balancer.conf', [
        ['port 8443', `port ${port}`],
        // HAProxy connects to a loopback server from 127.0.0.1.
        ['accept-proxy 10.1.0.10', 'accept-proxy 127.0.0.1'],
        ['10.1.0.31:8443', `127.0.0.1:${apps[0]?.port ?? 0}`],
        ['10.1.0.32:8443', `127.0.0.1:${apps[1]?.port ?? 0}`],
      ]).split('\n');
    const tp1 = await startTcpproxy(tmp, behind(p1), 'splice');
    const tp2 = await startTcpproxy(tmp, behind(p2), 'splice');
    const home = fs.mkdtempSync(path.join(tmp.path, 'haproxy-'));
    const conf = path.join(home, 'haproxy.cfg');
    fs.writeFileSync(
      conf,
      example('haproxy-front.cfg', [
        ['bind :8443', `bind 127.0.0.1:${front}`],
        ['10.1.0.21:8443', `127.0.0.1:${p1}`],
        ['10.1.0.22:8443', `127.0.0.1:${p2}`],
      ]),
      { mode: 0o600 },
    );
    const haproxy = launch([HAPROXY, '-db', '-f', conf], { detached: true });
    await explained(() => [tp1, tp2, haproxy], async () => {
      await waitPeerListening(haproxy, [{ host: '127.0.0.1', port: front }]);
      const answers: string[] = [];
      for (let i = 0; i < 4; i++) {
        const { text, client } = await ask(front);
        answers.push(text);
        // Each answer: the client as HAProxy saw it, and the tcpproxy address the connection arrived on.
        expect(text).toMatch(new RegExp(`^${re(`${CLIENT}:${client.local.port}`)} 127\\.0\\.0\\.1:(${p1}|${p2})\\n$`));
      }
      // HAProxy's roundrobin: both tcpproxy instances, in turn.
      const instances = answers.map((a) => /:(\d+)\n$/.exec(a)?.[1]);
      expect(new Set(instances).size).toBe(2);
      expect(instances[0]).not.toBe(instances[1]);
      // balance source: one client address, one application server, from either instance.
      const served = apps.map((a) => a.connections.length);
      expect(served.sort()).toEqual([0, 4]);
      // tcpproxy's own log names the client and the balancer it came through.
      for (const tp of [tp1, tp2]) await waitLog(tp.stderr, new RegExp(`^connection \\d+: client ${re(CLIENT)}:\\d+ via 127\\.0\\.0\\.1:\\d+ on 127\\.0\\.0\\.1:\\d+: server `));
    });
  });

  it('one tcpproxy (roundrobin, send-proxy v2, source) → three nginx servers reading the header', async () => {
    const hosts = ['127.0.0.41', '127.0.0.42', '127.0.0.43'];
    const binds: Bind[] = [];
    for (const host of hosts) binds.push({ host, port: await freePort(host) });
    const prefix = fs.mkdtempSync(path.join(tmp.path, 'nginx-'));
    const conf = path.join(prefix, 'nginx.conf');
    fs.writeFileSync(
      conf,
      example('nginx-backend.conf', [['listen 443 proxy_protocol;', binds.map((b) => `listen ${b.host}:${b.port} proxy_protocol;`).join('\n        ')]]),
      { mode: 0o600 },
    );
    const nginx = launch([NGINX, '-e', 'stderr', '-p', `${prefix}/`, '-c', conf, '-g', `daemon off; pid ${prefix}/nginx.pid;`], { detached: true });
    const port = await freePort();
    const tp = await startTcpproxy(
      tmp,
      example('tcpproxy-front.conf', [
        ['port 443', `port ${port}`],
        ...binds.map((b, i) => [`10.1.0.4${i + 1}:443`, `${b.host}:${b.port}`] as const),
        ['source 10.1.0.40', 'source 127.0.0.9'],
      ]).split('\n'),
      'splice',
    );
    await explained(() => [tp, nginx], async () => {
      await waitPeerListening(nginx, binds);
      const seen: string[] = [];
      for (let i = 0; i < 6; i++) {
        const { text, client } = await ask(port);
        const m = new RegExp(`^client ${re(`${CLIENT}:${client.local.port}`)}, server (127\\.0\\.0\\.4[123]), from 127\\.0\\.0\\.9\\n$`).exec(text);
        expect({ text, matched: m !== null }).toEqual({ text, matched: true });
        seen.push(m?.[1] ?? '');
      }
      expect(seen).toEqual([...hosts, ...hosts]);
    });
  });
});
