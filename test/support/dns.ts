import dgram from 'node:dgram';
import type { AddressInfo } from 'node:net';

/**
 * A DNS server's side for the dns check's tests, written independently of
 * src/probes/dns-wire.ts so the two check each other: a loopback UDP responder and
 * the reply a server builds (with every field open to forging).
 */

/** A loopback UDP server on port 0: `answer` gives the datagrams to send back for each one received. */
export async function udpResponder(answer: (request: Buffer) => Buffer[]) {
  const socket = dgram.createSocket('udp4');
  const received: Buffer[] = [];
  /** The source port of each datagram received. */
  const sources: number[] = [];
  socket.on('message', (request, from) => {
    received.push(request);
    sources.push(from.port);
    for (const reply of answer(request)) socket.send(reply, from.port, from.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return {
    port: (socket.address() as AddressInfo).port,
    received,
    sources,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

export interface ReplyFields {
  id?: number;
  /** Header flags; default QR, RD, RA with `rcode`. */
  flags?: number;
  rcode?: number;
  /** The question section as sent back; default the request's. */
  question?: Buffer;
  answers?: { type: number; data: Buffer }[];
  /** ANCOUNT as written, default the number of `answers` (more claims a cut packet). */
  ancount?: number;
}

/** A reply to `request` (one question): header, the question, answers naming it by a pointer. */
export function dnsReply(request: Buffer, fields: ReplyFields = {}): Buffer {
  const answers = fields.answers ?? [];
  const header = Buffer.alloc(12);
  header.writeUInt16BE(fields.id ?? request.readUInt16BE(0), 0);
  header.writeUInt16BE(fields.flags ?? 0x8180 | (fields.rcode ?? 0), 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(fields.ancount ?? answers.length, 6);
  const records = answers.map(({ type, data }) => {
    const rr = Buffer.alloc(12);
    rr.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
    rr.writeUInt16BE(type, 2);
    rr.writeUInt16BE(1, 4); // IN
    rr.writeUInt32BE(60, 6);
    rr.writeUInt16BE(data.length, 10);
    return Buffer.concat([rr, data]);
  });
  return Buffer.concat([header, fields.question ?? request.subarray(12), ...records]);
}

export const A = 1;
export const ipv4 = (text: string) => Buffer.from(text.split('.').map(Number));
