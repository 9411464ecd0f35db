/**
 * User text inside messages: control characters (C0, DEL, C1, the Unicode
 * line separators) are escaped, so a stray CR or an escape sequence in a
 * config file or an argument cannot rewrite a terminal line or split a
 * syslog record.
 */
export function escapeText(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    switch (c) {
      case '\n':
        return '\\n';
      case '\r':
        return '\\r';
      case '\t':
        return '\\t';
      default: {
        const code = c.charCodeAt(0);
        return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
      }
    }
  });
}

/** `"text"` with control characters escaped. */
export function quote(text: string): string {
  return `"${escapeText(text)}"`;
}
