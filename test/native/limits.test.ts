// The shared limits (native/limits.cc) and the native access-list matcher
// (native/access.cc), called directly. This process plays the master: it
// creates the region once; a child process attaches it as a worker, takes
// places and is killed, and the master takes them back.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { native, type AccessRule, type Addon } from '../../src/sys/native';
import { readStat } from '../helpers/proc';
import { until } from '../helpers/until';

const addon: Addon = native();
const CHILD = path.join(__dirname, 'helpers', 'limits-child.cjs');

let regionFd = -1;
beforeAll(() => {
  regionFd = addon.limitsCreate();
});

const rule = (allow: boolean, address: string, bits: number): AccessRule => ({
  allow,
  address,
  bits,
  text: `${allow ? 'allow' : 'deny'} ${address}/${bits}`,
});

describe('accessCheck', () => {
  const rules = [
    rule(true, '127.0.0.0', 8),
    rule(false, '127.0.0.0', 24),
    rule(true, '127.0.0.7', 32),
    rule(false, '127.0.0.8', 32),
    rule(true, '127.0.0.8', 32),
    rule(true, '::1', 128),
    rule(false, '2001:db8::', 32),
  ];
  it.each([
    ['127.0.1.1', null], // allow /8
    ['127.0.0.1', 'deny 127.0.0.0/24'], // the longer deny
    ['127.0.0.7', null], // a longer allow inside the deny
    ['127.0.0.8', 'deny 127.0.0.8/32'], // a tie denies
    ['::ffff:127.0.0.7', null], // IPv4-mapped: as IPv4
    ['::ffff:127.0.0.1', 'deny 127.0.0.0/24'],
    ['::1', null],
    ['2001:db8::5', 'deny 2001:db8::/32'],
    ['::2', 'no allow matched'],
    ['10.0.0.1', 'no allow matched'],
  ])('%s -> %s', (client, verdict) => {
    expect(addon.accessCheck(rules, client)).toBe(verdict);
  });
  it('matches IPv4-mapped clients against IPv4 prefixes only', () => {
    expect(addon.accessCheck([rule(false, '::', 0)], '::ffff:10.0.0.1')).toBeNull();
    expect(addon.accessCheck([rule(false, '0.0.0.0', 0)], '::ffff:10.0.0.1')).toBe('deny 0.0.0.0/0');
    expect(addon.accessCheck([rule(false, '0.0.0.0', 0)], '::1')).toBeNull();
  });
  it('admits everyone without an allow, refuses the unmatched with one', () => {
    expect(addon.accessCheck([rule(false, '10.0.0.0', 8)], '192.0.2.1')).toBeNull();
    expect(addon.accessCheck([rule(true, '10.0.0.0', 8)], '192.0.2.1')).toBe('no allow matched');
    expect(addon.accessCheck([], '192.0.2.1')).toBeNull();
  });
  it('rejects a malformed table', () => {
    expect(() => addon.accessCheck([rule(true, '10.0.0.0', 33)], '10.0.0.1')).toThrow('bad bits');
    expect(() => addon.accessCheck([rule(true, 'ten', 8)], '10.0.0.1')).toThrow('IP literal');
    expect(() => addon.accessCheck([], 'nobody')).toThrow('IP literal');
  });
});

describe('limits in one process', () => {
  it('maxconn: places up to the limit, one more after a leave', () => {
    expect([1, 2, 3].map(() => addon.limitEnter(10, 2))).toStrictEqual([true, true, false]);
    expect(addon.limitStats(10).live).toBe(2);
    addon.limitLeave(10);
    expect(addon.limitEnter(10, 2)).toBe(true);
    expect(addon.limitEnter(10, 2)).toBe(false);
  });
  it('rate: a burst of N, then the wait for the next token', () => {
    const waits = Array.from({ length: 7 }, () => addon.rateTake(11, 5));
    expect(waits.slice(0, 5)).toStrictEqual([0, 0, 0, 0, 0]);
    // A token every 200 ms: the next one is at most 200 ms away.
    expect(waits[5]).toBeGreaterThan(0);
    expect(waits[5]).toBeLessThanOrEqual(201);
  });
  it('ratePeek: tells whether a token is there without taking it', () => {
    expect([1, 2, 3].map(() => addon.ratePeek(17, 2))).toStrictEqual([0, 0, 0]);
    expect([addon.rateTake(17, 2), addon.rateTake(17, 2)]).toStrictEqual([0, 0]);
    // The bucket of 2 is empty: the peek gives the wait, as the take does, and takes nothing.
    const peek = addon.ratePeek(17, 2);
    expect(peek).toBeGreaterThan(0);
    expect(peek).toBeLessThanOrEqual(501);
    expect(addon.rateTake(17, 2)).toBeGreaterThan(0);
    expect(addon.ratePeek(18, 2)).toBe(0); // another service
  });
  it('per-source: one address at its limit does not stop another; v4 and v4-mapped are one client', () => {
    expect(addon.sourceEnter(12, '127.0.0.7', 1)).toBe(true);
    expect(addon.sourceEnter(12, '::ffff:127.0.0.7', 1)).toBe(false);
    expect(addon.sourceEnter(12, '127.0.0.8', 1)).toBe(true);
    expect(addon.sourceEnter(13, '127.0.0.7', 1)).toBe(true); // another service
    addon.sourceLeave(12, '127.0.0.7');
    expect(addon.sourceEnter(12, '127.0.0.7', 1)).toBe(true);
  });
  it('per-source: many addresses in and out leave the table consistent', () => {
    const addrs = Array.from({ length: 3000 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.1`);
    for (const a of addrs) expect(addon.sourceEnter(14, a, 2)).toBe(true);
    for (const a of addrs) expect(addon.sourceEnter(14, a, 2)).toBe(true);
    for (const a of addrs) expect(addon.sourceEnter(14, a, 2)).toBe(false);
    for (const a of addrs.filter((_, i) => i % 2 === 0)) {
      addon.sourceLeave(14, a);
      addon.sourceLeave(14, a);
    }
    addrs.forEach((a, i) => expect(addon.sourceEnter(14, a, 2)).toBe(i % 2 === 0));
  });
  it('refusal lines: 10 a second a service', () => {
    const allowed = Array.from({ length: 15 }, () => addon.refusalLogAllowed(15)).filter(Boolean).length;
    // Two seconds may start within the loop: 10 each at most.
    expect(allowed === 10 || allowed === 15).toBe(true);
    expect(addon.refusalLogAllowed(16)).toBe(true);
  });
  it('refusal summary: the refusals over the budget, each taken once; one turn a second', () => {
    let lines = 0;
    let calls = 0;
    const refuse = (): boolean => {
      calls++;
      const allowed = addon.refusalLogAllowed(19);
      if (allowed) lines++;
      return allowed;
    };
    for (let i = 0; i < 25; i++) refuse();
    // Nothing counted for another service.
    expect(addon.refusalSummary(20, false)).toBe(0);
    // The first ask of a second takes them all.
    const first = addon.refusalSummary(19, false);
    expect(first).toBe(calls - lines);
    expect(addon.refusalSummary(19, false)).toBe(0);
    // More over the budget: in the same second, not this call's turn (-1), unless a second began.
    for (let i = 0; i < 30 && refuse(); i++);
    const again = addon.refusalSummary(19, false);
    expect(again === -1 || again === calls - lines - first).toBe(true);
    // A forced take has them whatever the second, and leaves none.
    const forced = again === -1 ? addon.refusalSummary(19, true) : 0;
    expect(first + Math.max(again, 0) + forced).toBe(calls - lines);
    expect(addon.refusalSummary(19, false)).toBe(0);
  });
});

describe('limits across processes', () => {
  it('a worker places count for the master, and a dead worker is forgotten', async () => {
    const child = spawn(process.execPath, [CHILD, '7', '20', '3'], { stdio: ['pipe', 'pipe', 'inherit', regionFd] });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      await until(() => out.includes('\n'), 'the child took its places');
      expect(out).toBe('held 3 true\n');
      expect(addon.limitStats(20).live).toBe(3);
      expect(addon.limitEnter(20, 3)).toBe(false);
      expect(addon.sourceEnter(20, '127.0.0.9', 1)).toBe(false);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    // Dead, its places still count until the master forgets it.
    expect(addon.limitStats(20).live).toBe(3);
    addon.limitsForget(7);
    expect(addon.limitStats(20).live).toBe(0);
    expect(addon.sourceEnter(20, '127.0.0.9', 1)).toBe(true);
    expect(addon.limitEnter(20, 3)).toBe(true);
  });

  it('the master never waits for the table lock: a stopped holder makes forget return false at once; once it is dead, forget succeeds', async () => {
    const child = spawn(process.execPath, [CHILD, '8', '21', '2', 'lock'], { stdio: ['pipe', 'pipe', 'inherit', regionFd] });
    const pid = child.pid ?? 0;
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    // The bound of this test should forget block (the fault under test): the holder is killed
    // after 5 s from outside, and a blocked call then returns, too late.
    const guard = spawn(process.execPath, ['-e', `setTimeout(() => { try { process.kill(${pid}, 'SIGKILL'); } catch {} }, 5000)`], { stdio: 'ignore' });
    try {
      await until(() => out.includes('\n'), 'the child took its places and the lock');
      expect(out).toBe('held 2 true locked\n');
      process.kill(pid, 'SIGSTOP');
      await until(() => readStat(pid)?.state === 'T', 'the holder stopped');
      const tries = [0, 1].map(() => {
        const t0 = Date.now();
        const done = addon.limitsForget(8);
        return { done, fast: Date.now() - t0 < 1000 };
      });
      expect(tries).toEqual([
        { done: false, fast: true },
        { done: false, fast: true },
      ]);
      // The live-session places are back at once; only the per-source entry waits for the lock.
      expect(addon.limitStats(21).live).toBe(0);
    } finally {
      child.kill('SIGKILL');
      await exited;
      guard.kill('SIGKILL');
    }
    // The holder died with the lock: the next taker gets it (robust mutex), the forget completes.
    expect(addon.limitsForget(8)).toBe(true);
    expect(addon.sourceEnter(21, '127.0.0.9', 1)).toBe(true);
  });
});
