/**
 * inetd start-up: what one connection costs when inetd starts tcpproxy for
 * it (`nowait`), against the floor of any Node program, `node -e 0`, started
 * the same way. A python3 driver (pinned to the proxy CPU, like the proxies)
 * accepts a connection, forks and execs the command with the accepted socket
 * on fds 0, 1 and 2, sends 64 bytes and half-closes, reads until EOF and
 * reaps the child with wait4(2): wall time from fork to reap, CPU time
 * (user + system) from the child's rusage. tcpproxy forwards to the bench's
 * echo upstream, so its 64 bytes come back; `node -e 0` reads nothing. The
 * two commands alternate, sample by sample.
 */
import { spawn } from 'node:child_process';

const DRIVER = `
import json, os, socket, sys, time
cmds = json.loads(sys.argv[1]); samples = int(sys.argv[2])
ls = socket.socket(); ls.bind(('127.0.0.1', 0)); ls.listen(16)
port = ls.getsockname()[1]
out = [[] for _ in cmds]
for _ in range(samples):
    for i, argv in enumerate(cmds):
        c = socket.create_connection(('127.0.0.1', port))
        s, _ = ls.accept()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            for fd in (0, 1, 2):
                os.dup2(s.fileno(), fd)
            os.closerange(3, 65536)
            os.execv(argv[0], argv)
        s.close()
        got = 0
        c.settimeout(20)
        try:
            c.sendall(b'x' * 64)
            c.shutdown(socket.SHUT_WR)
            while True:
                d = c.recv(4096)
                if not d:
                    break
                got += len(d)
        except (ConnectionResetError, socket.timeout):
            pass
        c.close()
        _, status, ru = os.wait4(pid, 0)
        out[i].append({'wallMs': (time.perf_counter() - t0) * 1000, 'cpuMs': (ru.ru_utime + ru.ru_stime) * 1000, 'bytes': got, 'status': status})
print(json.dumps(out))
`;

export interface StartupSample {
  readonly wallMs: number;
  readonly cpuMs: number;
  /** Bytes the client read back. */
  readonly bytes: number;
  /** The wait status. */
  readonly status: number;
}

export interface StartupRound {
  readonly node: StartupSample[];
  readonly tcpproxy: StartupSample[];
}

/** `samples` of each command, alternating, driven from `cpu`. */
export function measureStartup(opts: { tcpproxy: string; echoPort: number; cpu: number; samples: number }): Promise<StartupRound> {
  const cmds = [
    [process.execPath, '-e', '0'],
    [process.execPath, opts.tcpproxy, `127.0.0.1:${opts.echoPort}`],
  ];
  return new Promise((resolve, reject) => {
    const child = spawn('taskset', ['-c', String(opts.cpu), 'python3', '-c', DRIVER, JSON.stringify(cmds), String(opts.samples)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000 + opts.samples * 2000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) {
        reject(new Error(`start-up driver: exit ${code ?? signal}: ${err.trim()}`));
        return;
      }
      const [node, tcpproxy] = JSON.parse(out) as [StartupSample[], StartupSample[]];
      resolve({ node, tcpproxy });
    });
  });
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? (s[m] ?? NaN) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

export const STARTUP_TARGET = 1.25;

export interface StartupSummary {
  readonly samples: number;
  readonly node: { wallMs: number; cpuMs: number };
  readonly tcpproxy: { wallMs: number; cpuMs: number };
  readonly ratio: { wall: number; cpu: number };
  readonly met: boolean;
  /** tcpproxy samples that did not echo the 64 bytes or did not exit 0. */
  readonly failed: number;
}

/** Medians over every sample of every round; the ratios are of those medians. */
export function summarizeStartup(rounds: readonly StartupRound[]): StartupSummary {
  const node = rounds.flatMap((r) => r.node);
  const tp = rounds.flatMap((r) => r.tcpproxy);
  const n = { wallMs: median(node.map((s) => s.wallMs)), cpuMs: median(node.map((s) => s.cpuMs)) };
  const t = { wallMs: median(tp.map((s) => s.wallMs)), cpuMs: median(tp.map((s) => s.cpuMs)) };
  const ratio = { wall: t.wallMs / n.wallMs, cpu: t.cpuMs / n.cpuMs };
  return {
    samples: tp.length,
    node: n,
    tcpproxy: t,
    ratio,
    met: ratio.wall <= STARTUP_TARGET && ratio.cpu <= STARTUP_TARGET,
    failed: tp.filter((s) => s.bytes !== 64 || s.status !== 0).length,
  };
}

export function startupLines(s: StartupSummary): string[] {
  const ms = (x: number): string => `${x.toFixed(1)} ms`;
  return [
    `inetd start-up, one forwarded 64 B connection per process (as inetd \`nowait\` starts it), medians of ${s.samples} samples each, alternating:`,
    '',
    '| command | wall | CPU | ×node |',
    '|---|---|---|---|',
    `| \`node -e 0\` | ${ms(s.node.wallMs)} | ${ms(s.node.cpuMs)} | 1 |`,
    `| tcpproxy (inetd mode) | ${ms(s.tcpproxy.wallMs)} | ${ms(s.tcpproxy.cpuMs)} | wall ${s.ratio.wall.toFixed(2)}×, CPU ${s.ratio.cpu.toFixed(2)}× |`,
    '',
    `Target: at most ${STARTUP_TARGET}× \`node -e 0\` in wall and CPU time: ${s.met ? 'met' : 'missed'}.` +
      (s.failed > 0 ? ` ${s.failed} tcpproxy sample(s) did not echo 64 B and exit 0.` : ''),
    '',
  ];
}
