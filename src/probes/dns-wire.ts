import { CheckFailed } from './types.js';

/**
 * The few parts of the DNS wire format (RFC 1035 section 4) a health check needs: one
 * query with one question, and a reply read defensively. Every offset is checked
 * against the packet's length before it is read: a reply is untrusted input.
 */

/** Record types a check may ask for (RFC 1035 3.2.2, RFC 3596, RFC 2782, RFC 4034, RFC 8659). */
export const RECORD_TYPES = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  DS: 43,
  DNSKEY: 48,
  CAA: 257,
} as const;
export type RecordType = keyof typeof RECORD_TYPES;

/** Response codes 0 to 10 by name (RFC 1035 4.1.1, RFC 2136 2.2). */
export const RCODES = [
  'NOERROR',
  'FORMERR',
  'SERVFAIL',
  'NXDOMAIN',
  'NOTIMP',
  'REFUSED',
  'YXDOMAIN',
  'YXRRSET',
  'NXRRSET',
  'NOTAUTH',
  'NOTZONE',
] as const;
export type Rcode = (typeof RCODES)[number];

const HEADER_BYTES = 12;
const CLASS_IN = 1;
/** RFC 1035 2.3.4: 255 octets for a whole name on the wire, 63 for a label. */
const MAX_NAME_BYTES = 255;
const MAX_LABEL_BYTES = 63;
const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/** Why a name cannot be asked for, or undefined when it can (`.` is the root). */
export function dnsNameProblem(name: string): string | undefined {
  if (name === '.') return undefined;
  const labels = (name.endsWith('.') ? name.slice(0, -1) : name).split('.');
  const bad = labels.find((l) => !LABEL.test(l));
  if (bad !== undefined)
    return `"${bad}" is not a DNS label (1 to 63 letters, digits, "-" or "_", not starting or ending with "-")`;
  if (labels.reduce((n, l) => n + l.length + 1, 1) > MAX_NAME_BYTES) return 'longer than 255 bytes on the wire';
  return undefined;
}

/** A name in wire form: length-prefixed labels, then the root's zero byte. The name must have passed dnsNameProblem. */
export function encodeName(name: string): Buffer {
  if (name === '.') return Buffer.from([0]);
  const labels = (name.endsWith('.') ? name.slice(0, -1) : name).split('.');
  return Buffer.concat([
    ...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')])),
    Buffer.from([0]),
  ]);
}

/** The question section of a query: name, type, class IN. */
export function encodeQuestion(name: string, type: RecordType): Buffer {
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(RECORD_TYPES[type], 0);
  tail.writeUInt16BE(CLASS_IN, 2);
  return Buffer.concat([encodeName(name), tail]);
}

/** A standard query (opcode 0) with recursion desired and one question. */
export function encodeQuery(id: number, question: Buffer): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // RD: a resolver answers from its cache or recurses; an authority ignores it
  header.writeUInt16BE(1, 4); // QDCOUNT
  return Buffer.concat([header, question]);
}

export interface DnsAnswer {
  type: number;
  data: Buffer;
}

export interface DnsReply {
  rcode: Rcode | `RCODE${number}`;
  /** TC: the server had more than fits a UDP reply. */
  truncated: boolean;
  authoritative: boolean;
  /** Records of the answer section (type and data), in order. */
  answers: DnsAnswer[];
}

function malformed(what: string): CheckFailed {
  return new CheckFailed(`malformed DNS reply: ${what}`);
}

/**
 * Reads a reply to the query with `id` and `question`. A reply with another ID or another
 * question is not the answer to this query (a stray or spoofed packet): that is an error,
 * as is anything that runs past the end of the packet.
 */
export function parseReply(packet: Buffer, id: number, question: Buffer): DnsReply {
  if (packet.length < HEADER_BYTES) throw malformed(`${packet.length} bytes, shorter than the 12-byte header`);
  const replyId = packet.readUInt16BE(0);
  if (replyId !== id) throw new CheckFailed(`DNS reply has ID ${replyId}, the query had ${id}: not our answer`);
  const flags = packet.readUInt16BE(2);
  if ((flags & 0x8000) === 0) throw new CheckFailed('DNS reply has the QR bit clear: a query, not a response');
  const opcode = (flags >> 11) & 0xf;
  if (opcode !== 0) throw new CheckFailed(`DNS reply has opcode ${opcode}, the query had 0`);
  const code = flags & 0xf;
  const qdcount = packet.readUInt16BE(4);
  const ancount = packet.readUInt16BE(6);
  if (qdcount !== 1) throw new CheckFailed(`DNS reply has ${qdcount} questions, the query had 1: not our answer`);
  const asked = packet.subarray(HEADER_BYTES, HEADER_BYTES + question.length);
  // Names compare without regard to ASCII case (RFC 4343); a server may echo another case.
  if (
    asked.length < question.length ||
    asked.toString('latin1').toLowerCase() !== question.toString('latin1').toLowerCase()
  )
    throw new CheckFailed('DNS reply is for another question: not our answer');
  const answers: DnsAnswer[] = [];
  let at = HEADER_BYTES + question.length;
  for (let i = 0; i < ancount; i++) {
    at = skipName(packet, at);
    if (at + 10 > packet.length) throw malformed(`answer ${i + 1} of ${ancount} cut short`);
    const type = packet.readUInt16BE(at);
    const rdlength = packet.readUInt16BE(at + 8);
    at += 10;
    if (at + rdlength > packet.length) throw malformed(`answer ${i + 1} of ${ancount} cut short`);
    answers.push({ type, data: packet.subarray(at, at + rdlength) });
    at += rdlength;
  }
  return {
    rcode: RCODES[code] ?? `RCODE${code}`,
    truncated: (flags & 0x0200) !== 0,
    authoritative: (flags & 0x0400) !== 0,
    answers,
  };
}

/** The offset after a (possibly compressed) name at `at`; a pointer ends the name where it stands. */
function skipName(packet: Buffer, at: number): number {
  let length = 0;
  for (;;) {
    if (at >= packet.length) throw malformed('a name runs past the end');
    const byte = packet[at]!;
    if ((byte & 0xc0) === 0xc0) {
      if (at + 2 > packet.length) throw malformed('a name pointer runs past the end');
      return at + 2;
    }
    if ((byte & 0xc0) !== 0) throw malformed(`label type 0x${byte.toString(16)}`);
    if (byte === 0) return at + 1;
    if (byte > MAX_LABEL_BYTES) throw malformed('a label longer than 63 bytes');
    length += byte + 1;
    if (length > MAX_NAME_BYTES) throw malformed('a name longer than 255 bytes');
    at += byte + 1;
  }
}

/** An answer's data in words, for the detail: addresses for A and AAAA, else nothing. */
export function describeAnswer(answer: DnsAnswer): string | undefined {
  if (answer.type === RECORD_TYPES.A && answer.data.length === 4) return [...answer.data].join('.');
  if (answer.type === RECORD_TYPES.AAAA && answer.data.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(answer.data.readUInt16BE(i).toString(16));
    return groups.join(':').replace(/(^|:)0(?::0)+(:|$)/, '::');
  }
  return undefined;
}
