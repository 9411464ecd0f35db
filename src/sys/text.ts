// C0, DEL, C1, U+2028 and U+2029.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/**
 * User text inside messages: control characters (C0, DEL, C1, the Unicode
 * line separators) are escaped, so a stray CR or an escape sequence in a
 * config file or an argument cannot rewrite a terminal line or split a
 * syslog record.
 */
export function escapeText(text: string): string {
  return text.replace(CONTROLS, (c) => {
    switch (c) {
      case '\n':
        return '\\n';
      case '\r':
        return '\\r';
      case '\t':
        return '\\t';
      default:
        return hexEscape(c);
    }
  });
}

/**
 * The same characters, each as `\xNN` (`\uNNNN` for the two line
 * separators): the form of the log (sys/log.ts), where a C1 control such as
 * U+009B (CSI) acts on a terminal as much as ESC [ does.
 */
export function escapeControlsHex(text: string): string {
  return CONTROL.test(text) ? text.replace(CONTROLS, hexEscape) : text;
}

function hexEscape(c: string): string {
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** `"text"` with control characters escaped. */
export function quote(text: string): string {
  return `"${escapeText(text)}"`;
}
