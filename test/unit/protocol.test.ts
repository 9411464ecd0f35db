/**
 * What the master accepts from a worker (src/process/protocol.ts
 * parseToMaster), for the status answers of issue 15: a StatusPart of the
 * exact shape parses to itself; every other shape, an oversized part or an
 * over-long text is refused with a reason (the master then kills the worker).
 */
import { parseToMaster, STATUS_PART_ITEMS } from '../../src/process/protocol';

const service = { key: '127.0.0.1:8000', bytesUp: 10, bytesDown: 20, down: [1] };
const session = { id: 7, client: '127.0.0.1:40000', service: '127.0.0.1:8000', phase: 'forwarding', ageMs: 5, bytesUp: 1, bytesDown: 2, idleMs: 3 };
const part = { type: 'status', req: 1, services: [service], sessions: [session], last: true };

describe('parseToMaster: status parts', () => {
  it('a well-formed part parses to itself (nulls where a handler has the client)', () => {
    expect(parseToMaster(part)).toEqual(part);
    const handler = { ...session, phase: 'handler', bytesUp: null, bytesDown: null, idleMs: null };
    expect(parseToMaster({ ...part, sessions: [handler] })).toEqual({ ...part, sessions: [handler] });
  });

  it.each([
    ['a missing field', { type: 'status', req: 1, services: [], sessions: [] }, 'a "status" without exactly req, services, sessions and last'],
    ['an extra field', { ...part, more: 1 }, 'a "status" without exactly req, services, sessions and last'],
    ['a negative request number', { ...part, req: -1 }, 'a "status" with fields of the wrong type'],
    ['too many entries', { ...part, sessions: Array.from({ length: STATUS_PART_ITEMS }, () => session) }, `a "status" of more than ${STATUS_PART_ITEMS} entries`],
    ['a service with a fraction', { ...part, services: [{ ...service, bytesUp: 1.5 }] }, 'a "status" service of the wrong shape'],
    ['a service that is null', { ...part, services: [null] }, 'a "status" service that is not an object'],
    ['a long key', { ...part, services: [{ ...service, key: 'k'.repeat(121) }] }, 'a "status" service of the wrong shape'],
    ['servers down that are not places', { ...part, services: [{ ...service, down: ['a'] }] }, 'a "status" service with a bad list of servers down'],
    ['too many servers down', { ...part, services: [{ ...service, down: Array.from({ length: 65 }, (_, i) => i) }] }, 'a "status" service with a bad list of servers down'],
    ['a session with a string id', { ...part, sessions: [{ ...session, id: '7' }] }, 'a "status" session of the wrong shape'],
    ['a session with an extra field', { ...part, sessions: [{ ...session, pid: 1 }] }, 'a "status" session of the wrong shape'],
  ])('refuses %s', (_what, message, reason) => {
    expect(parseToMaster(message)).toBe(reason);
  });
});
