/**
 * The root gate of the tests that need root: they run as root, and in CI
 * they never skip (without root there they fail).
 */

/** True when the tests run as root. */
export const IS_ROOT = process.geteuid?.() === 0;

/** CI is set (and not "false"/"0"): privileged tests never skip there. */
export const IN_CI = ((): boolean => {
  const v = process.env['CI'];
  return v !== undefined && v !== '' && v !== 'false' && v !== '0';
})();

/**
 * `describe` for tests that need root. As root, or in CI, they run (in CI
 * without root they fail in `requireRoot`); otherwise they are skipped, with
 * a warning saying so.
 */
export function describeAsRoot(name: string, fn: () => void): void {
  if (IS_ROOT || IN_CI) {
    describe(name, fn);
    return;
  }
  // eslint-disable-next-line no-console
  console.warn(`SKIPPED "${name}": test/privileged needs root (run as root, or set CI=true to make this a failure)`);
  describe.skip(name, fn);
}

/** Throws when not root (for beforeAll: in CI a missing root is a failure, not a skip). */
export function requireRoot(): void {
  if (!IS_ROOT) throw new Error('test/privileged must run as root (CI is set, so this is not skipped)');
}
