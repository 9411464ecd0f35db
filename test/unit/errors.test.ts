// SysError's code is the errno's E-name, also for errnos that Node's
// getSystemErrorName does not name (it says "Unknown system error -8" for
// ENOEXEC on Node 20); the shape Node gives its own errors otherwise.
import { constants } from 'node:os';
import { getSystemErrorName } from 'node:util';
import { errnoName, sysErrorOf, SysError } from '../../src/sys/errors';

const errno = constants.errno as Readonly<Record<string, number>>;

describe('SysError', () => {
  test.each([
    ['ENOEXEC', 8],
    ['ETXTBSY', 26],
    ['ECHILD', 10],
    ['ESTALE', 116],
    ['EBADMSG', 74],
    ['ENETRESET', 102],
  ])('%s (errno %i) is named by its E-name, not "Unknown system error"', (name, n) => {
    expect(errno[name]).toBe(n); // the Linux numbers this test is written for
    for (const given of [n, -n]) {
      const e = new SysError('execve', given);
      expect(e).toMatchObject({ name: 'SysError', code: name, errno: -n, syscall: 'execve', message: `execve ${name}` });
    }
  });

  test('an errno Node names keeps Node\'s name (aliases as Node spells them)', () => {
    expect(new SysError('splice', constants.errno.ECONNRESET).code).toBe('ECONNRESET');
    expect(new SysError('read', constants.errno.EWOULDBLOCK).code).toBe(getSystemErrorName(-constants.errno.EAGAIN));
    expect(new SysError('send', constants.errno.EOPNOTSUPP).code).toBe(getSystemErrorName(-constants.errno.ENOTSUP));
  });

  test('every errno of os.constants.errno gets an E-name of that number', () => {
    const wrong = Object.entries(errno)
      .map(([name, n]) => ({ name, n, code: new SysError('x', n).code }))
      .filter(({ n, code }) => errno[code] !== n);
    expect(wrong).toEqual([]);
  });

  test('a number no table names keeps Node\'s text; 0 and non-integers do not throw', () => {
    expect(errnoName(4000)).toBe('Unknown system error -4000');
    expect(errnoName(0)).toBe('Unknown system error 0');
    expect(errnoName(1.5)).toBe('Unknown system error 1.5');
    expect(new SysError('x', 4000).message).toBe('x Unknown system error -4000');
  });

  test('the detail follows the code in the message', () => {
    expect(new SysError('connect', constants.errno.ECONNREFUSED, '127.0.0.1:1').message).toBe('connect ECONNREFUSED 127.0.0.1:1');
  });
});

describe('sysErrorOf', () => {
  test('a Node error keeps its syscall and errno; the code is the E-name', () => {
    const e = sysErrorOf({ code: 'ENOEXEC', errno: -8, syscall: 'spawn /bin/x' }, 'spawn');
    expect(e).toMatchObject({ code: 'ENOEXEC', errno: -8, syscall: 'spawn /bin/x' });
  });

  test('an error with only a code gets its errno from os.constants', () => {
    expect(sysErrorOf({ code: 'ETXTBSY' }, 'open')).toMatchObject({ code: 'ETXTBSY', errno: -26, syscall: 'open' });
  });

  test('an error without errno or known code is EIO under the given syscall', () => {
    expect(sysErrorOf(new Error('x'), 'write')).toMatchObject({ code: 'EIO', errno: -constants.errno.EIO, syscall: 'write' });
  });

  test('a SysError is passed through as it is', () => {
    const e = new SysError('close', constants.errno.EBADF);
    expect(sysErrorOf(e, 'other')).toBe(e);
  });
});
