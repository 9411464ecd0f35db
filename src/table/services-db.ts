/** Port names from /etc/services (tcp entries), read once. */
import * as fs from 'node:fs';
import type { PortResolver } from './address';

let table: Map<string, number> | undefined;

function load(file: string): Map<string, number> {
  const m = new Map<string, number>();
  let text = '';
  try {
    text = fs.readFileSync(file, 'latin1');
  } catch {
    return m;
  }
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    const [name, portProto, ...aliases] = line.split(/\s+/);
    const match = /^([0-9]+)\/tcp$/.exec(portProto ?? '');
    if (!name || !match) continue;
    const port = Number(match[1]);
    for (const n of [name, ...aliases]) if (!m.has(n)) m.set(n, port);
  }
  return m;
}

/** Resolves a service name to its tcp port through /etc/services. */
export const etcServices: PortResolver = (name) => {
  table ??= load('/etc/services');
  return table.get(name) ?? null;
};
