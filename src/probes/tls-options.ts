import { readFile, stat } from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import { z } from 'zod';
import { abortedDuring, countRead, describeSocketError } from './connection.js';
import { CheckFailed, type ProbeTarget } from './types.js';

/**
 * The TLS options every TLS-speaking check shares (`tls`, `https`, `smtp` with
 * `starttls`, the `tls` step of `expect`), and the one place certificates are judged.
 */
export const tlsOptions = {
  /** SNI and the name the certificate must carry; default: the backend's address. */
  servername: z
    .string()
    .regex(/^[A-Za-z0-9*][A-Za-z0-9.-]{0,252}$/, 'expected a host name')
    .optional()
    .describe(
      "SNI and the name the certificate must carry; default: the backend's address. SNI is sent for host names only (RFC 6066); for `https` also the `Host` header unless `host` is set.",
    ),
  /** Check the chain against the trusted CAs and the name against the certificate. */
  verify: z
    .boolean()
    .default(true)
    .describe('Check the chain against the trusted CAs and the name against the certificate.'),
  /** A PEM file of CA certificates trusted in addition to the system's. */
  ca: z
    .string()
    .regex(/^\//, 'expected an absolute path to a PEM file')
    .optional()
    .describe(
      "Absolute path of a PEM file of CA certificates trusted in addition to the system's (re-read when it changes).",
    ),
  /** Down when the certificate expires in fewer days than this. */
  minValidDays: z
    .number()
    .min(0)
    .max(3650)
    .optional()
    .describe('Down when the certificate expires in fewer days than this; works with `verify: false` too.'),
};

const tlsOptionsSchema = z.object(tlsOptions);
export type TlsOptions = z.infer<typeof tlsOptionsSchema>;

/** Picks the TLS options out of a check's options. */
export function pickTlsOptions(options: TlsOptions): TlsOptions {
  return { servername: options.servername, verify: options.verify, ca: options.ca, minValidDays: options.minValidDays };
}

const DAY_MS = 86_400_000;

function day(date: Date): string {
  return Number.isNaN(date.getTime()) ? 'an unreadable date' : date.toISOString().slice(0, 10);
}

/** The name a certificate must carry: servername, else the address. */
export function expectedName(target: ProbeTarget, options: TlsOptions): string {
  return options.servername ?? target.address;
}

/** SNI is sent for host names only (RFC 6066 forbids literal addresses). */
function sniFor(target: ProbeTarget, options: TlsOptions): string | undefined {
  if (options.servername !== undefined) return options.servername;
  return net.isIP(target.address) ? undefined : target.address;
}

/** Extra CAs, parsed once per file version: a secure context with the system roots plus the file. */
const contexts = new Map<string, { mtimeMs: number; context: tls.SecureContext }>();

async function secureContextFor(ca: string | undefined): Promise<tls.SecureContext | undefined> {
  if (ca === undefined) return undefined;
  try {
    const { mtimeMs } = await stat(ca);
    const cached = contexts.get(ca);
    if (cached?.mtimeMs === mtimeMs) return cached.context;
    const pem = await readFile(ca, 'latin1');
    const context = tls.createSecureContext({ ca: [...tls.rootCertificates, pem] });
    contexts.set(ca, { mtimeMs, context });
    return context;
  } catch (err) {
    throw new CheckFailed(describeSocketError(err, `ca file ${ca}`));
  }
}

/** Options for tls.connect / https.request: we judge the certificate ourselves, for a detail in words. */
export async function connectOptions(target: ProbeTarget, options: TlsOptions): Promise<tls.ConnectionOptions> {
  const secureContext = await secureContextFor(options.ca);
  // checkServerIdentity is ours to call (judgeCertificate), so `authorized` speaks of the chain alone.
  return {
    servername: sniFor(target, options),
    rejectUnauthorized: false,
    checkServerIdentity: () => undefined,
    ...(secureContext ? { secureContext } : {}),
  };
}

/**
 * Judges the peer's certificate after a handshake: chain and name (with `verify`),
 * then `minValidDays`. Throws CheckFailed with the reason and the dates; returns a
 * note for the detail of a passing check ("TLSv1.3, certificate valid until 2027-01-31").
 */
export function judgeCertificate(
  socket: tls.TLSSocket,
  target: ProbeTarget,
  options: TlsOptions,
  now = Date.now(),
): string {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) throw new CheckFailed('TLS: the backend sent no certificate');
  const validTo = new Date(cert.valid_to);
  const validFrom = new Date(cert.valid_from);
  if (options.verify) {
    if (!socket.authorized) {
      const why = String(socket.authorizationError ?? 'unknown reason');
      const when =
        why === 'CERT_HAS_EXPIRED'
          ? ` (expired ${day(validTo)})`
          : why === 'CERT_NOT_YET_VALID'
            ? ` (valid from ${day(validFrom)})`
            : '';
      throw new CheckFailed(`TLS: certificate not trusted: ${why}${when}`);
    }
    const name = expectedName(target, options);
    const mismatch = tls.checkServerIdentity(name, cert);
    if (mismatch) {
      const names = cert.subjectaltname ? cert.subjectaltname : `CN=${cert.subject?.CN ?? '?'}`;
      throw new CheckFailed(`TLS: certificate is not for ${name} (it names ${names.slice(0, 200)})`);
    }
  }
  if (options.minValidDays !== undefined) {
    const daysLeft = (validTo.getTime() - now) / DAY_MS;
    if (!(daysLeft >= options.minValidDays)) {
      const left = daysLeft < 0 ? 'expired' : `expires in ${Math.floor(daysLeft)} days`;
      throw new CheckFailed(`TLS: certificate ${left} (${day(validTo)}), minValidDays is ${options.minValidDays}`);
    }
  }
  return `${socket.getProtocol() ?? 'TLS'}, certificate valid until ${day(validTo)}`;
}

/**
 * Runs a TLS handshake over a connected TCP socket (implicit TLS or after STARTTLS)
 * and judges the certificate. The handshake is bounded by `signal`; its bytes count
 * towards the check's read meter.
 */
export async function startTls(
  tcp: net.Socket,
  target: ProbeTarget,
  options: TlsOptions,
  signal: AbortSignal,
): Promise<{ socket: tls.TLSSocket; note: string }> {
  const before = tcp.bytesRead;
  let connectOpts: tls.ConnectionOptions;
  try {
    connectOpts = await connectOptions(target, options);
    if (signal.aborted) throw abortedDuring(signal, 'TLS handshake');
  } catch (err) {
    tcp.resetAndDestroy();
    throw err;
  }
  const socket = tls.connect({ ...connectOpts, socket: tcp });
  try {
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(abortedDuring(signal, 'TLS handshake'));
      const done = () => {
        signal.removeEventListener('abort', onAbort);
        socket.removeListener('error', onError);
        socket.removeListener('close', onClose);
      };
      const onError = (err: Error) => {
        done();
        const code = (err as NodeJS.ErrnoException).code;
        reject(
          new CheckFailed(
            code?.startsWith('ERR_SSL') || !code
              ? `TLS handshake failed: ${err.message.slice(0, 160)}`
              : describeSocketError(err, 'TLS handshake'),
          ),
        );
      };
      const onClose = () => {
        done();
        reject(new CheckFailed('TLS handshake: connection closed by backend'));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      socket.once('error', onError);
      socket.once('close', onClose);
      socket.once('secureConnect', () => {
        done();
        resolve();
      });
    });
    countRead(signal, tcp.bytesRead - before);
    return { socket, note: judgeCertificate(socket, target, options) };
  } catch (err) {
    socket.on('error', () => undefined);
    // The TLS socket first, then the TCP one: the other order crashes Node 20.
    socket.destroy();
    tcp.destroy();
    throw err;
  }
}
