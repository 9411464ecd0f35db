/**
 * A worker: the process of one service identity (uid, gid). Forked by the
 * master with the listening sockets of its services as fds 4, 5, …; on its
 * init message it drops to the service ids and checks that the drop took
 * (privilege.ts), marks every inherited fd close-on-exec, and only then
 * accepts. A plain forwarding service is served by the native fast path
 * (accept, connect, splice in C++: forward/fast.ts decides which); every
 * other connection runs an ACP, a handler, or an upstream connection and
 * forwarding in the session code.
 */
import * as net from 'node:net';
import { preloadEngines, selectEngine } from '../forward/engine';
import { socketFd } from '../forward/socket';
import type { Engine, HeldClient } from '../forward/types';
import { isTrustedSource, readProxyHeader, UNTRUSTED } from '../session/proxy';
import { preloadAll, runSession, type SessionPhase } from '../session/session';
import { downServers } from '../session/upstream';
import type { Forwarding } from '../forward/types';
import { errorText } from '../sys/errors';
import { createLogger, type Logger } from '../sys/log';
import { native, REFUSAL, type Refusal } from '../sys/native';
import { formatHostPort, plainAddress } from '../table/address';
import { listenKey, maxconnOf, type Service } from '../table/service';
import { fastService } from '../forward/fast';
import { checkAccess } from '../table/access';
import { GRACE_MS } from './grace';
import { currentIds, dropPrivileges, nonDumpable } from './privilege';
import {
  HEARTBEAT_MS,
  STATUS_PART_ITEMS,
  type IdBlock,
  type InitMessage,
  type ServiceReport,
  type SessionReport,
  type StatusRequest,
  type ToMaster,
  type ToWorker,
} from './protocol';

/**
 * Connection numbers from the master's blocks, for the session code one at
 * a time and for the native fast path in ranges; asks for the next block
 * when half of what it was given is used.
 */
class Numbers {
  private blocks: { first: number; count: number }[] = [];
  private left = 0;
  private asked = false;
  private readonly ask: () => void;
  private readonly low: number;

  constructor(first: IdBlock, ask: () => void) {
    this.ask = ask;
    this.low = Math.floor(first.count / 2);
    this.add(first);
  }

  add(b: IdBlock): void {
    this.asked = false;
    this.blocks.push({ ...b });
    this.left += b.count;
  }

  /** Up to `n` consecutive numbers (fewer at the end of a block). */
  takeRange(n: number): IdBlock {
    const b = this.blocks[0];
    // Cannot happen unless half a block went by before the master answered:
    // better a worker restart than a number given twice.
    if (b === undefined) throw new Error('out of connection numbers');
    const count = Math.min(n, b.count);
    const out = { first: b.first, count };
    b.first += count;
    b.count -= count;
    if (b.count === 0) this.blocks.shift();
    this.left -= count;
    if (!this.asked && this.left < this.low) {
      this.asked = true;
      this.ask();
    }
    return out;
  }

  take(): number {
    return this.takeRange(1).first;
  }
}

/** Connection numbers the fast path gets at a time, and the level below which it gets more. */
const FAST_IDS = 4096;
const FAST_IDS_LOW = 2048;

/** A listener waiting for a place under maxconn rechecks this often (sessions of other workers; this one's wake it at once). */
const MAXCONN_RECHECK_MS = 10;
const SUMMARY_MS = 1000;
/** Accepting this long without a wait ends a wait episode (the session code's listeners). */
const QUIET_MS = 250;

/** A client of the session code and what it holds of the shared limits. */
interface Admitted {
  readonly sock: net.Socket;
  /** The client: the peer, or the source a PROXY header named. */
  readonly client: string;
  readonly clientPort: number;
  /** The peer that sent the PROXY header, when it named the client. */
  readonly via: { readonly address: string; readonly port: number } | null;
  entered: boolean;
  source: boolean;
}

/** A session of the session code, as the status socket lists it. */
interface Watched {
  readonly id: number;
  readonly client: string;
  readonly key: string;
  readonly started: number;
  phase: SessionPhase;
  forwarding: Forwarding | null;
}

/** One listening socket of this worker and who accepts on it. */
interface Accepting {
  readonly key: string;
  /** The service's place in the shared limits. */
  readonly slot: number;
  /** The fd the current owner has (a dup of the last one when the owner changes). */
  fd: number;
  owner: { readonly kind: 'fast'; readonly handle: number } | { readonly kind: 'js'; readonly server: net.Server } | null;
  /**
   * The session code's limits (the fast path keeps its own in native): as
   * soon as the next client would find no maxconn place or no rate token,
   * the net.Server is closed (its fd, a dup, kept), so that client waits in
   * the backlog, not accepted. A net.Server accepts before it can ask, so a
   * client it took when another worker had just filled the service (or
   * whose PROXY header was being read meanwhile) waits here, unread.
   */
  waiting: { readonly why: 'maxconn' | 'rate'; readonly limit: number; timer: NodeJS.Timeout | null } | null;
  /**
   * The limit the last wait line named, until the listener has accepted for
   * a quiet while without waiting again (a net.Server cannot tell that its
   * backlog is empty): then the "accepting again" line.
   */
  episode: { readonly why: 'maxconn' | 'rate'; readonly limit: number; quiet: NodeJS.Timeout | null } | null;
  readonly held: Admitted[];
  /** Runs while refusals over the shared budget (counted in native, for all workers) wait for their summary line. */
  summary: NodeJS.Timeout | null;
}

/** Runs the worker in this process (exported for tests: a stand-in worker module runs the real one from there). */
export function runWorker(): void {
  let init: InitMessage | null = null;
  let log: Logger | null = null;
  let engine: Engine | null = null;
  let numbers: Numbers | null = null;
  /** Services by listen key: each listener serves exactly one. */
  let byKey = new Map<string, Service>();
  const accepting: Accepting[] = [];
  let fastLive = 0;

  const send = (m: ToMaster): void => {
    if (process.connected) process.send?.(m);
  };
  // The master kills a worker it stops hearing from (supervisor.ts SILENT_KILL_MS).
  setInterval(() => send({ type: 'alive' }), HEARTBEAT_MS).unref();

  const live = new Set<AbortController>();
  /** The session code's live sessions, by connection number. */
  const watched = new Map<number, Watched>();
  let draining = false;
  let deadline: NodeJS.Timeout | null = null;
  const exitWhenIdle = (): void => {
    if (!draining || live.size > 0 || fastLive > 0) return;
    // Lines of fast-path sessions that ended in this loop turn are not in a batch yet.
    log?.many(native().serveTake());
    process.exit(0);
  };
  const drain = (graceMs: number | null): void => {
    if (!draining) {
      draining = true;
      for (const a of accepting) release(a);
      // The fast path's count as of now: its next batch brings the later ones.
      if (init) fastLive = native().serveStats().live;
    }
    if (graceMs !== null && deadline === null) {
      deadline = setTimeout(() => {
        for (const c of live) c.abort();
        native().serveAbortAll();
      }, graceMs);
      deadline.unref();
    }
    exitWhenIdle();
  };

  const setServices = (services: readonly Service[]): void => {
    byKey = new Map(services.map((s) => [listenKey(s), s] as const).reverse());
  };

  /** Gives back what a session of the session code held; a listener waiting for maxconn retries. */
  const leave = (a: Accepting, h: Admitted): void => {
    if (h.entered) native().limitLeave(a.slot);
    if (h.source) native().sourceLeave(a.slot, h.client);
    h.entered = h.source = false;
    if (a.waiting?.why === 'maxconn') retryNow(a);
  };

  const refuse = (a: Accepting, sock: net.Socket, rule: string, why: Refusal, client?: { address: string; port: number }): void => {
    const who = client ?? { address: plainAddress(sock.remoteAddress), port: sock.remotePort ?? 0 };
    sock.destroy();
    native().refusalCount(a.slot, why);
    if (native().refusalLogAllowed(a.slot)) {
      log?.warn(`service ${a.key}: refused ${formatHostPort(who.address, who.port)}: ${rule}`);
      return;
    }
    // Over the budget: counted in the shared slot. Every worker that counts
    // some asks once a second; the first in a second takes the whole count
    // (refusalSummary), so the service has one summary line a second.
    a.summary ??= setInterval(() => {
      const n = native().refusalSummary(a.slot, false);
      summarize(a, n);
      if (n >= 0 && a.summary) {
        clearInterval(a.summary);
        a.summary = null;
      }
    }, SUMMARY_MS);
  };

  const summarize = (a: Accepting, n: number): void => {
    if (n > 0) log?.warn(`service ${a.key}: ${n} more refused`);
  };

  /**
   * A client of a net.Server. accept-proxy: a trusted peer's PROXY header
   * first (the client it names is the one judged); then the access lists and
   * per-source (refused at once), then maxconn and rate.
   */
  const admit = (a: Accepting, sock: net.Socket): void => {
    const service = byKey.get(a.key);
    if (!service || draining) {
      sock.destroy();
      return;
    }
    const peer = { address: plainAddress(sock.remoteAddress), port: sock.remotePort ?? 0 };
    const trusted = service.proxy.acceptProxy;
    if (trusted === null) return admitClient(a, sock, peer, null);
    if (!isTrustedSource(trusted, peer.address)) return refuse(a, sock, UNTRUSTED, REFUSAL.proxy);
    let fd: number;
    try {
      fd = socketFd(sock);
    } catch (err) {
      log?.error(`service ${a.key}: client ${formatHostPort(peer.address, peer.port)}: ${errorText(err)}`);
      sock.destroy();
      return;
    }
    void readProxyHeader(fd).then((r) => {
      if (sock.destroyed) return;
      if (!r.ok) return refuse(a, sock, r.reason, REFUSAL.proxy);
      if (r.client === null) admitClient(a, sock, peer, null);
      else admitClient(a, sock, r.client, peer);
    });
  };

  const admitClient = (
    a: Accepting,
    sock: net.Socket,
    who: { readonly address: string; readonly port: number },
    via: Admitted['via'],
  ): void => {
    const service = byKey.get(a.key);
    if (!service || draining) {
      sock.destroy();
      return;
    }
    const client = who.address;
    const { access } = service;
    const rule = checkAccess(access, client);
    if (rule !== null) return refuse(a, sock, rule, rule.startsWith('deny ') ? REFUSAL.deny : REFUSAL.noAllow, who);
    const h: Admitted = { sock, client, clientPort: who.port, via, entered: false, source: false };
    if (access.perSource !== null) {
      if (!native().sourceEnter(a.slot, client, access.perSource)) {
        return refuse(a, sock, `per-source ${access.perSource}`, REFUSAL.perSource, who);
      }
      h.source = true;
    }
    if (a.waiting !== null) {
      a.held.push(h);
      return;
    }
    proceed(a, h);
  };

  /** maxconn, then rate; false: the client waits (held) and the listener stops accepting. */
  const proceed = (a: Accepting, h: Admitted): boolean => {
    const service = byKey.get(a.key);
    if (!service || draining || h.sock.destroyed) {
      leave(a, h);
      h.sock.destroy();
      return true;
    }
    const { rate } = service.access;
    const maxconn = maxconnOf(service);
    if (!h.entered) {
      if (!native().limitEnter(a.slot, maxconn ?? 0)) {
        a.held.unshift(h);
        wait(a, 'maxconn', maxconn ?? 0, MAXCONN_RECHECK_MS);
        return false;
      }
      h.entered = true;
    }
    if (rate !== null) {
      const ms = native().rateTake(a.slot, rate);
      if (ms > 0) {
        a.held.unshift(h);
        wait(a, 'rate', rate, ms);
        return false;
      }
    }
    serve(a, h);
    // The next client would have to wait: stop accepting now, before the
    // net.Server takes it, so it waits in the listen queue. (In the net.Server's
    // connection callback, this closes the server before libuv's next accept.)
    if (a.waiting === null) waitIfFull(a, service);
    return true;
  };

  /** What the next client would wait for: a maxconn place (the service's live sessions in all workers) or a rate token. */
  const fullFor = (a: Accepting, service: Service): { why: 'maxconn' | 'rate'; limit: number; ms: number } | null => {
    const maxconn = maxconnOf(service);
    if (maxconn !== null && native().limitStats(a.slot).live >= maxconn) return { why: 'maxconn', limit: maxconn, ms: MAXCONN_RECHECK_MS };
    const { rate } = service.access;
    const ms = rate === null ? 0 : native().ratePeek(a.slot, rate);
    return rate !== null && ms > 0 ? { why: 'rate', limit: rate, ms } : null;
  };

  /** Stops accepting (the wait and its recheck) when the next client would have to wait; false when it would not. */
  const waitIfFull = (a: Accepting, service: Service): boolean => {
    const full = fullFor(a, service);
    if (full === null) return false;
    wait(a, full.why, full.limit, full.ms);
    return true;
  };

  const wait = (a: Accepting, why: 'maxconn' | 'rate', limit: number, ms: number): void => {
    if (a.waiting?.why !== why) {
      if (a.waiting?.timer) clearTimeout(a.waiting.timer);
      a.waiting = { why, limit, timer: null };
      stopAccepting(a);
    }
    if (a.episode?.quiet) clearTimeout(a.episode.quiet);
    if (a.episode?.why !== why || a.episode.limit !== limit) {
      a.episode = { why, limit, quiet: null };
      log?.info(`service ${a.key}: ${why} ${limit} reached: new connections wait`);
    }
    const w = a.waiting;
    if (w.timer) clearTimeout(w.timer);
    w.timer = setTimeout(() => {
      w.timer = null;
      retry(a);
    }, ms);
  };

  const retryNow = (a: Accepting): void => {
    const w = a.waiting;
    if (w === null) return;
    if (w.timer) clearTimeout(w.timer);
    w.timer = setTimeout(() => {
      w.timer = null;
      retry(a);
    }, 0);
  };

  /**
   * The held clients in order; when all are served, the listener accepts
   * again, once the next client would not have to wait (a maxconn place is
   * free, a token there): until then it rechecks.
   */
  const retry = (a: Accepting): void => {
    const w = a.waiting;
    if (w === null) return;
    for (let h = a.held.shift(); h !== undefined; h = a.held.shift()) {
      if (!proceed(a, h)) return;
    }
    const service = byKey.get(a.key);
    if (service !== undefined && !draining && waitIfFull(a, service)) return;
    a.waiting = null;
    listenJs(a);
    const ep = a.episode;
    if (ep === null) return;
    // About two token intervals for a rate, so one token's wait is not an episode's end.
    const quietMs = ep.why === 'rate' ? Math.min(2000, Math.max(QUIET_MS, 2000 / ep.limit)) : QUIET_MS;
    ep.quiet = setTimeout(() => {
      if (a.episode !== ep || a.waiting !== null) return;
      a.episode = null;
      log?.info(`service ${a.key}: ${ep.why} ${ep.limit}: accepting again`);
    }, quietMs);
  };

  /** Closes the listener's net.Server (its fd is dup'd first: the socket stays open in this worker too). */
  const stopAccepting = (a: Accepting): void => {
    if (a.owner?.kind !== 'js') return;
    release(a, true);
  };

  /** Drops the clients a listener held (it is closing): they are closed, their places given back. */
  const dropHeld = (a: Accepting): void => {
    for (let h = a.held.shift(); h !== undefined; h = a.held.shift()) {
      leave(a, h);
      h.sock.destroy();
    }
    if (a.waiting?.timer) clearTimeout(a.waiting.timer);
    a.waiting = null;
    if (a.episode?.quiet) clearTimeout(a.episode.quiet);
    a.episode = null;
  };

  const serve = (a: Accepting, h: Admitted): void => {
    const service = byKey.get(a.key);
    const sock = h.sock;
    if (!init || !log || !engine || !numbers || draining || !service) {
      leave(a, h);
      sock.destroy();
      return;
    }
    const id = numbers.take();
    let client: HeldClient;
    try {
      client = engine.hold(sock);
      if (h.via !== null) {
        client = { ...client, endpoints: { ...client.endpoints, clientAddress: h.client, clientPort: h.clientPort, via: h.via } };
      }
    } catch (err) {
      log.error(`connection ${id}: cannot take over the client: ${errorText(err)}`);
      leave(a, h);
      sock.destroy();
      return;
    }
    const ctl = new AbortController();
    live.add(ctl);
    native().statsSession(a.slot);
    const started = Date.now();
    const w: Watched = { id, client: formatHostPort(h.client, h.clientPort), key: a.key, started, phase: 'starting', forwarding: null };
    watched.set(id, w);
    let ended = { bytesUp: 0, bytesDown: 0 };
    void runSession({
      id,
      client,
      service,
      engine,
      log,
      clearEnv: init.clearEnv,
      ids: currentIds(),
      signal: ctl.signal,
      watch: {
        phase: (p, f) => {
          w.phase = p;
          w.forwarding = f ?? null;
        },
        connectFailed: (server) => native().statsConnectFailed(a.slot, server),
      },
    })
      .then((end) => {
        if (end.result !== null) ended = { bytesUp: end.result.bytesUp, bytesDown: end.result.bytesDown };
      })
      // Last resort (runSession never rejects): a failure of one connection ends
      // that session (forwarding reset, handler killed), never the worker. The
      // client is not closed here: the session may have closed or passed it on.
      .catch((err: unknown) => {
        ctl.abort();
        log?.error(`connection ${id}: session failed: ${errorText(err)}`);
      })
      .finally(() => {
        live.delete(ctl);
        watched.delete(id);
        native().statsEnd(a.slot, ended.bytesUp, ended.bytesDown, Date.now() - started);
        leave(a, h);
        exitWhenIdle();
      });
  };

  /** Stops the current owner of a listener; with `keep`, first dups the fd for the next one. */
  const release = (a: Accepting, keep = false): void => {
    if (!keep) {
      dropHeld(a);
      // The refusals still to summarize: now (the workers that count more report those).
      if (a.summary) {
        clearInterval(a.summary);
        a.summary = null;
        summarize(a, native().refusalSummary(a.slot, true));
      }
    }
    const owner = a.owner;
    if (owner === null) return;
    if (keep) a.fd = native().dupCloexec(a.fd);
    if (owner.kind === 'fast') native().serveClose(owner.handle);
    else owner.server.close();
    a.owner = null;
  };

  /**
   * Gives each listener to the native fast path or to a net.Server, by its
   * service (fast.ts decides); a listener whose service changes sides after
   * a reload moves over, the fast path's service is replaced in place.
   */
  const place = (): void => {
    if (!engine || draining) return;
    for (const a of accepting) {
      const service = byKey.get(a.key);
      if (service === undefined) continue;
      const fast = fastService(service, engine.name, currentIds(), a.slot);
      if (fast !== null && a.owner?.kind === 'fast') {
        native().serveUpdate(a.owner.handle, fast);
        continue;
      }
      if (fast === null && (a.owner?.kind === 'js' || a.waiting !== null)) continue;
      release(a, true);
      if (fast !== null) {
        numberFast();
        a.owner = { kind: 'fast', handle: native().serveListen(a.fd, fast) };
        continue;
      }
      listenJs(a);
    }
    // New limits (a SIGHUP) may leave a service of the session code full: it
    // stops accepting now, not after taking one more client it must hold.
    for (const a of accepting) {
      const service = byKey.get(a.key);
      if (service !== undefined && a.owner?.kind === 'js' && a.waiting === null) waitIfFull(a, service);
    }
  };

  /** A net.Server on the listener's fd, for the session code. */
  const listenJs = (a: Accepting): void => {
    if (draining || a.owner !== null) return;
    const key = a.key;
    // The fast path may have left its keepalive options on the socket, which
    // its clients would start with: the session code sets them per client.
    native().setKeepalive(a.fd, false);
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (sock) => admit(a, sock));
    // libuv retries accept errors (EMFILE sheds the oldest pending connection): log, do not die,
    // and at most one line a second (with the count of the others), so a flood cannot flood the log.
    let lastLine = 0;
    let unlogged = 0;
    server.on('error', (err) => {
      const now = Date.now();
      if (now - lastLine < 1000) {
        unlogged++;
        return;
      }
      log?.error(`accept on ${key}: ${errorText(err)}${unlogged > 0 ? ` (and ${unlogged} more since the last line)` : ''}`);
      lastLine = now;
      unlogged = 0;
    });
    server.listen({ fd: a.fd });
    a.owner = { kind: 'js', server };
  };

  const startFast = (l: Logger, ids: Numbers): void => {
    const addon = native();
    addon.serveInit((lines, liveNow, idsLeft) => {
      l.many(lines);
      fastLive = liveNow;
      if (idsLeft < FAST_IDS_LOW) {
        const r = ids.takeRange(FAST_IDS);
        addon.serveIds(r.first, r.count);
      }
      exitWhenIdle();
    });
  };

  /** The fast path's first connection numbers, when it gets its first listener (so a worker without one numbers from its block's start). */
  let fastNumbered = false;
  const numberFast = (): void => {
    if (fastNumbered || !numbers) return;
    fastNumbered = true;
    const r = numbers.takeRange(FAST_IDS);
    native().serveIds(r.first, r.count);
  };

  /**
   * The status socket's question: per service, what its live sessions have
   * moved so far and the servers marked down here; with `sessions`, every
   * live session. Sent in parts (protocol.ts StatusPart).
   */
  const answerStatus = (req: StatusRequest): void => {
    const services = new Map<string, { bytesUp: number; bytesDown: number; down: Set<number> }>();
    const now = Date.now();
    // This worker's listeners only (the table it has names every service of the daemon).
    for (const { key } of accepting) {
      const s = byKey.get(key);
      const down = new Set(s?.target.kind === 'server' ? downServers({ key, servers: s.target.servers }, now) : []);
      services.set(key, { bytesUp: 0, bytesDown: 0, down });
    }
    const sessions: SessionReport[] = [];
    const fast = init !== null && engine?.name === 'splice';
    if (fast) {
      for (const h of native().serveHealth()) for (const d of h.down) services.get(h.service)?.down.add(d);
    }
    const add = (r: SessionReport): void => {
      const s = services.get(r.service);
      if (s !== undefined) {
        s.bytesUp += r.bytesUp ?? 0;
        s.bytesDown += r.bytesDown ?? 0;
      }
      if (req.sessions) sessions.push(r);
    };
    for (const w of watched.values()) {
      const b = w.forwarding?.stats() ?? null;
      const bytes = w.phase === 'forwarding' ? b : null;
      const age = Math.max(0, now - w.started);
      // Before the upstream answers no byte has moved: idle since the accept.
      const early = w.phase === 'starting' || w.phase === 'connecting';
      add({
        id: w.id,
        client: w.client,
        service: w.key,
        phase: w.phase,
        ageMs: age,
        bytesUp: bytes?.bytesUp ?? (early ? 0 : null),
        bytesDown: bytes?.bytesDown ?? (early ? 0 : null),
        idleMs: bytes?.idleMs ?? (early ? age : null),
      });
    }
    if (fast) for (const f of native().serveSessions()) add({ ...f });
    const items: ({ s: ServiceReport } | { x: SessionReport })[] = [
      ...[...services].map(([key, v]) => ({ s: { key, bytesUp: v.bytesUp, bytesDown: v.bytesDown, down: [...v.down].sort((x, y) => x - y) } })),
      ...sessions.map((x) => ({ x })),
    ];
    for (let i = 0; i === 0 || i < items.length; i += STATUS_PART_ITEMS) {
      const part = items.slice(i, i + STATUS_PART_ITEMS);
      send({
        type: 'status',
        req: req.req,
        services: part.flatMap((p) => ('s' in p ? [p.s] : [])),
        sessions: part.flatMap((p) => ('x' in p ? [p.x] : [])),
        last: i + STATUS_PART_ITEMS >= items.length,
      });
    }
  };

  process.on('message', (msg: ToWorker) => {
    switch (msg.type) {
      case 'status':
        answerStatus(msg);
        return;
      case 'init': {
        if (init) return;
        init = msg;
        log = createLogger({ ident: msg.logname, stderr: msg.stderr, syslog: true });
        // What the session code loads on first use (so that inetd mode's
        // one-connection processes load only what they run), loaded now, as
        // root: after the drop the service ids may not be able to enter the
        // package's directory (root's home, a private checkout), and a SIGHUP
        // may bring a handler, a transcript or an ACP at any time.
        preloadAll();
        preloadEngines();
        const problem = msg.expect === null ? null : dropPrivileges(msg.expect);
        if (problem !== null) {
          log.error(`worker cannot drop privileges to uid ${msg.expect?.uid} gid ${msg.expect?.gid}: ${problem}: refusing to serve`);
          process.exit(1);
        }
        // Not even a process of the same uid (a handler) may ptrace this one
        // or read its memory, environment or descriptors through /proc.
        const undumpable = nonDumpable();
        if (undumpable !== null) {
          log.error(`worker cannot make itself non-dumpable: ${undumpable}: refusing to serve`);
          process.exit(1);
        }
        const ids = currentIds();
        process.title = `tcpproxy: worker uid ${ids.uid} gid ${ids.gid}`;
        // The limits region is mapped (its fd closed) before anything can be accepted.
        native().limitsAttach(msg.limits.fd, msg.limits.worker);
        // The listeners (and the IPC channel) must not reach handlers or ACPs.
        native().cloexecFrom(3);
        const l = log;
        engine = selectEngine((m) => l.warn(m));
        numbers = new Numbers(msg.ids, () => send({ type: 'more-ids' }));
        if (engine.name === 'splice') startFast(l, numbers);
        setServices(msg.services);
        for (const { fd, key, slot } of msg.listeners) {
          accepting.push({ key, slot, fd, owner: null, waiting: null, episode: null, held: [], summary: null });
        }
        place();
        send({ type: 'ready', ...currentIds() });
        return;
      }
      case 'services':
        if (init) init = { ...init, services: msg.services };
        setServices(msg.services);
        place();
        return;
      case 'ids':
        numbers?.add(msg.ids);
        return;
      case 'drain':
        drain(msg.graceMs);
        return;
    }
  });
  // The master is gone: nobody supervises this process any more.
  process.on('disconnect', () => process.exit(0));
  // A signal to the whole process group (Ctrl-C in the foreground, a service
  // manager stopping the unit) drains like the master's own message does.
  process.on('SIGTERM', () => drain(GRACE_MS));
  process.on('SIGINT', () => drain(GRACE_MS));
  // A SIGHUP to the whole group (a closed terminal, `kill -HUP -PGID`) is the
  // master's reload: it sends the new table itself. Without a handler it
  // would end the worker and every session it serves.
  process.on('SIGHUP', () => undefined);
}

if (require.main === module) runWorker();
