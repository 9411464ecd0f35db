/**
 * What the log escapes (sys/log.ts escapeControls): every control character
 * a line could carry, C0, DEL and C1 alike, as `\xNN`, the Unicode line
 * separators as `\uNNNN`; everything else, a backslash and other non-ASCII
 * text included, as it is.
 */
import { escapeControls } from '../../src/sys/log';

describe('escapeControls', () => {
  test.each([
    ['plain text', 'plain text'],
    ['C0: ESC [2J, CR, BEL, NUL', 'a\x1b[2Jb\rc\x07d\x00', 'a\\x1b[2Jb\\x0dc\\x07d\\x00'],
    ['DEL', 'x\x7fy', 'x\\x7fy'],
    ['C1: CSI (U+009B) clears the screen as ESC [ does', 'forged\u009b2Jline', 'forged\\x9b2Jline'],
    ['C1: NEL (U+0085), the first and last C1', '\u0080a\u0085b\u009f', '\\x80a\\x85b\\x9f'],
    ['line and paragraph separators', 'one\u2028two\u2029three', 'one\\u2028two\\u2029three'],
    ['non-ASCII text and a backslash stay', 'café \u00a0 ü \\x41 \u4e2d', 'café \u00a0 ü \\x41 \u4e2d'],
  ])('%s', (_what, line, expected = line) => {
    expect(escapeControls(line)).toBe(expected);
  });
});
