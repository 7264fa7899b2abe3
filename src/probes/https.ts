import type http from 'node:http';
import https from 'node:https';
import type tls from 'node:tls';
import { z } from 'zod';
import { httpExchange, httpOptions } from './http.js';
import { connectOptions, judgeCertificate, tlsOptions } from './tls-options.js';
import { defineProbe } from './types.js';

/**
 * The `http` check over TLS: the certificate is judged right after the handshake
 * (before any response is read), then the exchange goes on exactly as for `http`.
 */
export const httpsProbe = defineProbe({
  type: 'https',
  schema: z
    .strictObject({ type: z.literal('https'), ...httpOptions, ...tlsOptions })
    .describe('As `http`, over TLS whose certificate passes (judged right after the handshake).'),
  async run(target, options, signal) {
    const tlsConnect = await connectOptions(target, options);
    let note = '';
    const request = ((opts: https.RequestOptions) => {
      const req = https.request(opts);
      req.on('socket', (socket) => {
        socket.once('secureConnect', () => {
          try {
            note = judgeCertificate(socket as tls.TLSSocket, target, options);
          } catch (err) {
            req.destroy(err as Error);
          }
        });
      });
      return req;
    }) as unknown as typeof http.request;
    // The Host header follows the name the certificate is checked for, unless set.
    const exchange = { ...options, host: options.host ?? options.servername };
    const verdict = await httpExchange(request, target, exchange, tlsConnect, signal);
    return { ...verdict, detail: note ? `${verdict.detail}; ${note}` : verdict.detail };
  },
});
