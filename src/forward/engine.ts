/**
 * The forwarding engine of this process, chosen once: `splice` (the native
 * pump, the default) or `js` (Node streams, the portable reference), by
 * TCPPROXY_ENGINE=splice|js.
 */
import type * as Js from './js';
import { spliceEngine } from './splice';
import type { Engine } from './types';

/**
 * Loads both engines now: the JS engine is required on first use (inetd
 * mode's one-connection processes seldom need it), and a process about to
 * drop its privileges may not be able to read it later.
 */
export function preloadEngines(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('./js');
}

/** The engine for this process; `warn` is told about a TCPPROXY_ENGINE value that names neither. */
export function selectEngine(warn: (message: string) => void): Engine {
  const wanted = process.env['TCPPROXY_ENGINE'];
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  if (wanted === 'js') return (require('./js') as typeof Js).jsEngine;
  if (wanted !== undefined && wanted !== '' && wanted !== 'splice') {
    warn(`warning: TCPPROXY_ENGINE="${wanted}" is neither "splice" nor "js": using splice`);
  }
  return spliceEngine;
}
