/**
 * `scheme://user:password@host` → `scheme://***@host`, for every URL in the text: what a log line, an error or a
 * refusal may print of a connection URL. Greedy up to the last `@` before a space, so a password with an
 * unescaped `@` in it is hidden whole; too much hidden is safe, too little is not.
 */
export function redactUrl(text: string): string {
  return text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)\S*@/gi, '$1***@');
}
