import { z } from 'zod';
import { DEFAULT_BOUNDS } from './connection.js';
import { type Conversation, converse, type Step } from './conversation.js';
import { oncePer } from './memo.js';
import { pickTlsOptions, tlsOptions } from './tls-options.js';
import { defineProbe } from './types.js';

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
const scope = z.enum(['line', 'buffer']).default('line');

/** One step in the config; `send` strings go out as written (YAML "\r\n" escapes for line ends). */
const stepSchema = z.union([
  z.strictObject({ send: z.string().min(1).max(4096) }),
  z.strictObject({ expect: z.string().min(1).max(4096), in: scope }),
  z.strictObject({ expectRegex: regex, in: scope }),
  /** A multi-line reply in the SMTP/LMTP (`smtp`) or FTP (`ftp`) style whose code starts with these digits. */
  z.strictObject({
    expectReply: z.string().regex(/^\d{1,3}$/, 'expected 1 to 3 digits of a reply code'),
    style: z.enum(['smtp', 'ftp']).default('smtp'),
  }),
  /** TLS handshake here: as the first step for implicit TLS, after the STARTTLS exchange otherwise. */
  z.strictObject({ tls: z.literal(true) }),
]);
export type ExpectStep = z.infer<typeof stepSchema>;

export const expectSchema = z.strictObject({
  type: z.literal('expect'),
  steps: z.array(stepSchema).min(1).max(64),
  /** Sent once the verdict is known (say "QUIT\r\n"); what follows cannot change it. */
  farewell: z.string().min(1).max(4096).optional(),
  /** Bytes one check may read from the backend. */
  maxBytes: z
    .number()
    .int()
    .min(64)
    .max(16 * 1024 * 1024)
    .default(DEFAULT_BOUNDS.maxTotalBytes),
  ...tlsOptions,
});
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

/** The conversation of each check config, built (and its patterns compiled) once, not on every check. */
const conversationOf = oncePer(
  (options: ExpectOptions): Conversation => ({
    steps: expectSteps(options),
    bounds: { maxTotalBytes: options.maxBytes },
    ...(options.farewell !== undefined ? { farewell: options.farewell } : {}),
  }),
);

/**
 * The generic send/expect check (HAProxy's tcp-check): its steps run on the same
 * engine as the smtp check and the presets.
 */
export const expectProbe = defineProbe({
  type: 'expect',
  schema: expectSchema,
  run(target, options, signal) {
    return converse(target, conversationOf(options), signal);
  },
});
