import {
  formatHostPort,
  normalizeIp,
  parseBind,
  parsePort,
  parseServer,
  plainAddress,
  splitHostPort,
  type PortResolver,
} from '../../src/table/address';

const names: Record<string, number> = { smtp: 25, pop3: 110, 'x-svc.v2+ssl': 4433 };
const resolve: PortResolver = (name) => names[name] ?? null;

describe('parsePort', () => {
  it.each([
    ['1', 1],
    ['25', 25],
    ['65535', 65535],
    ['080', 80],
  ])('accepts the number %s', (text, port) => {
    expect(parsePort(text, resolve)).toEqual({ ok: true, value: port });
  });

  it('resolves a service name through the resolver', () => {
    expect(parsePort('smtp', resolve)).toEqual({ ok: true, value: 25 });
    expect(parsePort('x-svc.v2+ssl', resolve)).toEqual({ ok: true, value: 4433 });
  });

  it('passes the name to the resolver as written', () => {
    const seen: string[] = [];
    parsePort('SMTP', (n) => {
      seen.push(n);
      return null;
    });
    expect(seen).toEqual(['SMTP']);
  });

  it('rejects an empty port', () => {
    expect(parsePort('', resolve)).toEqual({ ok: false, error: 'empty port' });
  });

  it.each(['0', '65536', '99999999999999999999'])('rejects %s as out of range', (text) => {
    expect(parsePort(text, resolve)).toEqual({ ok: false, error: `port ${text} is out of range (1-65535)` });
  });

  it('rejects an unknown service name', () => {
    expect(parsePort('nosuch', resolve)).toEqual({ ok: false, error: 'unknown service name "nosuch"' });
  });

  it.each(['-1', '25x', '1e3', '2 5', '_smtp', '::1'])('rejects the malformed port %j', (text) => {
    expect(parsePort(text, resolve)).toEqual({ ok: false, error: `invalid port "${text}"` });
  });

  it('does not consult the resolver for numbers or malformed text', () => {
    const resolver = jest.fn<number | null, [string]>(() => 1);
    parsePort('25', resolver);
    parsePort('-1', resolver);
    parsePort('', resolver);
    expect(resolver).not.toHaveBeenCalled();
  });
});

describe('normalizeIp', () => {
  it.each([
    ['127.0.0.1', '127.0.0.1'],
    ['192.168.1.2', '192.168.1.2'],
    ['::1', '::1'],
    ['[::1]', '::1'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['[2001:0db8::0001]', '2001:db8::1'],
    ['FE80::A', 'fe80::a'],
  ])('normalises %s to %s', (text, ip) => {
    expect(normalizeIp(text)).toBe(ip);
  });

  it.each(['', 'localhost', 'mail.example.org', '1.2.3', '256.1.1.1', '127.0.0.01', '[127.0.0.1', '::1]', ':::'])(
    'returns null for %j',
    (text) => {
      expect(normalizeIp(text)).toBeNull();
    },
  );
});

describe('splitHostPort', () => {
  it.each([
    ['mail.example.org', { host: 'mail.example.org', port: null }],
    ['mail.example.org:25', { host: 'mail.example.org', port: '25' }],
    ['127.0.0.1:smtp', { host: '127.0.0.1', port: 'smtp' }],
    ['host:', { host: 'host', port: '' }],
    [':25', { host: '', port: '25' }],
    ['::1', { host: '::1', port: null }],
    ['2001:db8::1', { host: '2001:db8::1', port: null }],
    ['[::1]', { host: '::1', port: null }],
    ['[::1]:8080', { host: '::1', port: '8080' }],
    ['[::1]:', { host: '::1', port: '' }],
    ['[127.0.0.1]:25', { host: '127.0.0.1', port: '25' }],
    ['', { host: '', port: null }],
  ])('splits %j', (text, parts) => {
    expect(splitHostPort(text)).toEqual(parts);
  });

  it.each(['[::1', '[::1]25', '[::1]x:25'])('rejects the malformed bracket form %j', (text) => {
    expect(splitHostPort(text)).toBeNull();
  });
});

describe('parseServer', () => {
  it.each([
    ['mail.example.org', { host: 'mail.example.org', port: null }],
    ['Mail.Example.ORG:25', { host: 'mail.example.org', port: 25 }],
    ['mail.example.org:smtp', { host: 'mail.example.org', port: 25 }],
    ['127.0.0.1', { host: '127.0.0.1', port: null }],
    ['127.0.0.1:8080', { host: '127.0.0.1', port: 8080 }],
    ['::1', { host: '::1', port: null }],
    ['2001:DB8:0:0:0:0:0:1', { host: '2001:db8::1', port: null }],
    ['[::1]', { host: '::1', port: null }],
    ['[::1]:8080', { host: '::1', port: 8080 }],
    ['[2001:DB8::0001]:pop3', { host: '2001:db8::1', port: 110 }],
  ])('parses %j', (text, value) => {
    expect(parseServer(text, resolve)).toEqual({ ok: true, value });
  });

  it.each([
    ['', 'invalid server "": expected host[:port]'],
    [':25', 'invalid server ":25": expected host[:port]'],
    ['[::1', 'invalid server "[::1": expected host[:port]'],
    ['[::1]25', 'invalid server "[::1]25": expected host[:port]'],
    ['ho st', 'invalid server host "ho st"'],
    ['host!name:25', 'invalid server host "host!name"'],
    ['mail/x:25', 'invalid server host "mail/x"'],
    ['host:', 'server "host:": empty port'],
    ['host:0', 'server "host:0": port 0 is out of range (1-65535)'],
    ['host:65536', 'server "host:65536": port 65536 is out of range (1-65535)'],
    ['host:nosuch', 'server "host:nosuch": unknown service name "nosuch"'],
    ['host:-1', 'server "host:-1": invalid port "-1"'],
    ['[::1]:0', 'server "[::1]:0": port 0 is out of range (1-65535)'],
  ])('rejects %j', (text, error) => {
    expect(parseServer(text, resolve)).toEqual({ ok: false, error });
  });

  // Several colons without brackets are only accepted as a bare IPv6 literal;
  // "host:25:1" is neither an IPv6 address nor host[:port].
  it.each(['example.org:25:1', 'a:b:c'])('rejects %j, which has colons but is not an IPv6 literal', (text) => {
    expect(parseServer(text, resolve).ok).toBe(false);
  });
});

describe('parseBind', () => {
  it.each([
    ['8080', { iface: null, port: 8080 }],
    ['smtp', { iface: null, port: 25 }],
    ['127.0.0.1:8080', { iface: '127.0.0.1', port: 8080 }],
    ['192.168.1.1:smtp', { iface: '192.168.1.1', port: 25 }],
    ['[::1]:8080', { iface: '::1', port: 8080 }],
    ['[0:0:0:0:0:0:0:1]:25', { iface: '::1', port: 25 }],
    ['[2001:DB8::1]:25', { iface: '2001:db8::1', port: 25 }],
  ])('parses %j', (text, value) => {
    expect(parseBind(text, resolve)).toEqual({ ok: true, value });
  });

  // Port 0 (ephemeral) is a command-line extension handled by cli.ts around
  // parseBind; parseBind itself keeps the 1-65535 range of the config file.
  it.each(['0', '127.0.0.1:0', '[::1]:0'])('rejects port 0 in %j', (text) => {
    expect(parseBind(text, resolve)).toEqual({ ok: false, error: 'port 0 is out of range (1-65535)' });
  });

  it.each([
    ['', 'empty port'],
    ['localhost:80', 'invalid interface "localhost": expected an IP address'],
    ['eth0:80', 'invalid interface "eth0": expected an IP address'],
    ['127.0.0.1:', 'empty port'],
    ['127.0.0.1:65536', 'port 65536 is out of range (1-65535)'],
    ['127.0.0.1:nosuch', 'unknown service name "nosuch"'],
    ['127.0.0.1:x y', 'invalid port "x y"'],
    ['::1', 'invalid port "::1"'],
    ['[::1]', 'invalid port "::1"'],
    ['[::1', 'invalid address "[::1": expected [interface:]port'],
    ['[::1]80', 'invalid address "[::1]80": expected [interface:]port'],
  ])('rejects %j', (text, error) => {
    expect(parseBind(text, resolve)).toEqual({ ok: false, error });
  });
});

describe('plainAddress', () => {
  it.each([
    ['::ffff:127.0.0.2', '127.0.0.2'],
    ['::ffff:192.168.1.1', '192.168.1.1'],
    ['127.0.0.1', '127.0.0.1'],
    ['::1', '::1'],
    ['2001:db8::1', '2001:db8::1'],
    ['::ffff:7f00:1', '::ffff:7f00:1'],
    ['::ffff:', '::ffff:'],
  ])('maps %j to %j', (addr, plain) => {
    expect(plainAddress(addr)).toBe(plain);
  });

  it('returns an empty string for a missing address', () => {
    expect(plainAddress(undefined)).toBe('');
  });
});

describe('formatHostPort', () => {
  it.each([
    ['127.0.0.1', 25, '127.0.0.1:25'],
    ['mail.example.org', 110, 'mail.example.org:110'],
    ['::1', 8080, '[::1]:8080'],
    ['2001:db8::1', 25, '[2001:db8::1]:25'],
  ])('formats %s port %d as %s', (host, port, text) => {
    expect(formatHostPort(host, port)).toBe(text);
  });
});
