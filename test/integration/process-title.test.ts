/**
 * Process titles (issue 16 item 6): the master and each worker say what
 * they are in /proc/PID/cmdline (what `ps` shows), set through libuv's
 * process title, which rewrites the argv area in place.
 */
import * as fs from 'node:fs';
import { assertBuilt, startDaemon, waitLog } from '../helpers/daemon';
import { freePort } from '../helpers/ports';
import { IS_ROOT } from '../helpers/root';
import { cleanUpAfterEach, useTempDir } from '../helpers/setup';

beforeAll(() => assertBuilt());
const tmp = useTempDir('tcpproxy-title-');
cleanUpAfterEach();

/** The command line as `ps` shows it: the NUL-separated words, the trailing padding dropped. */
function cmdline(pid: number | string): string {
  return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '').split('\0').join(' ');
}

it('the master names its config file, the worker its uid and gid', async () => {
  const conf = tmp.config([`port ${await freePort()}`, '  interface 127.0.0.1', '    server 127.0.0.1:9']);
  const d = await startDaemon({ args: ['-f', conf] });
  const [, uid, gid, pid] = await waitLog(d.stderr, /^worker uid (\d+) gid (\d+) ready, pid (\d+)$/);
  expect(cmdline(d.pid)).toBe(`tcpproxy: master -f ${conf}`);
  expect(cmdline(pid ?? '')).toBe(`tcpproxy: worker uid ${uid} gid ${gid}`);
  if (IS_ROOT) expect([uid, gid]).toEqual(['65535', '65534']);
});

it('with a server argument (-b) there is no file to name', async () => {
  const d = await startDaemon({ args: ['-b', `127.0.0.1:${await freePort()}`, '127.0.0.1:9'] });
  await waitLog(d.stderr, /^worker uid \d+ gid \d+ ready, pid \d+$/);
  expect(cmdline(d.pid)).toBe('tcpproxy: master');
});
