// The end record of a connection as the log shows it: the failed call with
// its code where there is one, the side where there is one.
import { constants } from 'node:os';
import type { ForwardResult } from '../../src/forward/types';
import { describeEnd } from '../../src/session/session';
import { SysError } from '../../src/sys/errors';

const base = { bytesUp: 7, bytesDown: 3, durationMs: 12, path: 'splice' } as const;
const end = (r: Partial<ForwardResult> & Pick<ForwardResult, 'end'>): string => describeEnd({ ...base, ...r });

test.each([
  ['eof', { end: 'eof' }],
  ['reset (server: poll ECONNRESET)', { end: 'reset', side: 'server', error: new SysError('poll', constants.errno.ECONNRESET) }],
  ['error (pipe2 EMFILE)', { end: 'error', error: new SysError('pipe2', constants.errno.EMFILE) }],
  ['error (client)', { end: 'error', side: 'client' }],
  ['idle-timeout', { end: 'idle-timeout' }],
] as const)('%s', (why, r) => {
  expect(end(r)).toBe(`7 bytes up, 3 down, 12 ms, ${why}, splice`);
});
