import dgram from 'node:dgram';
import net from 'node:net';
import { abortedDuring, countRead, describeSocketError } from './connection.js';
import { CheckFailed, type ProbeTarget } from './types.js';

/**
 * The datagram sibling of the stream engine in conversation.ts, behind the `dns` and
 * `udp` checks. UDP has no connection, no lines and no stream to search: one request,
 * one reply is the whole exchange, so it is one function rather than steps for the
 * line reader. It gives verdicts the same way (CheckFailed, the check's AbortSignal,
 * the byte meter).
 *
 * The socket is connected, so the kernel drops datagrams from any other address and
 * port, and an ICMP port unreachable comes back as ECONNREFUSED (a stopped server is
 * down at once, not at the timeout). At most one datagram is read: the first one is
 * the answer or the failure, so a flood of replies costs one read, and a stray or
 * forged packet can fail a check but never pass it.
 */
export async function exchangeDatagram(
  target: ProbeTarget,
  payload: Buffer,
  maxReplyBytes: number,
  signal: AbortSignal,
): Promise<Buffer> {
  if (signal.aborted) throw abortedDuring(signal, 'sending');
  const socket = dgram.createSocket({ type: net.isIPv6(target.address) ? 'udp6' : 'udp4' });
  let phase = 'connecting';
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const onAbort = () => reject(abortedDuring(signal, phase));
      signal.addEventListener('abort', onAbort, { once: true });
      const settle = () => signal.removeEventListener('abort', onAbort);
      socket.once('error', (err: NodeJS.ErrnoException) => {
        settle();
        reject(
          new CheckFailed(
            err.code === 'ECONNREFUSED'
              ? `${phase}: port unreachable (ECONNREFUSED): nothing listens on UDP port ${target.port}`
              : describeSocketError(err, phase),
          ),
        );
      });
      socket.once('message', (reply) => {
        settle();
        countRead(signal, reply.length);
        if (reply.length > maxReplyBytes)
          reject(new CheckFailed(`reply of ${reply.length} bytes, more than the ${maxReplyBytes}-byte bound`));
        else resolve(reply);
      });
      socket.connect(target.port, target.address, () => {
        phase = 'sending';
        socket.send(payload, (err) => {
          if (err) {
            settle();
            reject(new CheckFailed(describeSocketError(err, phase)));
          } else phase = 'waiting for the reply';
        });
      });
    });
  } finally {
    socket.removeAllListeners('message');
    // Errors after the verdict (a late ICMP) must not become an unhandled 'error' event.
    socket.on('error', () => undefined);
    socket.close();
  }
}
