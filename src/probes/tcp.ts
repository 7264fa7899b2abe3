import { z } from 'zod';
import { connect } from './connection.js';
import { defineProbe } from './types.js';

/** Up when the backend accepts a TCP connection within the timeout. */
export const tcpProbe = defineProbe({
  type: 'tcp',
  schema: z
    .strictObject({ type: z.literal('tcp') })
    .describe('Up when the backend accepts the connection (then closed with a reset: no TIME_WAIT left behind).'),
  async run(target, _options, signal) {
    const socket = await connect(target, signal);
    // A reset instead of FIN: connect checks at thousands per second must not fill
    // the ephemeral port range with TIME_WAIT sockets (HAProxy does the same).
    socket.resetAndDestroy();
    return { up: true, detail: 'connected' };
  },
});
