import http from 'node:http';
import net from 'node:net';
import { createSmtpServer, type SmtpServer } from '../../demo/smtp-server.js';

/** A loopback TCP server on port 0 running `onConnection`; close() ends it and every socket. */
export async function tcpServer(onConnection: (socket: net.Socket) => void, host = '127.0.0.1') {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A loopback HTTP server on port 0. */
export async function httpServer(handler: http.RequestListener) {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Connections whose local ports are held for the test process's lifetime: a port
 * that is the local end of one of them is refused to every listener (another test's,
 * another process's) and skipped when the kernel picks ephemeral ports. Each goes to
 * a listener of its own, so no two holds can share a four-tuple.
 */
async function holdConnection(localPort?: number): Promise<net.Socket> {
  const server = net.createServer((socket) => socket.on('error', () => undefined));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.unref();
  const { port } = server.address() as net.AddressInfo;
  return new Promise((resolve, reject) => {
    const socket = net.connect({
      host: '127.0.0.1',
      port,
      ...(localPort ? { localAddress: '127.0.0.1', localPort } : {}),
    });
    socket.once('error', (err) => {
      server.close();
      reject(err);
    });
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      socket.on('error', () => undefined);
      socket.once('close', () => server.close());
      socket.unref();
      resolve(socket);
    });
  });
}

/**
 * A port on loopback where nothing listens, and nothing can while the test runs: the
 * local port of a connection this process holds open. A SYN to it is refused
 * (ECONNREFUSED: no listener), and no other process can bind it in the meantime.
 */
export async function closedPort(): Promise<number> {
  const socket = await holdConnection();
  return socket.localPort!;
}

/**
 * A port free right now, for a program that binds it itself (a daemon's listener, a
 * real server): bound and released, so another process may take it before the program
 * does. For a port that must stay refused, use closedPort().
 */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** The port of a stopped server, held until it starts again (see `restartable`). */
export async function holdPort(port: number): Promise<() => void> {
  const socket = await holdConnection(port);
  return () => {
    // A reset, not a FIN: no TIME_WAIT left on the port the server is about to take again.
    socket.resetAndDestroy();
  };
}

/**
 * A server that can stop and start again on the same port without another process
 * taking the port in between: stopped, the port is held by a connection (refused,
 * as a dead backend is); started, the hold is released and the server listens again.
 * A listen that still loses a race is retried for a while.
 */
export function restartable<S extends { port: number; start(): Promise<void>; stop(): Promise<void> }>(server: S): S {
  let release: (() => void) | undefined;
  const start = server.start.bind(server);
  const stop = server.stop.bind(server);
  server.stop = async () => {
    await stop();
    release = await holdPort(server.port);
  };
  server.start = async () => {
    release?.();
    release = undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        return await start();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 50) throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  };
  return server;
}

/**
 * A started SMTP greeter (demo/) that restarts on its own port (see `restartable`),
 * added to `list` so the test's cleanup stops it.
 */
export async function startSmtp(list: SmtpServer[]): Promise<SmtpServer> {
  const s = restartable(createSmtpServer());
  await s.start();
  list.push(s);
  return s;
}
