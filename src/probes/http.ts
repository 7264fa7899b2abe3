import http from 'node:http';
import { z } from 'zod';
import { abortedDuring, countRead, describeSocketError } from './connection.js';
import { type Conversation, shorten } from './conversation.js';
import { requestText, statusMatches } from './http-head.js';
import { oncePer } from './memo.js';
import { describeTlsFailure } from './tls-options.js';
import { CheckFailed, defineProbe, type ProbeTarget, type ProbeVerdict } from './types.js';

const statusRange = z.union([
  z.number().int().min(100).max(599),
  z
    .string()
    .regex(/^\d{3}(-\d{3})?$/, 'expected a status code such as 200 or a range such as 200-399')
    .refine((s) => {
      const [lo, hi = lo] = s.split('-').map(Number);
      return lo! >= 100 && hi! <= 599 && lo! <= hi!;
    }, 'expected codes between 100 and 599, low to high'),
]);

export const httpOptions = {
  path: z.string().startsWith('/', 'a path starts with /').default('/').describe('The request path.'),
  method: z.enum(['GET', 'HEAD']).default('GET').describe('The request method.'),
  host: z
    .string()
    .min(1)
    .optional()
    .describe('The `Host` header; default: the address (and port), or `servername` for `https`.'),
  expectStatus: z
    .array(statusRange)
    .min(1)
    .default(['200-399'])
    .describe('Status codes (`200`) or ranges (`"300-399"`) that mean up. Redirects are reported, never followed.'),
  expectBody: z.string().min(1).optional().describe('A substring the body must contain.'),
  /** How much of the body is searched for expectBody. */
  maxBodyBytes: z
    .number()
    .int()
    .min(1)
    .max(16 * 1024 * 1024)
    .default(65_536)
    .describe('How much of the body is searched for `expectBody`.'),
};

export const httpSchema = z
  .strictObject({ type: z.literal('http'), ...httpOptions })
  .describe(
    'Up when the HTTP status matches `expectStatus`, and the body holds `expectBody`. A fresh connection per check.',
  );
export type HttpOptions = z.infer<typeof httpSchema>;

/** Formats an IPv6 literal for a Host header. */
function hostHeader(target: ProbeTarget, host: string | undefined): string {
  if (host !== undefined) return host;
  const addr = target.address.includes(':') ? `[${target.address}]` : target.address;
  return target.port === 80 ? addr : `${addr}:${target.port}`;
}

/**
 * One HTTP exchange on a fresh connection (no agent: a pooled socket would hide a
 * dead backend), no redirects followed, the body read only as far as needed and
 * never past `maxBodyBytes`. `request` is http.request or https.request.
 */
export function httpExchange(
  request: typeof http.request,
  target: ProbeTarget,
  options: Omit<HttpOptions, 'type'>,
  extra: http.RequestOptions,
  signal: AbortSignal,
): Promise<ProbeVerdict> {
  return new Promise<ProbeVerdict>((resolve, reject) => {
    let phase = 'connect';
    const req = request({
      ...extra,
      host: target.address,
      port: target.port,
      method: options.method,
      path: options.path,
      agent: false,
      signal,
      headers: {
        Host: hostHeader(target, options.host),
        'User-Agent': 'nf-healthd',
        Accept: '*/*',
        Connection: 'close',
      },
      maxHeaderSize: 16_384,
    });
    let socketRead: { bytesRead: number } | undefined;
    const finish = (verdict: ProbeVerdict | Error) => {
      if (socketRead) countRead(signal, socketRead.bytesRead);
      socketRead = undefined;
      req.destroy();
      if (verdict instanceof Error) reject(verdict);
      else resolve(verdict);
    };
    req.on('socket', (socket) => {
      socketRead = socket;
      // Over TLS, TCP connect is followed by the handshake before any response.
      socket.once(
        'connect',
        () => (phase = (socket as { encrypted?: boolean }).encrypted ? 'TLS handshake' : 'response'),
      );
      socket.once('secureConnect', () => (phase = 'response'));
    });
    req.on('error', (err) => {
      if (signal.aborted) return finish(abortedDuring(signal, phase));
      const code = (err as NodeJS.ErrnoException).code;
      if (code?.startsWith('HPE_')) return finish(new CheckFailed(`malformed HTTP response (${code})`));
      finish(new CheckFailed(phase === 'TLS handshake' ? describeTlsFailure(err) : describeSocketError(err, phase)));
    });
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const statusText = `${status} ${res.statusMessage ?? ''}`.trim();
      const where =
        status >= 300 && status < 400 && res.headers.location ? ` (Location: ${shorten(res.headers.location)})` : '';
      if (!statusMatches(status, options.expectStatus)) {
        return finish(new CheckFailed(`status ${statusText}${where}, expected ${options.expectStatus.join(', ')}`));
      }
      const needle = options.expectBody;
      if (needle === undefined || options.method === 'HEAD')
        return finish({ up: true, detail: `${statusText}${where}` });
      phase = 'body';
      let seen = '';
      let total = 0;
      res.setEncoding('latin1');
      res.on('data', (chunk: string) => {
        const room = options.maxBodyBytes - total;
        total += chunk.length;
        // Keep only what can still complete a match across chunk borders.
        seen = (seen + chunk.slice(0, Math.max(room, 0))).slice(-(needle.length + chunk.length));
        if (seen.includes(needle)) return finish({ up: true, detail: `${statusText}, body has "${shorten(needle)}"` });
        if (total >= options.maxBodyBytes)
          finish(
            new CheckFailed(
              `status ${statusText}, "${shorten(needle)}" not in the first ${options.maxBodyBytes} bytes of the body`,
            ),
          );
      });
      res.on('end', () => finish(new CheckFailed(`status ${statusText}, body lacks "${shorten(needle)}"`)));
      res.on('error', (err) => finish(new CheckFailed(describeSocketError(err, 'body'))));
    });
    req.end();
  });
}

/**
 * The check as a conversation for the lean engine when the status alone is the verdict
 * (no `expectBody`, or HEAD) and the path and Host need no escaping; undefined otherwise
 * (Node's http client then runs it, body search and all).
 */
const statusOnly = oncePer((options: HttpOptions): Conversation | undefined => {
  if (options.expectBody !== undefined && options.method !== 'HEAD') return undefined;
  if (requestText(options.method, options.path, options.host ?? '') === undefined) return undefined;
  const requests = new WeakMap<ProbeTarget, string>();
  const request = (target: ProbeTarget): string => {
    let text = requests.get(target);
    if (text === undefined) {
      // The Host from an address and a port needs no escaping; only options.host could.
      text = requestText(options.method, options.path, hostHeader(target, options.host))!;
      requests.set(target, text);
    }
    return text;
  };
  // farewell '': nothing more to say, but the backend closes first (Connection: close).
  return { steps: [{ kind: 'http', request, expectStatus: options.expectStatus, phase: 'response' }], farewell: '' };
});

export const httpProbe = {
  ...defineProbe({
    type: 'http',
    schema: httpSchema,
    run: (target, options, signal) => httpExchange(http.request, target, options, {}, signal),
  }),
  script: statusOnly,
};
