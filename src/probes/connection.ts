import net from 'node:net';
import { CheckFailed, type ProbeTarget } from './types.js';

/** Byte bounds for everything read from a backend during one check. */
export interface ReadBounds {
  /** Longest line accepted, without its end of line. */
  maxLineBytes: number;
  /** Total bytes one check may read. */
  maxTotalBytes: number;
}

export const DEFAULT_BOUNDS: ReadBounds = { maxLineBytes: 4096, maxTotalBytes: 65_536 };

/**
 * A connected socket seen as lines: the one primitive every line-based check
 * (SMTP, and the send/expect presets) is built on. Every read is bounded and
 * every wait ends when `signal` aborts.
 */
export interface LineConnection {
  readonly socket: net.Socket;
  /** What the check is doing, for the detail of a timeout ("reading greeting"). */
  phase: string;
  /** Next line without CR/LF; rejects on close, reset, abort or a bound. */
  readLine(): Promise<string>;
  write(data: string): Promise<void>;
  /** Half-close and wait (bounded by the signal) for the peer to close: no lost-connection logs. */
  closeGracefully(): Promise<void>;
  /** Tear down now with a RST: no TIME_WAIT left behind on our side. */
  reset(): void;
  bytesRead(): number;
  /**
   * Reads until `find` (given everything buffered) returns the end of what it wants;
   * returns the text up to there and keeps the rest. Bounded by maxTotalBytes.
   */
  readUntil(find: (buffered: string) => number): Promise<string>;
  /**
   * Detaches the reader and hands the raw socket over (STARTTLS). Fails when the
   * backend already sent more than was read: bytes injected before the handshake.
   */
  release(): net.Socket;
}

/**
 * Bytes read from backends per check, keyed by the check's AbortSignal: runCheck
 * opens a meter, probes add what they read, and the result reports it.
 */
const meters = new WeakMap<AbortSignal, { bytes: number }>();

export function openMeter(signal: AbortSignal): { bytes: number } {
  const meter = { bytes: 0 };
  meters.set(signal, meter);
  return meter;
}

export function countRead(signal: AbortSignal, bytes: number): void {
  const meter = meters.get(signal);
  if (meter) meter.bytes += bytes;
}

/** Human words for a socket error: `connect ECONNREFUSED`, `read ECONNRESET`. */
export function describeSocketError(err: unknown, phase: string): string {
  if (err instanceof CheckFailed) return err.message;
  const e = err as NodeJS.ErrnoException;
  if (e?.code) return `${phase} ${e.code}`;
  return `${phase}: ${e?.message ?? String(err)}`;
}

/** The verdict for an aborted wait: the abort's reason (say, "timeout after 3s") and what the check was doing. */
export function abortedDuring(signal: AbortSignal, phase: string): CheckFailed {
  const reason: unknown = signal.reason;
  const why = reason instanceof Error ? reason.message : 'aborted';
  return new CheckFailed(`${why} (${phase})`);
}

/** Opens a TCP connection; resolves once connected. The socket is destroyed when `signal` aborts while connecting. */
export function connect(target: ProbeTarget, signal: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(abortedDuring(signal, 'connect'));
    const socket = net.connect({ host: target.address, port: target.port, noDelay: true });
    const onAbort = () => {
      socket.destroy();
      reject(abortedDuring(signal, 'connect'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      socket.removeListener('error', onError);
      // From here the caller owns the socket and its abort handling: a TLS socket may
      // wrap it, and Node must see that one destroyed first (destroying the TCP socket
      // under a live TLSSocket and then the TLSSocket crashes Node 20).
      signal.removeEventListener('abort', onAbort);
      resolve(socket);
    });
    const onError = (err: Error) => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(new CheckFailed(describeSocketError(err, 'connect')));
    };
    socket.once('error', onError);
    socket.once('close', () => signal.removeEventListener('abort', onAbort));
  });
}

/** Wraps a connected socket into a bounded line reader; `tcp` is the TCP socket under a TLS one (never reset directly). */
export function lineConnection(
  socket: net.Socket,
  signal: AbortSignal,
  bounds: ReadBounds = DEFAULT_BOUNDS,
  tcp: net.Socket = socket,
): LineConnection {
  let buffer = '';
  let total = 0;
  let failure: Error | undefined;
  let ended = false;
  let waiter: (() => void) | undefined;
  const wake = () => {
    const w = waiter;
    waiter = undefined;
    w?.();
  };
  const fail = (err: Error) => {
    failure ??= err;
    socket.destroy();
    wake();
  };
  const conn: LineConnection = {
    socket,
    phase: 'reading',
    async readUntil(find) {
      for (;;) {
        const end = find(buffer);
        if (end >= 0) {
          const text = buffer.slice(0, end);
          buffer = buffer.slice(end);
          return text;
        }
        if (failure) throw failure;
        if (ended) throw new CheckFailed(`${conn.phase}: connection closed by backend`);
        await new Promise<void>((resolve) => (waiter = resolve));
      }
    },
    release() {
      if (buffer.length > 0) throw new CheckFailed(`${conn.phase}: backend sent data before the TLS handshake`);
      if (failure) throw failure;
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      socket.removeListener('error', onError);
      socket.removeListener('close', onEnd);
      signal.removeEventListener('abort', onAbort);
      return socket;
    },
    async readLine() {
      for (;;) {
        const nl = buffer.indexOf('\n');
        if (nl >= 0) {
          const line = buffer.slice(0, nl > 0 && buffer.charCodeAt(nl - 1) === 13 ? nl - 1 : nl);
          buffer = buffer.slice(nl + 1);
          if (line.length > bounds.maxLineBytes)
            throw new CheckFailed(`${conn.phase}: line longer than ${bounds.maxLineBytes} bytes`);
          return line;
        }
        if (buffer.length > bounds.maxLineBytes)
          throw new CheckFailed(`${conn.phase}: line longer than ${bounds.maxLineBytes} bytes`);
        if (failure) throw failure;
        if (ended) {
          throw new CheckFailed(
            buffer.length > 0
              ? `${conn.phase}: connection closed in the middle of a line`
              : `${conn.phase}: connection closed by backend`,
          );
        }
        await new Promise<void>((resolve) => (waiter = resolve));
      }
    },
    write(data) {
      return new Promise((resolve, reject) => {
        if (failure) return reject(failure);
        socket.write(data, 'latin1', (err) =>
          err ? reject(new CheckFailed(describeSocketError(err, `${conn.phase}: write`))) : resolve(),
        );
      });
    },
    async closeGracefully() {
      if (socket.destroyed) return;
      // The peer closes first (a mail server does after its 221), so the TIME_WAIT stays
      // on its side: thousands of checks a second must not fill the checker's table.
      // The data listener keeps draining what it still says, within the byte bound.
      while (!ended && !failure) await new Promise<void>((resolve) => (waiter = resolve));
      if (socket.destroyed) return;
      socket.end();
      if (socket.readyState === 'closed') return;
      await new Promise<void>((resolve) => {
        socket.once('close', () => resolve());
        socket.resume();
      });
    },
    reset() {
      // A TLSSocket cannot send a RST, and its TCP socket must not be torn down first
      // (see connect()): over TLS this is an ordinary close.
      // Once our FIN is under way, a RST would race the pending shutdown request and leak
      // the handle (seen on Node 20: the process never exits): destroy plainly then.
      if (socket.destroyed) return;
      if (tcp !== socket || socket.writableEnded) socket.destroy();
      else socket.resetAndDestroy();
    },
    bytesRead: () => total,
  };
  socket.setEncoding('latin1');
  const onData = (chunk: string) => {
    total += chunk.length;
    countRead(signal, chunk.length);
    if (total > bounds.maxTotalBytes)
      return fail(new CheckFailed(`${conn.phase}: backend sent more than ${bounds.maxTotalBytes} bytes`));
    buffer += chunk;
    wake();
  };
  const onEnd = () => {
    ended = true;
    wake();
  };
  const onError = (err: Error) => fail(new CheckFailed(describeSocketError(err, conn.phase)));
  socket.on('data', onData);
  socket.on('end', onEnd);
  socket.on('error', onError);
  socket.on('close', onEnd);
  const onAbort = () => fail(abortedDuring(signal, conn.phase));
  if (signal.aborted) onAbort();
  else {
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('close', () => signal.removeEventListener('abort', onAbort));
  }
  return conn;
}
