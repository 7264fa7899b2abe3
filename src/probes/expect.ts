import { z } from 'zod';
import { DEFAULT_BOUNDS } from './connection.js';
import { type Conversation, type Step, scriptedProbe } from './conversation.js';
import { pickTlsOptions, tlsOptions } from './tls-options.js';

export const regex = z
  .string()
  .min(1)
  .refine((source) => {
    try {
      new RegExp(source);
      return true;
    } catch {
      return false;
    }
  }, 'expected a valid regular expression');

/** Where an expectation looks: the next line, or everything received until it shows up. */
const scope = z
  .enum(['line', 'buffer'])
  .default('line')
  .describe('`line`: the next line must match; `buffer`: read on until the text shows up in what arrives.');

/** One step in the config; `send` strings go out as written (YAML "\r\n" escapes for line ends). */
const stepSchema = z.union([
  z.strictObject({
    send: z
      .string()
      .min(1)
      .max(4096)
      .describe('Send the text as written (YAML double quotes turn `\\r\\n` into CR LF).'),
  }),
  z.strictObject({
    expect: z
      .string()
      .min(1)
      .max(4096)
      .describe('The next line must start with this text (with `in: buffer`: read on until it shows up).'),
    in: scope,
  }),
  z.strictObject({
    expectRegex: regex.describe(
      'The next line must match this regular expression, JavaScript syntax (with `in: buffer`: read on until it does).',
    ),
    in: scope,
  }),
  /** A multi-line reply in the SMTP/LMTP (`smtp`) or FTP (`ftp`) style whose code starts with these digits. */
  z.strictObject({
    expectReply: z
      .string()
      .regex(/^\d{1,3}$/, 'expected 1 to 3 digits of a reply code')
      .describe('A multi-line reply whose code starts with these digits.'),
    style: z
      .enum(['smtp', 'ftp'])
      .default('smtp')
      .describe('`smtp`: every line of the reply is `ddd-`; `ftp`: free text lines until `ddd `.'),
  }),
  /** TLS handshake here: as the first step for implicit TLS, after the STARTTLS exchange otherwise. */
  z.strictObject({
    tls: z
      .literal(true)
      .describe(
        "A TLS handshake here, with the check's TLS options: first for implicit TLS, after a STARTTLS-style exchange otherwise.",
      ),
  }),
]);
export type ExpectStep = z.infer<typeof stepSchema>;

export const expectSchema = z
  .strictObject({
    type: z.literal('expect'),
    steps: z.array(stepSchema).min(1).max(64).describe('The send/expect script, run in order; every step must pass.'),
    /** Sent once the verdict is known (say "QUIT\r\n"); what follows cannot change it. */
    farewell: z
      .string()
      .min(1)
      .max(4096)
      .optional()
      .describe('Sent once the verdict is known (such as `"QUIT\\r\\n"`); what follows cannot change it.'),
    /** Bytes one check may read from the backend. */
    maxBytes: z
      .number()
      .int()
      .min(64)
      .max(16 * 1024 * 1024)
      .default(DEFAULT_BOUNDS.maxTotalBytes)
      .describe('Bytes the whole exchange may read from the backend.'),
    ...tlsOptions,
  })
  .describe('Up when every step of a send/expect script passes.');
export type ExpectOptions = z.infer<typeof expectSchema>;

/** Turns the config's steps into engine steps. */
export function expectSteps(options: ExpectOptions): Step[] {
  return options.steps.map((step, i): Step => {
    const phase = `step ${i + 1}`;
    if ('send' in step) return { kind: 'send', data: step.send, phase };
    if ('expect' in step)
      return step.in === 'line'
        ? { kind: 'line', match: step.expect, phase }
        : { kind: 'search', match: step.expect, phase };
    if ('expectRegex' in step) {
      const match = new RegExp(step.expectRegex);
      return step.in === 'line' ? { kind: 'line', match, phase } : { kind: 'search', match, phase };
    }
    if ('expectReply' in step) return { kind: 'reply', code: step.expectReply, style: step.style, phase };
    return { kind: 'tls', options: pickTlsOptions(options), phase: `${phase} (TLS handshake)` };
  });
}

/**
 * The generic send/expect check (HAProxy's tcp-check): its steps run on the same
 * engine as the smtp check and the presets.
 */
export const expectProbe = scriptedProbe({
  type: 'expect',
  schema: expectSchema,
  script: (options): Conversation => ({
    steps: expectSteps(options),
    bounds: { maxTotalBytes: options.maxBytes },
    ...(options.farewell !== undefined ? { farewell: options.farewell } : {}),
  }),
});
