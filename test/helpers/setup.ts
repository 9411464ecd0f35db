/**
 * The per-file scaffolding the suites share, registered with jest's hooks:
 * a temporary directory that lives as long as the file's tests, the cleanup
 * after each test, and the handler fixtures of the privileged tests. Call
 * these at the top level of a test file (or of a describe block), after any
 * beforeAll that must run first: jest runs hooks in the order they were
 * registered.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { destroyAllClients } from './client';
import { killLaunched } from './daemon';
import { fixture, handlers, releaseFixtures } from './fixtures';
import { executable } from './inetd';
import { killProcesses } from './kill';
import { requireRoot } from './root';
import { closeAllServers } from './servers';

export interface TempDir {
  /** The directory (made in beforeAll; '' before that). */
  readonly path: string;
  /**
   * A new config file `tcpproxy-N.conf` in it, mode 0600 (tcpproxy refuses
   * others' files when run as root): `text` as it is, or `lines`, each
   * ended by a newline.
   */
  config(content: string | readonly string[]): string;
}

/**
 * A fresh directory under the system's temporary directory named
 * `prefix` + random, made in beforeAll (then chmod `mode`, when given: e.g.
 * 0755 for handlers running as other ids) and removed with its contents in
 * afterAll.
 */
export function useTempDir(prefix: string, mode?: number): TempDir {
  let dir = '';
  let configs = 0;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    if (mode !== undefined) fs.chmodSync(dir, mode);
  });
  afterAll(() => {
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
    dir = '';
  });
  return {
    get path(): string {
      return dir;
    },
    config(content: string | readonly string[]): string {
      const file = path.join(dir, `tcpproxy-${++configs}.conf`);
      fs.writeFileSync(file, typeof content === 'string' ? content : content.join('\n') + '\n', { mode: 0o600 });
      return file;
    },
  };
}

/**
 * The cleanup after each test: every client destroyed
 * (helpers/client), every process of helpers/daemon still running killed
 * with its tree (killLaunched), then `more` in order (awaited: other
 * processes the file started), then every upstream server closed
 * (helpers/servers).
 */
export function cleanUpAfterEach(...more: ReadonlyArray<() => unknown>): void {
  afterEach(async () => {
    destroyAllClients();
    await killLaunched();
    for (const step of more) await step();
    await closeAllServers();
  });
}

/** Kills the processes carrying each token (helpers/kill killProcesses) and empties the list: a cleanUpAfterEach step. */
export function killTokens(tokens: string[]): void {
  for (const t of tokens.splice(0)) killProcesses(t);
}

/**
 * For files whose handlers and ACPs run as unprivileged ids: root required
 * and the handler fixtures prepared (helpers/fixtures handlers()) in
 * beforeAll, their copy, if one was made, released in afterAll.
 */
export function useHandlerFixtures(): void {
  beforeAll(() => {
    requireRoot();
    handlers();
  });
  afterAll(() => {
    releaseFixtures();
  });
}

/** Throws unless each of the inetd fixture scripts `names` (helpers/fixtures fixture) is executable. */
export function assertExecutableFixtures(names: readonly string[]): void {
  for (const f of names) {
    if (!executable(fixture(f))) throw new Error(`${fixture(f)} must be executable (chmod 755)`);
  }
}
