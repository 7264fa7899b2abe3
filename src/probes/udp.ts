import { z } from 'zod';
import { shorten } from './conversation.js';
import { exchangeDatagram } from './datagram.js';
import { regex } from './expect.js';
import { oncePer } from './memo.js';
import { CheckFailed, defineProbe } from './types.js';

const hex = z
  .string()
  .transform((s) => s.replace(/\s+/g, ''))
  .pipe(z.string().regex(/^(?:[0-9A-Fa-f]{2})+$/, 'expected an even number of hex digits (spaces allowed)'));

/** Text sent and matched one byte per character, as the stream checks do. */
const text = z
  .string()
  .min(1)
  .refine(
    (s) => !/[\u0100-\uffff]/.test(s),
    'characters past \\xff are not one byte each: write the bytes as { hex: "..." }',
  );

/** Bytes as text or `{ hex: "..." }`. */
const bytes = z.union([text, z.strictObject({ hex })]);

export const udpSchema = z
  .strictObject({
    type: z.literal('udp'),
    /** The request datagram; YAML escapes ("\r\n", "\xff") for control bytes. */
    send: bytes.describe(
      'The request datagram: text (YAML escapes such as `"\\r\\n"`, `"\\xff"` for control bytes, one byte per character) or `{hex: "..."}`.',
    ),
    /** What the reply must contain (text or hex bytes) or match (`regex`); any reply is up without it. */
    expect: z
      .union([text, z.strictObject({ hex }), z.strictObject({ regex })])
      .optional()
      .describe(
        'What the reply must contain (text or `{hex: "..."}`) or match (`{regex: "..."}`); without it any reply is up.',
      ),
    /** Largest reply accepted, in bytes. */
    maxBytes: z.number().int().min(1).max(65_535).default(4096).describe('Largest reply accepted, in bytes.'),
  })
  .describe('Generic UDP send/expect: one request datagram; up when the first reply holds the expected bytes.');
export type UdpOptions = z.infer<typeof udpSchema>;

interface Matcher {
  accepts(reply: Buffer): boolean;
  wanted: string;
}

function toBuffer(value: string | { hex: string }): Buffer {
  return typeof value === 'string' ? Buffer.from(value, 'latin1') : Buffer.from(value.hex, 'hex');
}

function matcherOf(expect: UdpOptions['expect']): Matcher {
  if (expect === undefined) return { accepts: () => true, wanted: 'any reply' };
  if (typeof expect === 'object' && 'regex' in expect) {
    const pattern = new RegExp(expect.regex);
    return { accepts: (reply) => pattern.test(reply.toString('latin1')), wanted: `a reply matching /${expect.regex}/` };
  }
  const needle = toBuffer(expect);
  const shown = typeof expect === 'string' ? JSON.stringify(shorten(expect)) : `hex ${expect.hex}`;
  return { accepts: (reply) => reply.includes(needle), wanted: `a reply containing ${shown}` };
}

/** Payload and matcher of each check config, built (and the pattern compiled) once, not on every check. */
const compile = oncePer((options: UdpOptions) => ({ payload: toBuffer(options.send), ...matcherOf(options.expect) }));

/**
 * Generic UDP send/expect (HAProxy has none; keepalived's MISC_CHECK is the usual
 * stand-in): one request datagram, the first reply must hold the expected bytes.
 */
export const udpProbe = defineProbe({
  type: 'udp',
  schema: udpSchema,
  async run(target, options, signal) {
    const c = compile(options);
    const reply = await exchangeDatagram(target, c.payload, options.maxBytes, signal);
    const said = `${reply.length} bytes: "${shorten(reply.toString('latin1'))}"`;
    if (!c.accepts(reply)) throw new CheckFailed(`expected ${c.wanted}, got ${said}`);
    return { up: true, detail: said };
  },
});
