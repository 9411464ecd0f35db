// A worker's side of the shared limits, in a process of its own: attaches
// the region on fd 3 as worker INDEX, takes COUNT live-session places on
// slot SLOT and one per-source place there for 127.0.0.9, prints `held`,
// and waits to be killed (so its places are never given back by itself).
// With `lock`, it then also takes the per-source table's lock and keeps it
// (a worker stopped while holding it), and prints `locked` after `held`.
//
//   node limits-child.cjs INDEX SLOT COUNT [lock]
'use strict';
const path = require('node:path');

const dist = path.resolve(__dirname, '..', '..', '..', 'dist', 'src', 'sys');
const { native } = require(path.join(dist, 'native.js'));

const [index, slot, count] = process.argv.slice(2, 5).map(Number);
const lock = process.argv[5] === 'lock';
const addon = native();
addon.limitsAttach(3, index);
let taken = 0;
for (let i = 0; i < count; i++) if (addon.limitEnter(slot, 0)) taken++;
const source = addon.sourceEnter(slot, '127.0.0.9', 1);
if (lock) addon.limitsHoldLock();
process.stdout.write(`held ${taken} ${source}${lock ? ' locked' : ''}\n`);
// Kept alive by stdin, which the test never closes.
process.stdin.resume();
