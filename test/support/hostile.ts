import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { CertFiles } from './certs.js';
import { tcpServer } from './servers.js';

/**
 * Misbehaving loopback servers for the hostile-backend suite. Each listens on port 0
 * and stops every socket on close(); `written()` says how much it sent, where that
 * matters for a byte bound.
 */
export interface Hostile {
  port: number;
  close(): Promise<void>;
  written(): number;
}

async function hostile(onConnection: (socket: net.Socket, count: (n: number) => void) => void): Promise<Hostile> {
  let written = 0;
  const server = await tcpServer((socket) => onConnection(socket, (n) => (written += n)));
  return { port: server.port, written: () => written, close: server.close };
}

/**
 * Writes `piece` again and again, honouring backpressure, until the peer goes away or
 * `limit` bytes went out. It yields to the event loop every 64 KiB: loopback takes
 * megabytes before pushing back, and the checks under test share this process.
 */
function pump(socket: net.Socket, piece: string | Buffer, count: (n: number) => void, limit = Infinity): void {
  let sent = 0;
  const next = () => {
    let burst = 0;
    while (!socket.destroyed && sent < limit) {
      sent += piece.length;
      burst += piece.length;
      count(piece.length);
      if (!socket.write(piece)) return void socket.once('drain', next);
      if (burst >= 65_536) return void setImmediate(next);
    }
  };
  next();
}

/** Accepts and says nothing. */
export const silent = () => hostile(() => undefined);

/** Drips `text` one byte every `everyMs`. */
export const drip = (text: string, everyMs: number) =>
  hostile((socket, count) => {
    let i = 0;
    const timer = setInterval(() => {
      if (socket.destroyed || i >= text.length) return clearInterval(timer);
      socket.write(text[i++]!);
      count(1);
    }, everyMs);
    socket.on('close', () => clearInterval(timer));
  });

/** Sends up to `megabytes` MiB without a newline. */
export const flood = (megabytes: number) =>
  hostile((socket, count) => pump(socket, Buffer.alloc(65_536, 'A'), count, megabytes * 1024 * 1024));

/** `220-` continuation lines forever. */
export const endlessContinuation = () => hostile((socket, count) => pump(socket, '220-still greeting you\r\n', count));

/** Resets the connection right after accepting it. */
export const resetOnAccept = () => hostile((socket) => socket.resetAndDestroy());

/** Closes (FIN) before saying anything. */
export const closeBeforeGreeting = () => hostile((socket) => socket.end());

/** Writes `text` and then does `after` with the socket on the first data from the client. */
export const say = (text: string, onClientData?: (socket: net.Socket, data: string) => void) =>
  hostile((socket, count) => {
    socket.write(text);
    count(text.length);
    socket.setEncoding('latin1');
    if (onClientData) socket.on('data', (data: string) => onClientData(socket, data));
  });

/** Answers the first request bytes with `response`, then keeps the connection open and silent. */
export const httpRaw = (response: string) =>
  hostile((socket, count) => {
    socket.once('data', () => {
      socket.write(response);
      count(response.length);
    });
  });

/** Headers of a chunked response, then chunks forever. */
export const endlessChunked = () =>
  hostile((socket, count) => {
    socket.once('data', () => {
      const head = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n';
      socket.write(head);
      count(head.length);
      const body = 'x'.repeat(4096);
      pump(socket, `${body.length.toString(16)}\r\n${body}\r\n`, count);
    });
  });

/**
 * A TLS server with the given certificate; it says `banner` after the handshake when
 * given. `renegotiate`: after the handshake (TLS 1.2 only) the server asks for a new
 * one, once before the banner, or again and again without ever saying it.
 */
export async function tlsServer(
  files: CertFiles,
  banner?: string,
  renegotiate?: 'once' | 'forever',
): Promise<Hostile & { renegotiations(): number }> {
  const sockets = new Set<tls.TLSSocket>();
  let renegotiations = 0;
  const again = (socket: tls.TLSSocket, then: () => void) =>
    socket.renegotiate({ rejectUnauthorized: false }, (err) => {
      if (err || socket.destroyed) return;
      renegotiations++;
      then();
    });
  const server = tls.createServer(
    {
      key: fs.readFileSync(files.key),
      cert: fs.readFileSync(files.cert),
      ...(renegotiate ? { maxVersion: 'TLSv1.2' as const } : {}),
    },
    (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
      const greet = () => {
        if (banner) socket.write(banner);
      };
      if (renegotiate === 'once') again(socket, greet);
      else if (renegotiate === 'forever') {
        const loop = () => again(socket, loop);
        loop();
      } else greet();
    },
  );
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    written: () => 0,
    renegotiations: () => renegotiations,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Reads the ClientHello and then says nothing: a handshake stalled on the server's side. */
export async function stallAfterClientHello(): Promise<Hostile & { clientHellos(): number }> {
  let hellos = 0;
  const server = await hostile((socket) =>
    socket.once('data', (data: Buffer) => {
      if (data[0] === 0x16) hellos++; // a TLS handshake record
    }),
  );
  return { ...server, clientHellos: () => hellos };
}

/** Answers the ClientHello with `reply` (bytes that are not a ServerHello) and stays open. */
export const answerClientHello = (reply: Buffer) =>
  hostile((socket, count) =>
    socket.once('data', () => {
      socket.write(reply);
      count(reply.length);
    }),
  );

/**
 * A listener whose accept queue is full: python3 listens with backlog 1 and never
 * accepts (Node's net.Server always accepts), and we fill the queue with idle
 * connections, so the kernel drops the next SYN.
 */
export async function fullAcceptQueue(): Promise<Hostile> {
  const child: ChildProcess = spawn(
    'python3',
    [
      '-c',
      'import socket,sys\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(1)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()',
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
  });
  const fillers: net.Socket[] = [];
  // Connect until one connection hangs in SYN-SENT: then the queue is full.
  for (let i = 0; i < 16; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    fillers.push(s);
    const connected = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 300);
      s.once('connect', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    if (!connected) break;
  }
  return {
    port,
    written: () => 0,
    close: async () => {
      for (const s of fillers) s.destroy();
      child.stdin!.end();
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}
