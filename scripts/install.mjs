#!/usr/bin/env node
// The package's install script: builds the C++ addon with node-gyp, as npm
// would for a package with a binding.gyp, after checking that the tools the
// build needs are there. Without them node-gyp fails late, with a Python
// traceback or a make error that does not say what to install; this says it
// in one line. Plain JavaScript with no dependencies: it runs before
// anything of the package is built.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The first executable called `name` on PATH, or null. */
function onPath(name) {
  if (name.includes('/')) return isExecutable(name) ? name : null;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const file = path.join(dir === '' ? '.' : dir, name);
    if (isExecutable(file)) return file;
  }
  return null;
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

// node-gyp's own choices: $CXX (first word) for the compiler, make, and
// $PYTHON or python3 for gyp. Each with its Debian package.
const cxx = (process.env.CXX ?? '').trim().split(/\s+/)[0] || 'g++';
// node-gyp takes --python / npm_config_python, then $PYTHON, then python3, then python.
const named = process.env.npm_config_python || process.env.PYTHON || null;
const tools = [
  { names: [cxx], pkg: cxx === 'g++' ? 'g++' : null },
  { names: ['make'], pkg: 'make' },
  { names: named === null ? ['python3', 'python'] : [named], pkg: named === null ? 'python3' : null },
];
const missing = tools.filter((t) => t.names.every((n) => onPath(n) === null)).map((t) => ({ name: t.names[0], pkg: t.pkg }));
if (missing.length > 0) {
  const names = missing.map((t) => t.name).join(', ');
  const pkgs = missing.map((t) => t.pkg).filter((p) => p !== null);
  const fix = pkgs.length > 0 ? `; on Debian: apt-get install -y ${pkgs.join(' ')}` : '';
  process.stderr.write(`tcpproxy: building the native addon needs a C++ compiler, make and python3; not on PATH: ${names}${fix}\n`);
  process.exit(1);
}

// npm runs install scripts with npm_config_node_gyp naming its own node-gyp;
// outside npm, the node-gyp on PATH.
const gyp = process.env.npm_config_node_gyp;
const r = gyp ? spawnSync(process.execPath, [gyp, 'rebuild'], { stdio: 'inherit' }) : spawnSync('node-gyp', ['rebuild'], { stdio: 'inherit' });
if (r.error !== undefined) {
  process.stderr.write(`tcpproxy: cannot run node-gyp: ${r.error.message}\n`);
  process.exit(1);
}
if (r.status !== 0) process.exit(r.status ?? 1);

// An installed package (the tarball carries the bundled command): the V8
// code cache of the command, for this Node (scripts/bundle.mjs). A checkout
// has no dist/ yet; `npm run compile` writes it there.
const here = path.dirname(fileURLToPath(import.meta.url));
if (fs.existsSync(path.join(here, '..', 'dist', 'src', 'bin', 'main.js'))) {
  const c = spawnSync(process.execPath, [path.join(here, 'bundle.mjs'), '--cache-only'], { stdio: 'inherit' });
  if (c.status !== 0) process.exit(c.status ?? 1);
}
