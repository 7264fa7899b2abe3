import { z } from 'zod';
import { type Conversation, type Step, scriptedProbe } from './conversation.js';
import { pickTlsOptions, type TlsOptions, tlsOptions } from './tls-options.js';

/**
 * Send/expect presets: each protocol check is a step list for the one engine in
 * conversation.ts (HAProxy's tcp-check idea), never a read loop of its own.
 */

/** `tls: true` runs the whole exchange over TLS (POP3S, IMAPS, Redis with TLS). */
const implicitTls = {
  tls: z.boolean().default(false).describe('Implicit TLS: the whole exchange over TLS (POP3S, IMAPS, Redis with TLS).'),
  ...tlsOptions,
};

function withTls(options: TlsOptions & { tls: boolean }, steps: Step[]): Step[] {
  return options.tls ? [{ kind: 'tls', options: pickTlsOptions(options), phase: 'TLS handshake' }, ...steps] : steps;
}

const hostname = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$/, 'expected a host name');

/** POP3 (RFC 1939): the greeting starts `+OK`. */
export const pop3Probe = scriptedProbe({
  type: 'pop3',
  schema: z
    .strictObject({ type: z.literal('pop3'), ...implicitTls })
    .describe('Up when the greeting starts `+OK`; then QUIT.'),
  script: (options) => ({
    steps: withTls(options, [{ kind: 'line', match: '+OK', phase: 'greeting' }]),
    farewell: 'QUIT\r\n',
  }),
});

/** IMAP (RFC 9051): the greeting is `* OK` (`* PREAUTH` is a session already, `* BYE` a refusal). */
export const imapProbe = scriptedProbe({
  type: 'imap',
  schema: z
    .strictObject({ type: z.literal('imap'), ...implicitTls })
    .describe('Up when the greeting is `* OK` (or `* PREAUTH`); then `a1 LOGOUT`.'),
  script: (options) => ({
    steps: withTls(options, [{ kind: 'line', match: /^\* (OK|PREAUTH)\b/i, phase: 'greeting' }]),
    farewell: 'a1 LOGOUT\r\n',
  }),
});

/** FTP (RFC 959): a 220 greeting, multi-line replies with free text between `220-` and `220 `. */
export const ftpProbe = scriptedProbe({
  type: 'ftp',
  schema: z
    .strictObject({ type: z.literal('ftp') })
    .describe('Up when the greeting is 220 (RFC 959 multi-line replies); then QUIT.'),
  script: (_options) => ({
    steps: [{ kind: 'reply', code: '220', style: 'ftp', phase: 'greeting' }],
    farewell: 'QUIT\r\n',
  }),
});

/**
 * SSH (RFC 4253): the version line `SSH-2.0-` (or `SSH-1.99-`), possibly after other
 * lines. We answer with our own version line before closing: a client that says
 * nothing makes sshd log "did not receive identification string", which fail2ban bans.
 */
export const sshProbe = scriptedProbe({
  type: 'ssh',
  schema: z
    .strictObject({ type: z.literal('ssh') })
    .describe(
      'Up when the server sends its `SSH-2.0-` (or `SSH-1.99-`) version line; answered with ours before closing.',
    ),
  script: (_options) => ({
    steps: [{ kind: 'search', match: /^SSH-(?:2\.0|1\.99)-[^\r\n]*\r?\n/m, phase: 'version' }],
    farewell: 'SSH-2.0-nf-healthd\r\n',
    // RFC 4253 allows lines before the version; 255 bytes each, so a few KiB is plenty.
    bounds: { maxTotalBytes: 8192 },
  }),
});

/** Redis: PING answered by `+PONG` (a `-NOAUTH` or `-LOADING` answer is down, with the words). */
export const redisProbe = scriptedProbe({
  type: 'redis',
  schema: z
    .strictObject({ type: z.literal('redis'), ...implicitTls })
    .describe('Up when `PING` is answered `+PONG` (`-NOAUTH`, `-LOADING` are down with their words); then QUIT.'),
  script: (options) => ({
    steps: withTls(options, [
      { kind: 'send', data: 'PING\r\n', phase: 'PING' },
      { kind: 'line', match: '+PONG', phase: 'PING' },
    ]),
    farewell: 'QUIT\r\n',
  }),
});

/** LMTP (RFC 2033): a 220 greeting, then LHLO answered by a (multi-line) 250. */
export const lmtpProbe = scriptedProbe({
  type: 'lmtp',
  schema: z
    .strictObject({
      type: z.literal('lmtp'),
      lhlo: hostname.default('localhost').describe('The name sent with LHLO.'),
    })
    .describe('Up when the greeting is 220 and LHLO is answered 250; then QUIT.'),
  script(options): Conversation {
    return {
      steps: [
        { kind: 'reply', code: '220', phase: 'greeting' },
        { kind: 'send', data: `LHLO ${options.lhlo}\r\n`, phase: 'LHLO' },
        { kind: 'reply', code: '250', phase: 'LHLO' },
      ],
      farewell: 'QUIT\r\n',
    };
  },
});
