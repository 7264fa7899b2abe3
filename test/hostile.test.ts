import fs from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_BOUNDS } from '../src/probes/connection.js';
import { checkSchema } from '../src/probes/registry.js';
import { runCheck } from '../src/probes/run.js';
import type { ProbeResult } from '../src/probes/types.js';
import { makePki, type TestPki } from './support/certs.js';
import * as bad from './support/hostile.js';
import { httpServer } from './support/servers.js';

/**
 * Backends at their worst. Every case asserts the verdict, that the check returned
 * within its timeout plus a bounded margin (a bound, not a timing claim), and, where
 * the backend sends without end, that the bytes read stayed within the probe's bound.
 */
const TIMEOUT = 500;
const MARGIN = 250;
/** A socket read hands over up to 64 KiB at once, so a bound can be passed by at most one read. */
const ONE_READ = 65_536;
const LINE_BOUND = DEFAULT_BOUNDS.maxTotalBytes + ONE_READ;

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});

async function backend(server: Promise<bad.Hostile>): Promise<bad.Hostile> {
  const s = await server;
  closers.push(s.close);
  return s;
}

async function timedCheck(input: Record<string, unknown>, port: number, timeout = TIMEOUT): Promise<ProbeResult> {
  const started = performance.now();
  const result = await runCheck(
    checkSchema.parse(input),
    { service: 'svc', backend: 'b1', address: '127.0.0.1', port },
    timeout,
  );
  expect(performance.now() - started).toBeLessThan(timeout + MARGIN);
  return result;
}

describe('line protocols (smtp, presets, expect)', () => {
  it('accepts and says nothing: down at the timeout', async () => {
    const { port } = await backend(bad.silent());
    expect(await timedCheck({ type: 'smtp' }, port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (greeting)',
      bytesRead: 0,
    });
    expect(await timedCheck({ type: 'ssh' }, port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (version)',
    });
    expect(await timedCheck({ type: 'redis' }, port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (PING)',
    });
  });

  it('drips the banner a byte at a time past the timeout: down at the timeout', async () => {
    const { port } = await backend(bad.drip('220 mail.example ESMTP ready\r\n', 50));
    const result = await timedCheck({ type: 'smtp' }, port);
    expect(result).toMatchObject({ up: false, detail: 'timeout after 500ms (greeting)' });
    expect(result.bytesRead).toBeGreaterThan(0);
    expect(result.bytesRead).toBeLessThan(20);
  });

  it('sends megabytes without a newline: down on the line bound, long before the timeout', async () => {
    const server = await backend(bad.flood(8));
    const result = await timedCheck({ type: 'smtp' }, server.port, 2000);
    expect(result).toMatchObject({ up: false, detail: 'greeting: line longer than 4096 bytes' });
    expect(result.bytesRead).toBeLessThanOrEqual(LINE_BOUND);
    const viaExpect = await timedCheck(
      { type: 'expect', steps: [{ expect: 'never', in: 'buffer' }] },
      server.port,
      2000,
    );
    expect(viaExpect).toMatchObject({ up: false, detail: 'step 1: backend sent more than 65536 bytes' });
    expect(viaExpect.bytesRead).toBeLessThanOrEqual(LINE_BOUND);
  });

  it('sends 220- continuation lines forever: down on the reply bound', async () => {
    const { port } = await backend(bad.endlessContinuation());
    const result = await timedCheck({ type: 'smtp' }, port);
    expect(result).toMatchObject({ up: false, detail: 'greeting: reply longer than 4096 bytes' });
    expect(result.bytesRead).toBeLessThanOrEqual(LINE_BOUND);
    const ftp = await timedCheck({ type: 'ftp' }, port);
    expect(ftp).toMatchObject({ up: false, detail: 'greeting: reply longer than 4096 bytes' });
    expect(ftp.bytesRead).toBeLessThanOrEqual(LINE_BOUND);
  });

  it('resets right after accepting: down with the reset', async () => {
    const { port } = await backend(bad.resetOnAccept());
    const result = await timedCheck({ type: 'smtp' }, port);
    expect(result.up).toBe(false);
    // The RST may come before or after our connect completed.
    expect(result.detail).toMatch(/^(greeting ECONNRESET|greeting: connection closed by backend|connect ECONNRESET)$/);
  });

  it('closes before the greeting: down', async () => {
    const { port } = await backend(bad.closeBeforeGreeting());
    expect(await timedCheck({ type: 'smtp' }, port)).toMatchObject({
      up: false,
      detail: 'greeting: connection closed by backend',
    });
    expect(await timedCheck({ type: 'pop3' }, port)).toMatchObject({
      up: false,
      detail: 'greeting: connection closed by backend',
    });
  });

  it('answers 421 or 554: down with the code', async () => {
    const busy = await backend(bad.say('421 4.3.2 too busy, try later\r\n'));
    expect(await timedCheck({ type: 'smtp' }, busy.port)).toMatchObject({
      up: false,
      detail: 'greeting: expected 220, got "421 4.3.2 too busy, try later"',
    });
    const refused = await backend(bad.say('554 5.7.1 no service here\r\n'));
    expect(await timedCheck({ type: 'smtp' }, refused.port)).toMatchObject({
      up: false,
      detail: 'greeting: expected 220, got "554 5.7.1 no service here"',
    });
  });

  it('answers 220 and resets on QUIT: still up (the greeting is the verdict)', async () => {
    let sawQuit!: () => void;
    const quit = new Promise<void>((r) => (sawQuit = r));
    const { port } = await backend(
      bad.say('220 mx.example ESMTP\r\n', (socket, data) => {
        if (data.startsWith('QUIT')) {
          sawQuit();
          socket.resetAndDestroy();
        }
      }),
    );
    expect(await timedCheck({ type: 'smtp' }, port)).toMatchObject({ up: true, detail: '220 mx.example ESMTP' });
    await quit;
  });

  it('a redis that requires a password is down with its words', async () => {
    const { port } = await backend(bad.say('', (socket) => socket.write('-NOAUTH Authentication required.\r\n')));
    expect(await timedCheck({ type: 'redis' }, port)).toMatchObject({
      up: false,
      detail: 'PING: expected +PONG, got "-NOAUTH Authentication required."',
    });
  });
});

describe('http', () => {
  it('headers then silence: down at the timeout when the body is needed', async () => {
    const { port } = await backend(bad.httpRaw('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n'));
    expect(await timedCheck({ type: 'http', expectBody: 'ok' }, port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (body)',
    });
    // Without expectBody the status is the verdict.
    expect(await timedCheck({ type: 'http' }, port)).toMatchObject({ up: true, detail: '200 OK' });
  });

  it('half the headers then silence: down at the timeout', async () => {
    const { port } = await backend(bad.httpRaw('HTTP/1.1 200 OK\r\nServer: stuck\r\n'));
    expect(await timedCheck({ type: 'http' }, port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (response)',
    });
  });

  it('an endless chunked body: down once maxBodyBytes were searched, bytes bounded', async () => {
    const { port } = await backend(bad.endlessChunked());
    const result = await timedCheck({ type: 'http', expectBody: 'never there', maxBodyBytes: 100_000 }, port);
    expect(result).toMatchObject({
      up: false,
      detail: 'status 200 OK, "never there" not in the first 100000 bytes of the body',
    });
    expect(result.bytesRead).toBeLessThanOrEqual(16_384 + 100_000 + ONE_READ);
  });

  it('a Content-Length larger than what is sent: down when the backend closes or the timeout hits', async () => {
    const { port } = await backend(bad.httpRaw('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nshort body'));
    expect(await timedCheck({ type: 'http', expectBody: 'welcome' }, port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (body)',
    });
    const closing = await backend(
      bad.say('', (socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nshort body')),
    );
    const result = await timedCheck({ type: 'http', expectBody: 'welcome' }, closing.port);
    expect(result.up).toBe(false);
    expect(result.detail).toMatch(/^body (ECONNRESET|aborted)|^body: aborted|^status 200 OK, body lacks "welcome"$/);
  });

  it('a 301 to elsewhere: not followed; up by the default 200-399, down when 200 is required', async () => {
    let elsewhereHit = false;
    const elsewhere = await httpServer((_req, res) => {
      elsewhereHit = true;
      res.end('ok');
    });
    closers.push(elsewhere.close);
    const moved = await backend(
      bad.httpRaw(
        `HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:${elsewhere.port}/\r\nContent-Length: 0\r\n\r\n`,
      ),
    );
    expect(await timedCheck({ type: 'http' }, moved.port)).toMatchObject({
      up: true,
      detail: `301 Moved Permanently (Location: http://127.0.0.1:${elsewhere.port}/)`,
    });
    expect(await timedCheck({ type: 'http', expectStatus: [200] }, moved.port)).toMatchObject({
      up: false,
      detail: `status 301 Moved Permanently (Location: http://127.0.0.1:${elsewhere.port}/), expected 200`,
    });
    expect(elsewhereHit).toBe(false);
  });

  it('a malformed status line: down', async () => {
    const { port } = await backend(bad.httpRaw('HTTX/1.1 two hundred\r\n\r\n'));
    const result = await timedCheck({ type: 'http' }, port);
    expect(result.up).toBe(false);
    expect(result.detail).toMatch(/^malformed HTTP response \(HPE_/);
  });
});

describe('tls', () => {
  let pki: TestPki;
  beforeAll(async () => {
    pki = await makePki();
  });
  afterAll(async () => {
    await pki?.remove();
  });

  it('an expired certificate: down with the date; up with verify off unless minValidDays', async () => {
    const { port } = await backend(bad.tlsServer(pki.expired));
    const result = await timedCheck({ type: 'tls', ca: pki.caFile }, port);
    expect(result.up).toBe(false);
    expect(result.detail).toMatch(/^TLS: certificate not trusted: CERT_HAS_EXPIRED \(expired \d{4}-\d\d-\d\d\)$/);
    expect(await timedCheck({ type: 'tls', verify: false }, port)).toMatchObject({ up: true });
    expect((await timedCheck({ type: 'tls', verify: false, minValidDays: 1 }, port)).detail).toMatch(
      /^TLS: certificate expired \(\d{4}-\d\d-\d\d\), minValidDays is 1$/,
    );
  });

  it('a self-signed certificate: down unless verify is off', async () => {
    const { port } = await backend(bad.tlsServer(pki.selfSigned));
    expect(await timedCheck({ type: 'tls' }, port)).toMatchObject({
      up: false,
      detail: 'TLS: certificate not trusted: DEPTH_ZERO_SELF_SIGNED_CERT',
    });
    expect(await timedCheck({ type: 'tls', verify: false }, port)).toMatchObject({ up: true });
    // Trusting the certificate itself as a CA makes it pass.
    expect(await timedCheck({ type: 'tls', ca: pki.selfSigned.cert }, port)).toMatchObject({ up: true });
  });

  it('a wrong-name certificate: down naming both names', async () => {
    const { port } = await backend(bad.tlsServer(pki.wrongName));
    expect(await timedCheck({ type: 'tls', ca: pki.caFile }, port)).toMatchObject({
      up: false,
      detail: 'TLS: certificate is not for 127.0.0.1 (it names DNS:wrong.example)',
    });
    expect(await timedCheck({ type: 'tls', ca: pki.caFile, servername: 'wrong.example' }, port)).toMatchObject({
      up: true,
    });
    expect(await timedCheck({ type: 'https', ca: pki.caFile, servername: 'localhost' }, port)).toMatchObject({
      up: false,
      detail: 'TLS: certificate is not for localhost (it names DNS:wrong.example)',
    });
  });

  it('a handshake that never finishes: down at the timeout', async () => {
    const { port } = await backend(bad.silent());
    expect(await timedCheck({ type: 'tls' }, port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (TLS handshake)',
    });
    expect(await timedCheck({ type: 'https' }, port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (TLS handshake)',
    });
    const dripping = await backend(bad.drip('\x16\x03\x03\x00\x40', 200));
    expect(await timedCheck({ type: 'tls' }, dripping.port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (TLS handshake)',
    });
  });

  it('plain text where TLS is expected: down fast', async () => {
    const { port } = await backend(bad.say('220 not tls at all\r\n'));
    const result = await timedCheck({ type: 'tls' }, port);
    expect(result.up).toBe(false);
    expect(result.detail).toMatch(/^TLS handshake failed: /);
  });

  it('STARTTLS offered but the server then talks plain text: down', async () => {
    const { port } = await backend(
      bad.say('220 mx ESMTP\r\n', (socket, data) => {
        if (data.startsWith('EHLO')) socket.write('250-mx\r\n250 STARTTLS\r\n');
        if (data.startsWith('STARTTLS')) socket.write('220 go ahead\r\n250 injected\r\n');
      }),
    );
    expect(await timedCheck({ type: 'smtp', starttls: true }, port)).toMatchObject({
      up: false,
      detail: 'TLS handshake: backend sent data before the TLS handshake',
    });
  });
});

describe('exec', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), `nfh-exec-${process.pid}-`));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Gone, or a zombie waiting for a reaper: either way no longer running. */
  function running(pid: number): boolean {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
      return !/^\d+ \(.*\) Z /.test(stat);
    } catch {
      return false;
    }
  }

  async function waitGone(pid: number): Promise<boolean> {
    const deadline = performance.now() + 2000;
    while (running(pid)) {
      if (performance.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }

  it('a program that leaves a child behind and exits 0: up at once, the child killed with its group', async () => {
    const pidFile = path.join(dir, 'left-behind.pid');
    // The grandchild keeps stdout open: waiting for EOF would hang until the timeout.
    const script = `sleep 60 & echo $! > ${pidFile}; echo all good`;
    const result = await timedCheck({ type: 'exec', command: ['/bin/sh', '-c', script] }, 1, 2000);
    expect(result).toMatchObject({ up: true, detail: 'exit 0: all good' });
    expect(result.latencyMs).toBeLessThan(1000);
    const pid = Number(await readFile(pidFile, 'latin1'));
    expect(await waitGone(pid)).toBe(true);
  });

  it('a program that hangs with a child: down at the timeout, the whole group killed', async () => {
    const pidFile = path.join(dir, 'hanging.pid');
    const script = `sleep 60 & echo $! > ${pidFile}; echo starting; sleep 60`;
    const result = await timedCheck({ type: 'exec', command: ['/bin/sh', '-c', script] }, 1);
    expect(result).toMatchObject({ up: false, detail: 'timeout after 500ms (running /bin/sh)' });
    const pid = Number(await readFile(pidFile, 'latin1'));
    expect(await waitGone(pid)).toBe(true);
  });

  it('a program that floods its output: bounded', async () => {
    const result = await timedCheck(
      { type: 'exec', command: ['/bin/sh', '-c', 'yes first line | head -c 10000000; exit 3'], maxOutputBytes: 1000 },
      1,
      2000,
    );
    expect(result.up).toBe(false);
    expect(result.detail).toMatch(/^(exit 3|exit 141|killed by SIGPIPE): first line$/);
    expect(result.bytesRead).toBeLessThanOrEqual(1000);
  });
});

describe('connect', () => {
  it('a listener whose accept queue is full: down at the timeout', async () => {
    const { port } = await backend(bad.fullAcceptQueue());
    expect(await timedCheck({ type: 'tcp' }, port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (connect)',
    });
    expect(await timedCheck({ type: 'smtp' }, port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (connect)',
    });
  });
});
