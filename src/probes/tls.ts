import { z } from 'zod';
import { connect } from './connection.js';
import { startTls, tlsOptions } from './tls-options.js';
import { defineProbe } from './types.js';

/**
 * Up when the backend completes a TLS handshake whose certificate passes: chain and
 * name (unless `verify: false`) and at least `minValidDays` of validity left.
 */
export const tlsProbe = defineProbe({
  type: 'tls',
  schema: z
    .strictObject({ type: z.literal('tls'), ...tlsOptions })
    .describe('Up when a TLS handshake completes and the certificate passes.'),
  async run(target, options, signal) {
    const tcp = await connect(target, signal);
    const { socket, note } = await startTls(tcp, target, options, signal);
    // Only the TLS socket: it takes the TCP one with it (tearing the TCP socket down
    // first crashes Node 20).
    socket.destroy();
    return { up: true, detail: note };
  },
});
