/**
 * Where a program of this directory (worker.js, metrics.js) is, for fork():
 * beside this module, or, from the bundled command in dist/src/bin/
 * (scripts/bundle.mjs), one directory over.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export function processProgram(file: string): string {
  const here = path.join(__dirname, file);
  return fs.existsSync(here) ? here : path.join(__dirname, '..', 'process', file);
}
