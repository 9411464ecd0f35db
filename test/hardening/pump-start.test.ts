/**
 * Hardening, each fd closed exactly once: a forwarding whose pump cannot
 * start (here the "client" is a regular file, which epoll refuses:
 * epoll_ctl fails with EPERM) ends that connection with its line, and
 * the fd numbers it had are not closed a second time. Between the pump's
 * failure and the session's clean-up the fd number is free, and the next
 * open in this process (here the log's) takes it: a second close would
 * close that file, someone else's fd by then.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spliceEngine } from '../../src/forward/splice';
import type { HeldClient } from '../../src/forward/types';
import { runSession } from '../../src/session/session';
import type { Logger } from '../../src/sys/log';
import type { Service } from '../../src/table/service';
import { echoServer } from '../helpers/servers';
import { SERVICE_DEFAULTS } from '../helpers/service';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';

const tmp = useTempDir('tcpproxy-pump-start-');
const opened: number[] = [];
cleanUpAfterEach(() => {
  for (const fd of opened.splice(0)) {
    try {
      fs.closeSync(fd);
    } catch {
      // Closed by the code under test: the failure is reported by the test itself.
    }
  }
});

test('a pump that cannot start (epoll_ctl EPERM) closes the client fd once: a file that took its number stays open', async () => {
  const up = await echoServer();
  const client = fs.openSync(path.join(tmp.path, 'not-a-socket'), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
  opened.push(client);
  const victimFile = path.join(tmp.path, 'victim');
  fs.writeFileSync(victimFile, 'victim\n');
  const held: HeldClient = {
    kind: 'fd',
    fd: client,
    endpoints: { clientAddress: '127.0.0.1', clientPort: 40000, localAddress: '127.0.0.1', localPort: 2000 },
  };
  const service: Service = {
    ...SERVICE_DEFAULTS,
    port: 2000,
    iface: null,
    target: { kind: 'server', servers: [{ host: '127.0.0.1', port: up.port }] },
    origin: { file: 'test.conf', line: 1 },
  };
  const errors: string[] = [];
  // The error line comes after the pump gave up and before the session cleans up:
  // open the victim until it gets the client's number (the lowest free one wins).
  let victim = -1;
  const log: Logger = {
    info: () => {},
    warn: (m) => errors.push(m),
    error: (m) => {
      errors.push(m);
      if (victim >= 0) return;
      for (let i = 0; i < 1000 && victim < 0; i++) {
        const fd = fs.openSync(victimFile, 'r');
        opened.push(fd);
        if (fd === client) victim = fd;
        if (fd > client) break;
      }
    },
    many: () => {},
  };
  const end = await runSession({ id: 3, client: held, service, engine: spliceEngine, log, clearEnv: false, ids: { uid: 0, gid: 0 } });
  expect({ end, errors }).toEqual({ end: { result: null, ok: false }, errors: ['connection 3: cannot forward: epoll_ctl EPERM'] });
  // The pump closed the client's number; the victim got it, and still has it.
  expect(victim).toBe(client);
  let still: string;
  try {
    const st = fs.fstatSync(victim);
    still = st.ino === fs.statSync(victimFile).ino ? 'the victim' : 'another file';
  } catch (err) {
    still = (err as NodeJS.ErrnoException).code ?? String(err);
  }
  expect(still).toBe('the victim');
});
