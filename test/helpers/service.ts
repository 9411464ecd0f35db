/** Building expected Service records in the unit tests. */
import { DEFAULT_BOUNDS, DEFAULT_LOGLEVEL, DEFAULT_PREFIX, DEFAULT_PROXYING, DEFAULT_SANDBOX, DEFAULT_TIMEOUT_SEC, NO_ACCESS_RULES, type Service } from '../../src/table/service';

/** The fields of a Service that nothing set: the built-in defaults. */
export const SERVICE_DEFAULTS = {
  acp: null,
  timeoutSec: DEFAULT_TIMEOUT_SEC,
  prefix: DEFAULT_PREFIX,
  writefile: null,
  uid: null,
  gid: null,
  access: NO_ACCESS_RULES,
  sandbox: DEFAULT_SANDBOX,
  bounds: DEFAULT_BOUNDS,
  proxy: DEFAULT_PROXYING,
  loglevel: DEFAULT_LOGLEVEL,
} as const satisfies Partial<Service>;
