import { randomInt } from 'node:crypto';
import { z } from 'zod';
import { exchangeDatagram } from './datagram.js';
import {
  describeAnswer,
  dnsNameProblem,
  encodeQuery,
  encodeQuestion,
  parseReply,
  RCODES,
  RECORD_TYPES,
  type RecordType,
} from './dns-wire.js';
import { oncePer } from './memo.js';
import { CheckFailed, defineProbe } from './types.js';

const dnsName = z.string().superRefine((name, ctx) => {
  const problem = dnsNameProblem(name);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `not a DNS name: ${problem}` });
});
const recordType = z.enum(Object.keys(RECORD_TYPES) as [RecordType, ...RecordType[]]);
const rcode = z.enum(RCODES);

/** RFC 1035 4.2.1: a UDP reply to a query without EDNS is at most 512 bytes. */
export const DNS_UDP_MAX = 512;

export const dnsSchema = z
  .strictObject({
    type: z.literal('dns'),
    /** The name asked for; the root by default, as keepalived's DNS_CHECK does. */
    name: dnsName.default('.').describe("The name asked for; the root by default, as keepalived's DNS_CHECK does."),
    /** The record type asked for (`type` is the check's own key). */
    recordType: recordType.default('SOA').describe("The record type asked for (`type` is the check's own key)."),
    /** The response code(s) that mean up. */
    rcode: z
      .union([rcode, z.array(rcode).min(1)])
      .default('NOERROR')
      .describe('The response code, or a list of them, that means up.'),
    /** Up only with at least this many answers of `recordType`. */
    minAnswers: z
      .number()
      .int()
      .min(1)
      .max(1000)
      .optional()
      .describe('Up only with at least this many answers of `recordType`.'),
    /** Largest reply accepted, in bytes. */
    maxBytes: z
      .number()
      .int()
      .min(DNS_UDP_MAX)
      .max(65_535)
      .default(DNS_UDP_MAX)
      .describe('Largest reply accepted, in bytes (512: a UDP reply without EDNS, RFC 1035).'),
  })
  .describe(
    'One DNS query over UDP with a fresh random ID and source port: up when the reply carries that ID and question, an expected `rcode`, and with `minAnswers` that many records.',
  );
export type DnsOptions = z.infer<typeof dnsSchema>;

/** The question of each check config, encoded once, not on every check. */
const questionOf = oncePer((options: DnsOptions) => encodeQuestion(options.name, options.recordType));

/**
 * One DNS query over UDP (RFC 1035): a fresh random ID and source port per check; the
 * reply must carry that ID and the same question, its rcode must be an expected one, and
 * with `minAnswers` the answer section must hold that many records of the type asked.
 */
export const dnsProbe = defineProbe({
  type: 'dns',
  schema: dnsSchema,
  async run(target, options, signal) {
    const id = randomInt(0x10000);
    const question = questionOf(options);
    const packet = await exchangeDatagram(target, encodeQuery(id, question), options.maxBytes, signal);
    const reply = parseReply(packet, id, question);
    const wanted = Array.isArray(options.rcode) ? options.rcode : [options.rcode];
    const qtype = RECORD_TYPES[options.recordType];
    const matching = reply.answers.filter((a) => a.type === qtype);
    const shown = matching
      .map(describeAnswer)
      .filter((text) => text !== undefined)
      .slice(0, 4);
    const words = [
      reply.rcode,
      `${matching.length} ${options.recordType} answer${matching.length === 1 ? '' : 's'}${shown.length > 0 ? ` (${shown.join(', ')}${matching.length > shown.length ? ', ...' : ''})` : ''}`,
      ...(reply.authoritative ? ['authoritative'] : []),
      ...(reply.truncated ? ['truncated (TC)'] : []),
    ].join(', ');
    if (!(wanted as string[]).includes(reply.rcode))
      throw new CheckFailed(`${words}; expected rcode ${wanted.join(' or ')}`);
    if (options.minAnswers !== undefined && matching.length < options.minAnswers)
      throw new CheckFailed(`${words}; expected at least ${options.minAnswers}`);
    return { up: true, detail: words };
  },
});
