/**
 * Fixture scripts run by handlers and ACPs as unprivileged ids (65535 and
 * others), which must be able to reach and read them. A checkout below a
 * directory only root may enter (a private temporary directory, root's home)
 * does not allow that, so the scripts are then used from a copy in a fresh,
 * world-searchable temporary directory, removed when the test process exits.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const FIXTURES_IN_TREE = path.resolve(__dirname, '..', 'fixtures');

function searchableByOthers(dir: string): boolean {
  for (let d = dir; ; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o001) === 0) return false;
    if (d === path.dirname(d)) return true;
  }
}

const cache = new Map<string, string>();

/** The directory `test/fixtures/<sub>`, or a usable copy of it; every file mode 0755. */
export function usableFixtures(sub: string): string {
  const known = cache.get(sub);
  if (known !== undefined) return known;
  const tree = path.join(FIXTURES_IN_TREE, sub);
  for (const f of fs.readdirSync(tree)) fs.chmodSync(path.join(tree, f), 0o755);
  let dir = tree;
  if (!searchableByOthers(tree)) {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `tcpproxy-fixtures-${sub}-`));
    fs.chmodSync(dir, 0o755);
    for (const f of fs.readdirSync(tree)) {
      fs.copyFileSync(path.join(tree, f), path.join(dir, f));
      fs.chmodSync(path.join(dir, f), 0o755);
    }
    if (!searchableByOthers(dir)) throw new Error(`fixtures cannot be made usable by unprivileged ids: ${dir}`);
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  }
  cache.set(sub, dir);
  return dir;
}
