import { z } from 'zod';
import { scriptedProbe } from './conversation.js';

/**
 * Up when the backend accepts a TCP connection within the timeout: a conversation of no
 * steps, closed with a reset instead of a FIN, so connect checks at thousands per second
 * do not fill the ephemeral port range with TIME_WAIT sockets (HAProxy does the same).
 */
export const tcpProbe = scriptedProbe({
  type: 'tcp',
  schema: z
    .strictObject({ type: z.literal('tcp') })
    .describe('Up when the backend accepts the connection (then closed with a reset: no TIME_WAIT left behind).'),
  script: () => ({ steps: [] }),
});
