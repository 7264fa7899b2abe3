import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type CheckConfig, checkSchema } from '../src/probes/registry.js';
import { runCheck } from '../src/probes/run.js';
import { closedPort, httpServer, tcpServer } from './support/servers.js';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});

async function serve(onConnection: (socket: net.Socket) => void, host?: string) {
  const s = await tcpServer(onConnection, host);
  closers.push(s.close);
  return s.port;
}

function check(input: Record<string, unknown>, port: number, timeout = 1000, address = '127.0.0.1') {
  const config = checkSchema.parse(input) as CheckConfig;
  return runCheck(config, { service: 's', backend: 'b', address, port }, timeout);
}

/** Writes each piece on its own event-loop turn, so the client sees separate segments. */
function writeInPieces(socket: net.Socket, pieces: string[]) {
  const next = () => {
    const piece = pieces.shift();
    if (piece === undefined || socket.destroyed) return;
    socket.write(piece, () => setImmediate(next));
  };
  next();
}

describe('tcp check', () => {
  it('is up when the connection is accepted', async () => {
    const port = await serve(() => undefined);
    expect(await check({ type: 'tcp' }, port)).toMatchObject({ up: true, detail: 'connected' });
  });

  it('is up on IPv6 loopback', async () => {
    const port = await serve(() => undefined, '::1');
    expect(await check({ type: 'tcp' }, port, 1000, '::1')).toMatchObject({ up: true });
  });

  it('is down with ECONNREFUSED when nothing listens', async () => {
    expect(await check({ type: 'tcp' }, await closedPort())).toMatchObject({
      up: false,
      detail: 'connect ECONNREFUSED',
    });
  });

  it('is down when a host name does not resolve', async () => {
    const result = await check({ type: 'tcp' }, 25, 2000, 'no-such-host.invalid');
    expect(result.up).toBe(false);
    expect(result.detail).toMatch(/^connect (ENOTFOUND|EAI_AGAIN)/);
  });
});

describe('smtp check', () => {
  it('is up on a 220 greeting, sends QUIT and closes cleanly', async () => {
    const received: string[] = [];
    let sawEnd!: () => void;
    const ended = new Promise<void>((r) => (sawEnd = r));
    const port = await serve((socket) => {
      socket.write('220 mx.test ESMTP\r\n');
      socket.setEncoding('latin1').on('data', (d: string) => {
        received.push(d);
        if (d.includes('QUIT')) socket.end('221 bye\r\n');
      });
      socket.on('end', () => sawEnd());
    });
    const result = await check({ type: 'smtp' }, port);
    expect(result).toMatchObject({ up: true, detail: '220 mx.test ESMTP' });
    await ended; // the client half-closed (FIN), no reset: the server logs a clean QUIT
    expect(received.join('')).toBe('QUIT\r\n');
  });

  it('reads a multi-line greeting split over many segments', async () => {
    const greeting = '220-mx.test ESMTP\r\n220-second line\r\n220 ready\r\n';
    const port = await serve((socket) => writeInPieces(socket, greeting.match(/.{1,3}/gs)!));
    expect(await check({ type: 'smtp' }, port)).toMatchObject({
      up: true,
      detail: '220 mx.test ESMTP | second line | ready',
    });
  });

  it('accepts a bare "220" line', async () => {
    const port = await serve((socket) => socket.write('220\r\n'));
    expect(await check({ type: 'smtp' }, port)).toMatchObject({ up: true, detail: '220' });
  });

  it.each([
    ['421 mx.test busy, try later\r\n', 'greeting: expected 220, got "421 mx.test busy, try later"'],
    ['554 no service here\r\n', 'greeting: expected 220, got "554 no service here"'],
    ['554-not\r\n554 today\r\n', 'greeting: expected 220, got "554-not | 554 today"'],
    ['SSH-2.0-OpenSSH_9.2\r\n', 'greeting: malformed reply "SSH-2.0-OpenSSH_9.2"'],
    ['220-mx\r\n250 mixed\r\n', 'greeting: reply code changed from 220 to 250 inside one reply'],
  ])('is down on %j', async (greeting, detail) => {
    const port = await serve((socket) => socket.write(greeting));
    expect(await check({ type: 'smtp' }, port)).toMatchObject({ up: false, detail });
  });

  it('is down when the greeting is longer than the reply bound', async () => {
    const port = await serve((socket) => {
      for (let i = 0; i < 200; i++) socket.write(`220-${'x'.repeat(60)}\r\n`);
    });
    expect(await check({ type: 'smtp' }, port)).toMatchObject({
      up: false,
      detail: 'greeting: reply longer than 4096 bytes',
    });
  });

  it('is down when the backend closes before greeting', async () => {
    const port = await serve((socket) => socket.end());
    expect(await check({ type: 'smtp' }, port)).toMatchObject({
      up: false,
      detail: 'greeting: connection closed by backend',
    });
  });

  it('is down at the timeout when the backend accepts and says nothing', async () => {
    const port = await serve(() => undefined);
    const result = await check({ type: 'smtp' }, port, 300);
    expect(result).toMatchObject({ up: false, detail: 'timeout after 300ms (greeting)' });
    // A bound, not a timing claim: the verdict does not wait for a greeting that never comes
    // (a timer can fire late on a busy machine, hence the second of room).
    expect(result.latencyMs).toBeLessThan(300 + 1000);
  });

  it('is down at the timeout when the banner drips in one byte at a time', async () => {
    const port = await serve((socket) => {
      const banner = '220 slow.test ESMTP\r\n';
      let i = 0;
      const timer = setInterval(() => (i < banner.length ? socket.write(banner[i++]!) : clearInterval(timer)), 100);
      socket.on('close', () => clearInterval(timer));
    });
    const result = await check({ type: 'smtp' }, port, 400);
    expect(result).toMatchObject({ up: false, detail: 'timeout after 400ms (greeting)' });
  });

  it('with ehlo, requires a 250 reply to EHLO', async () => {
    let ehlo = '';
    const port = await serve((socket) => {
      socket.write('220 mx.test ESMTP\r\n');
      socket.setEncoding('latin1').on('data', (d: string) => {
        if (d.startsWith('EHLO')) {
          ehlo = d;
          writeInPieces(socket, ['250-mx.test\r\n', '250-PIPELINING\r\n', '250 STARTTLS\r\n']);
        }
        if (d.startsWith('QUIT')) socket.end('221 bye\r\n');
      });
    });
    expect(await check({ type: 'smtp', ehlo: 'balancer.example' }, port)).toMatchObject({
      up: true,
      detail: '220 mx.test ESMTP',
    });
    expect(ehlo).toBe('EHLO balancer.example\r\n');
  });

  it('with ehlo, is down when EHLO is refused', async () => {
    const port = await serve((socket) => {
      socket.write('220 mx.test ESMTP\r\n');
      socket.on('data', () => socket.write('550 go away\r\n'));
    });
    expect(await check({ type: 'smtp', ehlo: 'balancer.example' }, port)).toMatchObject({
      up: false,
      detail: 'EHLO: expected 250, got "550 go away"',
    });
  });

  it('is up when the backend resets after the greeting (the greeting is the verdict)', async () => {
    const port = await serve((socket) => {
      socket.write('220 mx.test ESMTP\r\n');
      socket.on('data', () => socket.resetAndDestroy());
    });
    expect(await check({ type: 'smtp' }, port)).toMatchObject({ up: true });
  });
});

describe('http check', () => {
  it('is up on 200, with a fresh connection and the Host header', async () => {
    const seen: { host?: string; connection?: string; url?: string; method?: string }[] = [];
    const s = await httpServer((req, res) => {
      seen.push({ host: req.headers.host, connection: req.headers.connection, url: req.url, method: req.method });
      res.end('ok');
    });
    closers.push(s.close);
    expect(await check({ type: 'http', path: '/health', host: 'www.example' }, s.port)).toMatchObject({
      up: true,
      detail: '200 OK',
    });
    expect(await check({ type: 'http', method: 'HEAD' }, s.port)).toMatchObject({ up: true });
    expect(seen).toEqual([
      { host: 'www.example', connection: 'close', url: '/health', method: 'GET' },
      { host: `127.0.0.1:${s.port}`, connection: 'close', url: '/', method: 'HEAD' },
    ]);
  });

  it.each([
    [500, {}, false, 'status 500 Internal Server Error, expected 200-399'],
    [404, { expectStatus: [404] }, true, '404 Not Found'],
    [204, { expectStatus: ['200-204', 301] }, true, '204 No Content'],
    [205, { expectStatus: ['200-204', 301] }, false, 'status 205 Reset Content, expected 200-204, 301'],
  ])('status %d with %j: up=%s', async (status, options, up, detail) => {
    const s = await httpServer((_req, res) => {
      res.statusCode = status;
      res.end();
    });
    closers.push(s.close);
    expect(await check({ type: 'http', ...options }, s.port)).toMatchObject({ up, detail });
  });

  it('does not follow a redirect and names where it pointed', async () => {
    const s = await httpServer((_req, res) => {
      res.writeHead(301, { Location: 'http://elsewhere.example/' });
      res.end();
    });
    closers.push(s.close);
    expect(await check({ type: 'http', expectStatus: ['200-299'] }, s.port)).toMatchObject({
      up: false,
      detail: 'status 301 Moved Permanently (Location: http://elsewhere.example/), expected 200-299',
    });
  });

  it('finds expectBody across chunks, and is down without it', async () => {
    const s = await httpServer((req, res) => {
      res.write('<html>status: ');
      setImmediate(() => res.end(req.url === '/good' ? 'ALL-GOOD</html>' : 'degraded</html>'));
    });
    closers.push(s.close);
    expect(await check({ type: 'http', path: '/good', expectBody: 'status: ALL-GOOD' }, s.port)).toMatchObject({
      up: true,
    });
    expect(await check({ type: 'http', path: '/bad', expectBody: 'ALL-GOOD' }, s.port)).toMatchObject({
      up: false,
      detail: 'status 200 OK, body lacks "ALL-GOOD"',
    });
  });

  it('reads no more of an endless body than maxBodyBytes', async () => {
    const s = await httpServer((_req, res) => {
      const chunk = 'x'.repeat(16_384);
      const pump = () => {
        while (res.write(chunk));
        res.once('drain', pump);
      };
      res.on('close', () => res.removeAllListeners('drain'));
      pump();
    });
    closers.push(s.close);
    expect(await check({ type: 'http', expectBody: 'never', maxBodyBytes: 100_000 }, s.port, 3000)).toMatchObject({
      up: false,
      detail: 'status 200 OK, "never" not in the first 100000 bytes of the body',
    });
  });

  it('is down on a malformed status line', async () => {
    const port = await serve((socket) => socket.once('data', () => socket.end('HTTP/1.1 two hundred OK\r\n\r\n')));
    expect(await check({ type: 'http' }, port)).toMatchObject({
      up: false,
      detail: expect.stringMatching(/^malformed HTTP response \(HPE_/),
    });
  });

  it('is down at the timeout when headers come and then silence', async () => {
    const port = await serve((socket) =>
      socket.once('data', () => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n')),
    );
    const result = await check({ type: 'http' }, port, 300);
    expect(result).toMatchObject({ up: false, detail: 'timeout after 300ms (response)' });
  });

  it('is down with ECONNREFUSED when nothing listens', async () => {
    expect(await check({ type: 'http' }, await closedPort())).toMatchObject({
      up: false,
      detail: 'connect ECONNREFUSED',
    });
  });
});
