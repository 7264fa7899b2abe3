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

/**
 * Extra CAs: one secure context (the system roots plus the file) per file version
 * (path, mtime, size), shared by every check naming the file. Building the store
 * blocks the event loop for tens of milliseconds, so 40 checks starting together
 * must not each build their own: the first one's promise is shared by the rest.
 */
const contexts = new Map<string, { version: string; context: Promise<tls.SecureContext> }>();
let contextsBuilt = 0;

/** How many CA secure contexts were built so far (each costs a store of every root). */
export function caContextsBuilt(): number {
  return contextsBuilt;
}

async function secureContextFor(ca: string | undefined): Promise<tls.SecureContext | undefined> {
  if (ca === undefined) return undefined;
  try {
    const { mtimeMs, size } = await stat(ca);
    const version = `${mtimeMs}/${size}`;
    const cached = contexts.get(ca);
    if (cached?.version === version) return await cached.context;
    const context = readFile(ca, 'latin1').then((pem) => {
      contextsBuilt++;
      return tls.createSecureContext({ ca: [...tls.rootCertificates, pem] });
    });
    contexts.set(ca, { version, context });
    // A failed read or parse is not cached: the next check tries again.
    context.catch(() => {
      if (contexts.get(ca)?.context === context) contexts.delete(ca);
    });
    return await context;
  } catch (err) {
    throw new CheckFailed(describeSocketError(err, `ca file ${ca}`));
  }
}

/**
 * Builds the trusted stores of these CA files ahead of the checks (at start or reload),
 * so that no check's latency includes building one. A file that cannot be read is left
 * to the checks, which say so in their detail.
 */
export async function prepareCaFiles(files: Iterable<string | undefined>): Promise<void> {
  await Promise.all([...new Set(files)].map((ca) => secureContextFor(ca).catch(() => undefined)));
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

/** Errors that mean "no trusted CA issued this chain": what to do about it depends on `ca`. */
const UNKNOWN_ISSUER = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
]);

/** The words after an authorization error code: dates, or where the issuer was looked for. */
function untrustedWhy(why: string, socket: tls.TLSSocket, options: TlsOptions): string {
  const cert = socket.getPeerCertificate();
  if (why === 'CERT_HAS_EXPIRED') return ` (expired ${day(new Date(cert.valid_to))})`;
  if (why === 'CERT_NOT_YET_VALID') return ` (valid from ${day(new Date(cert.valid_from))})`;
  if (why === 'DEPTH_ZERO_SELF_SIGNED_CERT')
    return ' (self-signed: trust it with ca set to the certificate itself, or set verify: false)';
  if (!UNKNOWN_ISSUER.has(why)) return '';
  const length = chainLength(socket);
  if (length > MAX_VERIFY_DEPTH)
    return ` (the chain is ${length} certificates long; verification follows at most ${MAX_VERIFY_DEPTH})`;
  const issuer = shortName(cert.issuer);
  return options.ca === undefined
    ? ` (issuer ${issuer} is not among the system's CAs and no ca file is set)`
    : ` (issuer ${issuer} is in neither ca file ${options.ca} nor the system's CAs)`;
}

/** OpenSSL's default verify depth, which Node keeps. */
const MAX_VERIFY_DEPTH = 100;

/** Certificates in the chain as received (leaf first), counted up to a bound. */
function chainLength(socket: tls.TLSSocket): number {
  const seen = new Set<string>();
  let cert: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (cert?.fingerprint256 && !seen.has(cert.fingerprint256) && seen.size <= 1000) {
    seen.add(cert.fingerprint256);
    cert = cert.issuerCertificate;
  }
  return seen.size;
}

/** `CN=nf-healthd test CA`, or the organisation when there is no common name. */
function shortName(name: tls.Certificate | undefined): string {
  const cn = name?.CN ?? name?.O;
  const text = Array.isArray(cn) ? cn.join(', ') : cn;
  return text ? `"${text.replace(/[^\x20-\x7e]/g, '?').slice(0, 100)}"` : 'unnamed';
}

/** OpenSSL's reasons for a failed handshake, in words a user can act on. */
const HANDSHAKE_REASONS: Record<string, string> = {
  'wrong version number': 'the backend does not answer in TLS (a plain-text port?)',
  'packet length too long': 'the backend does not answer in TLS (a plain-text port?)',
  'unexpected message': 'the backend answered the ClientHello with something other than a ServerHello',
  'record layer failure': 'the backend sent a malformed TLS record',
  'sslv3 alert handshake failure': 'the backend refused the handshake (no protocol version or cipher in common)',
  'tlsv1 alert protocol version': 'the backend refused our TLS version',
  'unsupported protocol': 'the backend offers only a TLS version we do not accept',
  'excessive message size': 'the backend sent a handshake message larger than allowed',
  'certificate verify failed': 'the certificate chain did not verify',
};

/**
 * A failed handshake in words: OpenSSL's reason ("wrong version number") and what it
 * means, never its raw string (library codes, a source path, a trailing newline).
 */
export function describeTlsFailure(err: unknown): string {
  const e = err as NodeJS.ErrnoException & { reason?: unknown };
  const reason =
    typeof e?.reason === 'string' && e.reason !== ''
      ? e.reason
      : /:error:[0-9A-Fa-f]+:[^:]*:[^:]*:([^:]+):/.exec(String(e?.message ?? ''))?.[1];
  if (reason) {
    const meaning = HANDSHAKE_REASONS[reason.toLowerCase()];
    return `TLS handshake failed: ${meaning ? `${meaning} (${reason})` : reason}`;
  }
  if (e?.code && !e.code.startsWith('ERR_SSL')) return describeSocketError(err, 'TLS handshake');
  return `TLS handshake failed: ${String(e?.message ?? err)
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 160)}`;
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
  if (options.verify) {
    if (!socket.authorized) {
      const why = String(socket.authorizationError ?? 'unknown reason');
      throw new CheckFailed(`TLS: certificate not trusted: ${why}${untrustedWhy(why, socket, options)}`);
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
        reject(new CheckFailed(describeTlsFailure(err)));
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
