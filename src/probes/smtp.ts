import { z } from 'zod';
import { type Step, scriptedProbe } from './conversation.js';
import { pickTlsOptions, tlsOptions } from './tls-options.js';

const hostname = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$|^\[[0-9A-Fa-f:.]+\]$/,
    'expected a host name or an address literal such as [192.0.2.1]',
  );

/**
 * SMTP: the 220 greeting (RFC 5321 multi-line replies) is the verdict; with `ehlo`
 * the EHLO reply must be 250 as well. QUIT afterwards so the server logs a clean
 * session instead of a lost connection.
 */
export const smtpProbe = scriptedProbe({
  type: 'smtp',
  schema: z
    .strictObject({
      type: z.literal('smtp'),
      ehlo: hostname
        .optional()
        .describe(
          'Send EHLO with this name after the greeting and require 250 (with `starttls`, default `localhost`).',
        ),
      /** EHLO, require STARTTLS among the extensions, STARTTLS, handshake, EHLO again. */
      starttls: z
        .boolean()
        .default(false)
        .describe(
          'EHLO, require STARTTLS among the extensions, STARTTLS, TLS handshake (certificate judged), EHLO again.',
        ),
      ...tlsOptions,
    })
    .describe('Up when the greeting is 220 (RFC 5321 multi-line replies), and with `ehlo` the EHLO reply 250.'),
  script(options) {
    const steps: Step[] = [{ kind: 'reply', code: '220', phase: 'greeting' }];
    if (options.starttls) {
      const ehlo = `EHLO ${options.ehlo ?? 'localhost'}\r\n`;
      steps.push(
        { kind: 'send', data: ehlo, phase: 'EHLO' },
        {
          kind: 'reply',
          code: '250',
          phase: 'EHLO',
          require: { pattern: /^250[ -]STARTTLS\b/i, missing: 'STARTTLS not offered' },
        },
        { kind: 'send', data: 'STARTTLS\r\n', phase: 'STARTTLS' },
        { kind: 'reply', code: '220', phase: 'STARTTLS' },
        { kind: 'tls', options: pickTlsOptions(options), phase: 'TLS handshake' },
        { kind: 'send', data: ehlo, phase: 'EHLO after STARTTLS' },
        { kind: 'reply', code: '250', phase: 'EHLO after STARTTLS' },
      );
    } else if (options.ehlo !== undefined) {
      steps.push(
        { kind: 'send', data: `EHLO ${options.ehlo}\r\n`, phase: 'EHLO' },
        { kind: 'reply', code: '250', phase: 'EHLO' },
      );
    }
    return { steps, farewell: 'QUIT\r\n' };
  },
});
