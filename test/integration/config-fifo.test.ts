/**
 * readConfig on a FIFO: refused without blocking on it. (Moved out of
 * test/unit/config.test.ts: making the FIFO takes mkfifo(1), a process.)
 */
import * as path from 'node:path';
import { formatConfigError } from '../../src/sys/errors';
import { readConfig } from '../../src/table/config';
import { runToExit } from '../helpers/daemon';
import { useTempDir } from '../helpers/setup';

const tmp = useTempDir('tcpproxy-config-');

describe('readConfig', () => {
  it('refuses a FIFO without blocking on it', async () => {
    const fifo = path.join(tmp.path, 'fifo.conf');
    expect(await runToExit(['mkfifo', fifo])).toEqual({ code: 0, signal: null, stdout: '', stderr: '' });
    const r = readConfig(fifo, () => null);
    expect(r.ok ? [] : r.errors.map(formatConfigError)).toEqual([`tcpproxy:${fifo}: is not a regular file`]);
  });
});
