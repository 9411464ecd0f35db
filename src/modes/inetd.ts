/**
 * inetd mode: the connection is on fd 0 (inetd, xinetd, systemd Accept=yes)
 * and this process serves it alone. Order: fd 2 away from the socket, find
 * the service by the socket's local address, drop to the service ids, then
 * ACP, then become the handler (execve) or forward fd 0 ↔ upstream.
 */
import * as fs from 'node:fs';
import { selectEngine } from '../forward/engine';
import type { Endpoints } from '../forward/types';
import { isTrustedSource, readProxyHeader, UNTRUSTED } from '../session/proxy';
import { currentIds, dropPrivileges, runningAsRoot, serviceIdentity } from '../process/privilege';
import { preloadFor, runSession } from '../session/session';
import { EXIT_FAILURE, EXIT_OK } from '../sys/exit-codes';
import type { Io } from '../sys/io';
import { createLogger } from '../sys/log';
import { native } from '../sys/native';
import { formatHostPort, plainAddress } from '../table/address';
import { checkAccess } from '../table/access';
import { listenKey, lookupService, type Service } from '../table/service';

/** True when fd 0 is a connected (not listening) TCP socket. */
export function stdinIsConnection(): boolean {
  const sn = native().sockName(0);
  return sn !== null && sn.stream && !sn.listening && sn.peer !== null;
}

/**
 * Under inetd, fds 0, 1 and 2 are all the client's socket: before anything
 * can be printed, fd 2 goes to /dev/null and the command's messages go to
 * syslog instead. Other runs keep `io`.
 */
export function inetdSafeIo(io: Io): Io {
  const addon = native();
  if (!stdinIsConnection() || addon.sockName(2) === null) return io;
  const devnull = fs.openSync('/dev/null', 'r+');
  addon.dupOnto(devnull, 2);
  fs.closeSync(devnull);
  const log = createLogger({ ident: 'tcpproxy', stderr: false, syslog: true });
  const toLog = (text: string): void => {
    for (const line of text.split('\n')) if (line !== '') log.error(line.replace(/^tcpproxy: /, ''));
  };
  return { stdout: toLog, stderr: toLog };
}

function envArray(env: NodeJS.ProcessEnv): string[] {
  return Object.entries(env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`]));
}

export async function serveInetd(
  services: readonly Service[],
  opts: { readonly logname: string; readonly clearEnv: boolean },
): Promise<number> {
  const addon = native();
  // Under inetd fds 0, 1 and 2 are all the client socket: nothing may print there.
  const devnull = fs.openSync('/dev/null', 'r+');
  addon.dupOnto(devnull, 2);
  const log = createLogger({ ident: opts.logname, stderr: false, syslog: true });
  // systemd sets these for Accept=yes too; the handler (same pid after execve) must not act on them.
  for (const v of ['LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES']) delete process.env[v];
  const sn = addon.sockName(0);
  if (sn === null || sn.peer === null) {
    log.error('inetd mode: standard input is not a connected socket');
    return EXIT_FAILURE;
  }
  let endpoints: Endpoints = {
    clientAddress: plainAddress(sn.peer.address),
    clientPort: sn.peer.port,
    localAddress: plainAddress(sn.local.address),
    localPort: sn.local.port,
  };
  const service = lookupService(services, endpoints.localAddress, endpoints.localPort);
  if (service === null) {
    log.error(`connection ${process.pid}: client ${endpoints.clientAddress}: no service for ${endpoints.localAddress} port ${endpoints.localPort}`);
    return EXIT_FAILURE;
  }
  const { access } = service;
  const key = listenKey(service);
  // One process a connection: nothing to count across them.
  const ignored = [
    ['maxconn', access.maxconn],
    ['per-source', access.perSource],
    ['rate', access.rate],
  ].flatMap(([name, v]) => (v === null ? [] : [name]));
  if (ignored.length > 0) {
    log.warn(`service ${key}: ${ignored.join(', ')} ignored in inetd mode (each connection is its own process): use inetd's own limits`);
  }
  // Chosen, and the code the session runs loaded, while the files are still readable as root.
  const engine = selectEngine((m) => log.warn(m));
  preloadFor(service);
  // The ids drop first: nothing the client sent (a PROXY header) is read as root.
  if (runningAsRoot()) {
    const id = serviceIdentity(service, true);
    const problem = dropPrivileges(id);
    if (problem !== null) {
      log.error(`connection ${process.pid}: cannot drop privileges to uid ${id.uid} gid ${id.gid}: ${problem}`);
      return EXIT_FAILURE;
    }
  }
  const peer = formatHostPort(endpoints.clientAddress, endpoints.clientPort);
  const trusted = service.proxy.acceptProxy;
  if (trusted !== null) {
    // Refusals close at once: the exit closes fds 0 and 1.
    if (!isTrustedSource(trusted, endpoints.clientAddress)) {
      log.warn(`service ${key}: refused ${peer}: ${UNTRUSTED}`);
      return EXIT_OK;
    }
    const header = await readProxyHeader(0);
    if (!header.ok) {
      log.warn(`service ${key}: refused ${peer}: ${header.reason}`);
      return EXIT_OK;
    }
    if (header.client !== null) {
      const via = { address: endpoints.clientAddress, port: endpoints.clientPort };
      endpoints = { ...endpoints, clientAddress: header.client.address, clientPort: header.client.port, via };
    }
  }
  const rule = checkAccess(access, endpoints.clientAddress);
  if (rule !== null) {
    // Closed at once: nothing read or written; the exit closes fds 0 and 1.
    log.warn(`service ${key}: refused ${formatHostPort(endpoints.clientAddress, endpoints.clientPort)}: ${rule}`);
    return EXIT_OK;
  }
  let client;
  if (service.target.kind === 'exec') {
    // The handler takes fds 0 and 1 as they are; the session only borrows them.
    client = { kind: 'fd' as const, fd: 0, endpoints };
  } else {
    // The engine gets its own reference; 0 and 1 go to /dev/null so that the
    // engine's close (or reset) is the last one and reaches the client.
    const fd = addon.dupCloexec(0);
    addon.dupOnto(devnull, 0);
    addon.dupOnto(devnull, 1);
    client = engine.adopt(fd, endpoints);
  }
  fs.closeSync(devnull);
  const borrowed = service.target.kind === 'exec';
  const sessionEngine = borrowed ? { ...engine, release: () => {} } : engine;
  const end = await runSession({
    id: process.pid,
    client,
    service,
    engine: sessionEngine,
    log,
    clearEnv: opts.clearEnv,
    ids: currentIds(),
    execInPlace: (argv, env, sandbox) => addon.execve(argv[0] ?? '', argv, envArray(env), sandbox),
  });
  return end.ok ? EXIT_OK : EXIT_FAILURE;
}
