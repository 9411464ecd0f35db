import { checkAccess, formatPrefix, parsePrefix } from '../../src/table/access';
import { NO_ACCESS_RULES, type Access, type Prefix } from '../../src/table/service';

/** A prefix that must parse. */
function p(text: string): Prefix {
  const r = parsePrefix(text);
  if (!r.ok) throw new Error(r.error);
  return r.value;
}

function lists(allow: string[], deny: string[]): Access {
  return { ...NO_ACCESS_RULES, allow: allow.map(p), deny: deny.map(p) };
}

describe('parsePrefix', () => {
  it.each([
    ['10.0.0.0/8', { family: 4, address: '10.0.0.0', bits: 8 }],
    ['127.0.0.7', { family: 4, address: '127.0.0.7', bits: 32 }],
    ['127.0.0.7/32', { family: 4, address: '127.0.0.7', bits: 32 }],
    ['0.0.0.0/0', { family: 4, address: '0.0.0.0', bits: 0 }],
    ['255.255.255.255', { family: 4, address: '255.255.255.255', bits: 32 }],
    ['192.0.2.128/25', { family: 4, address: '192.0.2.128', bits: 25 }],
    ['2001:db8::/32', { family: 6, address: '2001:db8::', bits: 32 }],
    ['2001:DB8:0:0::/32', { family: 6, address: '2001:db8::', bits: 32 }],
    ['::1', { family: 6, address: '::1', bits: 128 }],
    ['0:0:0:0:0:0:0:1/128', { family: 6, address: '::1', bits: 128 }],
    ['::/0', { family: 6, address: '::', bits: 0 }],
    ['fe80::/10', { family: 6, address: 'fe80::', bits: 10 }],
    ['2001:db8:1:2:3:4:5:6', { family: 6, address: '2001:db8:1:2:3:4:5:6', bits: 128 }],
    ['2001:db8::8000:0/97', { family: 6, address: '2001:db8::8000:0', bits: 97 }],
    // IPv4-compatible (not mapped) addresses are plain IPv6.
    ['::1.2.3.4', { family: 6, address: '::102:304', bits: 128 }],
    // A prefix shorter than the mapped range is an IPv6 prefix like any other.
    ['::/80', { family: 6, address: '::', bits: 80 }],
  ])('%s', (text, value) => {
    expect(parsePrefix(text)).toEqual({ ok: true, value });
  });

  const syntax = 'expected an IPv4 or IPv6 address with an optional /length';
  it.each([
    ['foo', syntax],
    ['', syntax],
    ['/', syntax],
    ['/8', syntax],
    ['10.0.0.0/', syntax],
    ['10.0.0.0/x', syntax],
    ['10.0.0.0/08', syntax],
    ['10.0.0.0/+8', syntax],
    ['10.0.0.0/-1', syntax],
    ['10.0.0.0/8/8', syntax],
    ['10.0.0.0/ 8', syntax],
    ['10.0.0', syntax],
    ['10.0.0.256', syntax],
    ['010.0.0.1', syntax],
    ['[::1]', syntax],
    ['[::1]/128', syntax],
    ['fe80::1%eth0', syntax],
    ['localhost', syntax],
    ['1:2:3:4:5:6:7:8:9', syntax],
    ['10.0.0.0/33', 'the length must be 0-32'],
    ['10.0.0.0/99999999999999999999', 'the length must be 0-32'],
    ['::/129', 'the length must be 0-128'],
    ['10.1.2.3/8', 'host bits are set (the network is 10.0.0.0/8)'],
    ['0.0.0.1/0', 'host bits are set (the network is 0.0.0.0/0)'],
    ['192.0.2.129/25', 'host bits are set (the network is 192.0.2.128/25)'],
    ['2001:db8::1/32', 'host bits are set (the network is 2001:db8::/32)'],
    ['2001:db8:1:2:3:4:5:6/65', 'host bits are set (the network is 2001:db8:1:2::/65)'],
    ['::1/0', 'host bits are set (the network is ::/0)'],
    ['::ffff:10.0.0.1/80', 'host bits are set (the network is ::/80)'],
    ['::ffff:10.0.0.1', 'write an IPv4-mapped address as IPv4 (10.0.0.1)'],
    ['::FFFF:a00:1', 'write an IPv4-mapped address as IPv4 (10.0.0.1)'],
    ['::ffff:10.0.0.0/104', 'write an IPv4-mapped address as IPv4 (10.0.0.0/8)'],
    ['::ffff:0:0/96', 'write an IPv4-mapped address as IPv4 (0.0.0.0/0)'],
  ])('rejects %j', (text, why) => {
    expect(parsePrefix(text)).toEqual({ ok: false, error: `invalid prefix ${JSON.stringify(text)}: ${why}` });
  });

  it('quotes control characters escaped', () => {
    expect(parsePrefix('10.0.0.0\x1b/8')).toEqual({ ok: false, error: `invalid prefix "10.0.0.0\\x1b/8": ${syntax}` });
  });
});

describe('formatPrefix', () => {
  it('writes ADDRESS/BITS, always with the length', () => {
    expect(['10.0.0.0/8', '127.0.0.7', '2001:DB8::/32', '::1', '::/0', '0.0.0.0/0'].map((t) => formatPrefix(p(t)))).toEqual([
      '10.0.0.0/8',
      '127.0.0.7/32',
      '2001:db8::/32',
      '::1/128',
      '::/0',
      '0.0.0.0/0',
    ]);
  });

  it('gives text that parsePrefix reads back to the same prefix', () => {
    for (const t of ['10.0.0.0/8', '127.0.0.7', '2001:DB8::/32', 'fe80::/10', '::/0']) expect(parsePrefix(formatPrefix(p(t)))).toEqual({ ok: true, value: p(t) });
  });
});

describe('checkAccess', () => {
  it('admits everyone without lists', () => {
    for (const c of ['127.0.0.1', '::1', '::ffff:127.0.0.1', 'garbage', '']) expect(checkAccess(NO_ACCESS_RULES, c)).toBeNull();
  });

  it('decides by the longest matching prefix, in either list', () => {
    const a = lists(['10.0.0.0/8', '10.1.99.7'], ['10.1.99.0/24', '0.0.0.0/0']);
    expect(
      ['10.2.3.4', '10.1.99.1', '10.1.99.7', '11.0.0.1', '10.1.98.255', '10.1.100.0'].map((c) => [c, checkAccess(a, c)]),
    ).toEqual([
      ['10.2.3.4', null],
      ['10.1.99.1', 'deny 10.1.99.0/24'],
      ['10.1.99.7', null],
      ['11.0.0.1', 'deny 0.0.0.0/0'],
      ['10.1.98.255', null],
      ['10.1.100.0', null],
    ]);
  });

  it('does not care about the order of the lists', () => {
    const a = lists(['10.1.99.7', '10.0.0.0/8'], ['0.0.0.0/0', '10.1.99.0/24']);
    expect(['10.2.3.4', '10.1.99.1', '10.1.99.7', '11.0.0.1'].map((c) => checkAccess(a, c))).toEqual([null, 'deny 10.1.99.0/24', null, 'deny 0.0.0.0/0']);
  });

  it('denies on a tie between an allow and a deny of the same length', () => {
    expect(checkAccess(lists(['10.0.0.0/8'], ['10.0.0.0/8']), '10.9.9.9')).toBe('deny 10.0.0.0/8');
    expect(checkAccess(lists(['127.0.0.7'], ['127.0.0.7']), '127.0.0.7')).toBe('deny 127.0.0.7/32');
    expect(checkAccess(lists(['::1'], ['::1']), '::1')).toBe('deny ::1/128');
    // A longer allow still wins over the tied pair.
    expect(checkAccess(lists(['10.0.0.0/8', '10.1.0.0/16'], ['10.0.0.0/8']), '10.1.0.1')).toBeNull();
  });

  it('refuses an unmatched client iff there is an allow (of either family)', () => {
    expect(checkAccess(lists(['10.0.0.0/8'], []), '192.0.2.1')).toBe('no allow matched');
    expect(checkAccess(lists(['10.0.0.0/8'], []), '::1')).toBe('no allow matched');
    expect(checkAccess(lists(['2001:db8::/32'], []), '127.0.0.1')).toBe('no allow matched');
    expect(checkAccess(lists([], ['10.0.0.0/8']), '192.0.2.1')).toBeNull();
    expect(checkAccess(lists([], ['10.0.0.0/8']), '10.0.0.1')).toBe('deny 10.0.0.0/8');
    expect(checkAccess(lists([], ['10.0.0.0/8']), '::1')).toBeNull();
  });

  it('matches an IPv4-mapped client as IPv4, against IPv4 prefixes only', () => {
    const a = lists(['127.0.0.0/24'], ['::/0']);
    expect(checkAccess(a, '::ffff:127.0.0.5')).toBeNull();
    expect(checkAccess(a, '::FFFF:7f00:5')).toBeNull();
    expect(checkAccess(a, '::ffff:127.0.1.5')).toBe('no allow matched');
    expect(checkAccess(a, '::1')).toBe('deny ::/0');
    expect(checkAccess(lists(['::/0'], []), '::ffff:127.0.0.5')).toBe('no allow matched');
    expect(checkAccess(lists([], ['127.0.0.0/8']), '::ffff:127.0.0.1')).toBe('deny 127.0.0.0/8');
    // Not mapped: IPv4-compatible and other embedded forms stay IPv6.
    expect(checkAccess(lists(['127.0.0.0/8'], []), '::127.0.0.1')).toBe('no allow matched');
  });

  it('matches IPv6 clients in any spelling, at every word boundary', () => {
    const a = lists(['2001:db8::/32', '2001:db8:0:1::/64', '::1'], ['2001:db8::/48', '2001:db8:0:1::8000:0/97', 'fe80::/10']);
    expect(
      [
        '2001:db8:1::1',
        '2001:DB8:0:0:0:0:0:1',
        '2001:db8:0:1::1',
        '2001:db8:0:1::8000:1',
        '2001:db8:0:1:0:0:7fff:ffff',
        '2001:db9::1',
        'fe80::1',
        'fe80::1%eth0',
        '::1',
        '0:0:0:0:0:0:0:1',
        '::',
        '2001:db8:0:1::127.0.0.1',
      ].map((c) => [c, checkAccess(a, c)]),
    ).toEqual([
      ['2001:db8:1::1', null],
      ['2001:DB8:0:0:0:0:0:1', 'deny 2001:db8::/48'],
      ['2001:db8:0:1::1', null],
      ['2001:db8:0:1::8000:1', 'deny 2001:db8:0:1::8000:0/97'],
      ['2001:db8:0:1:0:0:7fff:ffff', null],
      ['2001:db9::1', 'no allow matched'],
      ['fe80::1', 'deny fe80::/10'],
      ['fe80::1%eth0', 'deny fe80::/10'],
      ['::1', null],
      ['0:0:0:0:0:0:0:1', null],
      ['::', 'no allow matched'],
      ['2001:db8:0:1::127.0.0.1', null],
    ]);
  });

  it('handles /0, /32 and /128 exactly', () => {
    const v4 = lists(['0.0.0.0/0'], ['192.0.2.1/32']);
    expect(['0.0.0.0', '255.255.255.255', '192.0.2.1', '192.0.2.0', '192.0.2.2'].map((c) => checkAccess(v4, c))).toEqual([
      null,
      null,
      'deny 192.0.2.1/32',
      null,
      null,
    ]);
    const v6 = lists(['::/0'], ['2001:db8::1/128']);
    expect(['::', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', '2001:db8::1', '2001:db8::', '2001:db8::2'].map((c) => checkAccess(v6, c))).toEqual([
      null,
      null,
      'deny 2001:db8::1/128',
      null,
      null,
    ]);
    expect(checkAccess(lists([], ['0.0.0.0/0']), '255.255.255.255')).toBe('deny 0.0.0.0/0');
    expect(checkAccess(lists(['128.0.0.0/1'], []), '127.255.255.255')).toBe('no allow matched');
    expect(checkAccess(lists(['128.0.0.0/1'], []), '128.0.0.0')).toBeNull();
    expect(checkAccess(lists(['8000::/1'], []), '7fff::')).toBe('no allow matched');
    expect(checkAccess(lists(['8000::/1'], []), '8000::')).toBeNull();
  });

  it('matches nothing for a client that is no IP address', () => {
    for (const c of ['', 'garbage', '10.0.0', '10.0.0.256', '010.0.0.1', ':::', '1::2::3', '[::1]', '1:2:3:4:5:6:7:8:9', '::ffff:1.2.3']) {
      expect([c, checkAccess(lists(['0.0.0.0/0', '::/0'], []), c)]).toEqual([c, 'no allow matched']);
      expect([c, checkAccess(lists([], ['0.0.0.0/0', '::/0']), c)]).toEqual([c, null]);
    }
  });

  it('keeps the Access plain data: a JSON copy checks the same', () => {
    const a = lists(['10.0.0.0/8', '2001:db8::/32'], ['10.1.0.0/16']);
    const before = JSON.stringify(a);
    const verdicts = ['10.0.0.1', '10.1.0.1', '2001:db8::1', '::1'].map((c) => checkAccess(a, c));
    expect(JSON.stringify(a)).toBe(before);
    const copy = JSON.parse(before) as Access;
    expect(['10.0.0.1', '10.1.0.1', '2001:db8::1', '::1'].map((c) => checkAccess(copy, c))).toEqual(verdicts);
    expect(verdicts).toEqual([null, 'deny 10.1.0.0/16', null, 'no allow matched']);
  });

  it('throws on a prefix that parsePrefix could not have made (a bug, not a rule to skip)', () => {
    const bad: Access = { ...NO_ACCESS_RULES, deny: [{ family: 4, address: '::1', bits: 32 }] };
    expect(() => checkAccess(bad, '127.0.0.1')).toThrow('checkAccess: not a valid IPv4 prefix: {"family":4,"address":"::1","bits":32}');
  });

  it('checks 100,000 clients against 100 prefixes quickly', () => {
    const allow = Array.from({ length: 100 }, (_, i) => `10.${i}.0.0/16`);
    const a = lists(allow, ['10.99.7.0/24']);
    const a6 = lists(Array.from({ length: 100 }, (_, i) => `2001:db8:${i.toString(16)}::/48`), []);
    const t0 = performance.now();
    let admitted = 0;
    for (let i = 0; i < 100000; i++) {
      if (checkAccess(a, '10.99.1.1') === null) admitted++;
      if (checkAccess(a6, '2001:db8:63::1') === null) admitted++;
    }
    const ms = performance.now() - t0;
    expect(admitted).toBe(200000);
    // About 0.1 µs a check here; the bound is loose for a loaded machine.
    expect(ms).toBeLessThan(2000);
  });
});
