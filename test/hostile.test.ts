import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_BOUNDS } from '../src/probes/connection.js';
import { checkSchema } from '../src/probes/registry.js';
import { runCheck } from '../src/probes/run.js';
import type { ProbeResult } from '../src/probes/types.js';
import { makeHugeCert, makeLongChain, makePki, type TestPki } from './support/certs.js';
import * as bad from './support/hostile.js';
import { httpServer } from './support/servers.js';

/**
 * Backends at their worst. Every case asserts the verdict, that the check returned
 * within a bound derived from its timeout (a bound, not a timing claim: it is wide so
 * that a loaded 2-core machine running other tests beside an 8 MiB flood cannot fail
 * it, yet a check that ignored its timeout would), and, where the backend sends
 * without end, that the bytes read stayed within the probe's bound.
 */
const TIMEOUT = 500;
/** Twice the timeout and a second more: timers fire late on a busy machine, never early. */
const bound = (timeout: number) => 2 * timeout + 1000;
/** A socket read hands over up to 64 KiB at once, so a bound can be passed by at most one read. */
const ONE_READ = 65_536;
const LINE_BOUND = DEFAULT_BOUNDS.maxTotalBytes + ONE_READ;

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});

async function backend<T extends bad.Hostile>(server: Promise<T>): Promise<T> {
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
  expect(performance.now() - started).toBeLessThan(bound(timeout));
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
    // 30 bytes at 50 ms each take 1.5 s; the check gives up at 1 s (a second, not half of
    // one: a busy machine can hold the test's timers long enough that no byte came yet).
    const { port } = await backend(bad.drip('220 mail.example ESMTP ready\r\n', 50));
    const result = await timedCheck({ type: 'smtp' }, port, 1000);
    expect(result).toMatchObject({ up: false, detail: 'timeout after 1s (greeting)' });
    expect(result.bytesRead).toBeGreaterThan(0);
    expect(result.bytesRead).toBeLessThan(30);
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

  it('a certificate not yet valid: down with the date it starts', async () => {
    const { port } = await backend(bad.tlsServer(pki.notYetValid));
    const result = await timedCheck({ type: 'tls', ca: pki.caFile }, port);
    const from = new Date(Date.now() + 10 * 86_400_000).toISOString().slice(0, 10);
    expect(result).toMatchObject({
      up: false,
      detail: `TLS: certificate not trusted: CERT_NOT_YET_VALID (valid from ${from})`,
    });
  });

  it('a self-signed certificate: down unless verify is off', async () => {
    const { port } = await backend(bad.tlsServer(pki.selfSigned));
    expect(await timedCheck({ type: 'tls' }, port)).toMatchObject({
      up: false,
      detail:
        'TLS: certificate not trusted: DEPTH_ZERO_SELF_SIGNED_CERT (self-signed: trust it with ca set to the certificate itself, or set verify: false)',
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

  it("plain text where TLS is expected: down with words, not OpenSSL's string", async () => {
    const { port } = await backend(bad.say('220 not tls at all\r\n'));
    const plain =
      'TLS handshake failed: the backend does not answer in TLS (a plain-text port?) (wrong version number)';
    expect(await timedCheck({ type: 'tls' }, port)).toMatchObject({ up: false, detail: plain });
    expect(await timedCheck({ type: 'https' }, port)).toMatchObject({ up: false, detail: plain });
    expect(await timedCheck({ type: 'pop3', tls: true }, port)).toMatchObject({ up: false, detail: plain });
  });

  it('a CA the certificate is not from, and no CA at all: two different verdicts', async () => {
    const { port } = await backend(bad.tlsServer(pki.good));
    expect(await timedCheck({ type: 'tls' }, port)).toMatchObject({
      up: false,
      detail:
        'TLS: certificate not trusted: UNABLE_TO_VERIFY_LEAF_SIGNATURE (issuer "nf-healthd test CA" is not among the system\'s CAs and no ca file is set)',
    });
    expect(await timedCheck({ type: 'tls', ca: pki.selfSigned.cert }, port)).toMatchObject({
      up: false,
      detail: `TLS: certificate not trusted: UNABLE_TO_VERIFY_LEAF_SIGNATURE (issuer "nf-healthd test CA" is in neither ca file ${pki.selfSigned.cert} nor the system's CAs)`,
    });
    expect(await timedCheck({ type: 'tls', ca: pki.caFile }, port)).toMatchObject({ up: true });
  });

  it('a handshake that stalls after the ClientHello: down at the timeout', async () => {
    const server = await backend(bad.stallAfterClientHello());
    expect(await timedCheck({ type: 'tls' }, server.port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (TLS handshake)',
    });
    expect(await timedCheck({ type: 'smtp', starttls: false, ehlo: 'probe' }, server.port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (greeting)',
    });
    expect(await timedCheck({ type: 'imap', tls: true }, server.port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (TLS handshake)',
    });
    expect(server.clientHellos()).toBe(2);
  });

  it('garbage instead of a ServerHello: down at once, in words', async () => {
    const text = await backend(bad.answerClientHello(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n')));
    expect(await timedCheck({ type: 'tls' }, text.port)).toMatchObject({
      up: false,
      detail: 'TLS handshake failed: the backend does not answer in TLS (a plain-text port?) (wrong version number)',
    });
    // A TLS record header that announces an alert-sized record, then noise.
    const noise = Buffer.concat([Buffer.from([0x16, 0x03, 0x03, 0x00, 0x20]), Buffer.alloc(32, 0xee)]);
    const record = await backend(bad.answerClientHello(noise));
    const result = await timedCheck({ type: 'tls' }, record.port);
    expect(result.up).toBe(false);
    expect(result.detail).toMatch(/^TLS handshake failed: [a-z]/);
    expect(result.detail).not.toMatch(/error:|\.c:\d|\n/);
    // Random bytes of every length: always a verdict in words, never OpenSSL's raw string.
    for (const length of [1, 5, 64, 4096]) {
      const random = await backend(bad.answerClientHello(randomBytes(length)));
      const verdict = await timedCheck({ type: 'tls' }, random.port);
      expect(verdict.up).toBe(false);
      expect(verdict.detail).toMatch(/^(TLS handshake failed: [a-z]|timeout after 500ms \(TLS handshake\)$)/);
      expect(verdict.detail).not.toMatch(/error:|\.c:\d|\n/);
    }
  });

  it('renegotiation: once before the greeting is fine; again and again ends at the timeout', async () => {
    const once = await backend(bad.tlsServer(pki.good, '+OK ready\r\n', 'once'));
    expect(await timedCheck({ type: 'pop3', tls: true, ca: pki.caFile }, once.port)).toMatchObject({
      up: true,
      detail: expect.stringMatching(/^\+OK ready; TLSv1\.2, certificate valid until /),
    });
    expect(once.renegotiations()).toBe(1);
    const forever = await backend(bad.tlsServer(pki.good, '+OK never said\r\n', 'forever'));
    expect(await timedCheck({ type: 'pop3', tls: true, ca: pki.caFile }, forever.port)).toMatchObject({
      up: false,
      detail: 'timeout after 500ms (greeting)',
    });
  });

  it('a chain of 100 certificates is verified; one past the verify depth is down in words', async () => {
    const hundred = await backend(bad.tlsServer(await makeLongChain(pki, 99)));
    expect(await timedCheck({ type: 'tls', ca: pki.caFile }, hundred.port, 2000)).toMatchObject({
      up: true,
      detail: expect.stringMatching(/^TLSv1\.3, certificate valid until /),
    });
    const tooLong = await backend(bad.tlsServer(await makeLongChain(pki, 150)));
    expect(await timedCheck({ type: 'tls', ca: pki.caFile }, tooLong.port, 2000)).toMatchObject({
      up: false,
      detail:
        'TLS: certificate not trusted: UNABLE_TO_GET_ISSUER_CERT_LOCALLY (the chain is 152 certificates long; verification follows at most 100)',
    });
    // Without verification the chain's length does not matter.
    expect(await timedCheck({ type: 'tls', verify: false }, tooLong.port, 2000)).toMatchObject({ up: true });
  });

  it('a 1 MB certificate: down on the size bound, within the timeout', async () => {
    const huge = await makeHugeCert(pki, 1024 * 1024);
    const { port } = await backend(bad.tlsServer(huge));
    const result = await timedCheck({ type: 'tls', ca: pki.caFile }, port, 2000);
    expect(result).toMatchObject({
      up: false,
      detail: 'TLS handshake failed: the backend sent a handshake message larger than allowed (excessive message size)',
    });
  }, 30_000);

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
    // Up before its 2 s timeout: it did not wait for the grandchild's end of output.
    expect(result.latencyMs).toBeLessThan(1500);
    const pid = Number(await readFile(pidFile, 'latin1'));
    expect(await waitGone(pid)).toBe(true);
  });

  it('a program that hangs with a child: down at the timeout, the whole group killed', async () => {
    const pidFile = path.join(dir, 'hanging.pid');
    const script = `sleep 60 & echo $! > ${pidFile}; echo starting; sleep 60`;
    // Two seconds: the shell must have started its child and written the pid file first.
    const result = await timedCheck({ type: 'exec', command: ['/bin/sh', '-c', script] }, 1, 2000);
    expect(result).toMatchObject({ up: false, detail: 'timeout after 2s (running /bin/sh)' });
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
