/**
 * The head of an HTTP/1.x response (status line and headers), read from a plain text
 * buffer: what the `http` check needs when the status alone is the verdict, so it can
 * run on the lean engine (engine.ts) instead of Node's http client. Malformed heads get
 * llhttp's error names, the words Node's parser gives the other path.
 */

/** Node's default limit for a response head (http.maxHeaderSize), which the other path uses too. */
export const MAX_HEAD_BYTES = 16_384;

export interface ResponseHead {
  /** Where the head ends in the buffer (after its blank line). */
  end: number;
  status: number;
  /** `200 OK`. */
  statusText: string;
  location?: string;
}

const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: ([^\r\n]*))?$/;
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/;

const malformed = (code: string) => `malformed HTTP response (${code})`;

/**
 * The final response head in `buffer` (1xx interim heads are skipped), a string saying
 * why it is malformed, or undefined when more bytes are needed.
 */
export function readHead(buffer: string): ResponseHead | string | undefined {
  let start = 0;
  for (;;) {
    // Early verdict on a wrong first word, before the whole head is in.
    const prefix = buffer.slice(start, start + 5);
    if (prefix !== 'HTTP/'.slice(0, prefix.length)) return malformed('HPE_INVALID_CONSTANT');
    const blank = buffer.indexOf('\r\n\r\n', start);
    if (blank < 0) return buffer.length - start > MAX_HEAD_BYTES ? malformed('HPE_HEADER_OVERFLOW') : undefined;
    if (blank - start > MAX_HEAD_BYTES) return malformed('HPE_HEADER_OVERFLOW');
    const lines = buffer.slice(start, blank).split('\r\n');
    const m = STATUS_LINE.exec(lines[0]!);
    if (!m) return malformed(lines[0]!.startsWith('HTTP/1.') ? 'HPE_INVALID_STATUS' : 'HPE_INVALID_VERSION');
    const status = Number(m[1]);
    let location: string | undefined;
    for (let i = 1; i < lines.length; i++) {
      const h = HEADER_LINE.exec(lines[i]!);
      if (!h) return malformed('HPE_INVALID_HEADER_TOKEN');
      if (location === undefined && h[1]!.length === 8 && h[1]!.toLowerCase() === 'location') location = h[2]!;
    }
    start = blank + 4;
    // 100 Continue, 103 Early Hints: the final response follows (as Node's client does).
    if (status >= 100 && status < 200 && status !== 101) continue;
    const statusText = `${status} ${m[2] ?? ''}`.trim();
    return location === undefined ? { end: start, status, statusText } : { end: start, status, statusText, location };
  }
}

/** The request, or undefined when the path or Host would need escaping (the Node path rejects those with words). */
export function requestText(method: string, path: string, host: string): string | undefined {
  if (/[^\x21-\x7e]/.test(path) || /[^\x20-\x7e]/.test(host)) return undefined;
  return `${method} ${path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: nf-healthd\r\nAccept: */*\r\nConnection: close\r\n\r\n`;
}

export function statusMatches(status: number, expect: readonly (number | string)[]): boolean {
  return expect.some((e) => {
    if (typeof e === 'number') return status === e;
    const [lo, hi = lo] = e.split('-').map(Number);
    return status >= lo! && status <= hi!;
  });
}
