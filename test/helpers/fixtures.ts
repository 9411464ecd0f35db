/**
 * The fixture files of test/fixtures and the small files tests write.
 *
 * Fixture scripts are run by handlers and ACPs as unprivileged ids (65535
 * and others), which must be able to reach and read them. A checkout below
 * a directory only root may enter (a private temporary directory, root's
 * home) does not allow that, so the scripts are then used from a copy in a
 * fresh, world-searchable temporary directory, removed by releaseFixtures()
 * (or, as a fallback, when the test process exits).
 */
import { randomInt } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const FIXTURES_IN_TREE = path.resolve(__dirname, '..', 'fixtures');

/** Why uid 65535 could not reach the files in `dir`, or null. */
export function unusableByOthers(dir: string): string | null {
  for (let d = dir; ; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o001) === 0) return `${d} is not searchable by others`;
    if (d === path.dirname(d)) return null;
  }
}

/** sub → the directory in use (the tree itself or a copy). */
const inUse = new Map<string, string>();

/** The directory `test/fixtures/<sub>`, or a usable copy of it; every file mode 0755. */
export function usableFixtures(sub: string): string {
  const known = inUse.get(sub);
  if (known !== undefined) return known;
  const tree = path.join(FIXTURES_IN_TREE, sub);
  for (const f of fs.readdirSync(tree)) fs.chmodSync(path.join(tree, f), 0o755);
  let dir = tree;
  if (unusableByOthers(tree) !== null) {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `tcpproxy-fixtures-${sub}-`));
    inUse.set(sub, dir);
    fs.chmodSync(dir, 0o755);
    for (const f of fs.readdirSync(tree)) {
      fs.copyFileSync(path.join(tree, f), path.join(dir, f));
      fs.chmodSync(path.join(dir, f), 0o755);
    }
    const problem = unusableByOthers(dir);
    if (problem !== null) {
      releaseFixtures();
      throw new Error(`fixtures cannot be made usable by unprivileged ids: ${problem}`);
    }
    // A fallback only: jest may end its workers without an 'exit' event, so test files call releaseFixtures().
    process.once('exit', releaseFixtures);
  }
  inUse.set(sub, dir);
  return dir;
}

/** Removes the copies usableFixtures() made, if any (for afterAll). */
export function releaseFixtures(): void {
  for (const [sub, dir] of inUse) {
    if (dir !== path.join(FIXTURES_IN_TREE, sub)) fs.rmSync(dir, { recursive: true, force: true });
  }
  inUse.clear();
}

/** The directory of the handler fixtures (test/fixtures/handlers), usable by the unprivileged service ids. */
export function handlers(): string {
  return usableFixtures('handlers');
}

/** Absolute path of a handler fixture (test/fixtures/handlers). */
export function handler(name: string): string {
  return path.join(handlers(), name);
}

/** Absolute path of an inetd fixture (test/fixtures/inetd): handler and ACP scripts run as the service ids. */
export function fixture(name: string): string {
  return path.join(usableFixtures('inetd'), name);
}

/** A number nobody else uses as an argument: e.g. `30.48213977` (a valid sleep(1) duration). */
export function uniqueSeconds(whole = 30): string {
  return `${whole}.${String(randomInt(1e7, 1e8))}`;
}

/** Writes a config file only its owner can write (tcpproxy refuses others' when root). */
export function writeConfig(dir: string, name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text, { mode: 0o600 });
  return file;
}
