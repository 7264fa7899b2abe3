import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parsePlan } from '../src/plan/load.js';
import { checkSchema } from '../src/probes/registry.js';
import { checkLabel, runCheck } from '../src/probes/run.js';
import { makePki, type TestPki } from './support/certs.js';
import { BIN } from './support/daemon.js';
import { tlsServer } from './support/hostile.js';
import { closedPort, tcpServer } from './support/servers.js';

/** Every check type of issue 5 against loopback servers made here, with certificates made by openssl. */

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});

let pki: TestPki;
let dir: string;
beforeAll(async () => {
  pki = await makePki();
  dir = await mkdtemp(path.join(os.tmpdir(), `nfh-types-${process.pid}-`));
});
afterAll(async () => {
  await pki?.remove();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function check(input: unknown, port: number, timeout = 1000) {
  return runCheck(checkSchema.parse(input), { service: 'svc', backend: 'b1', address: '127.0.0.1', port }, timeout);
}

/** A line server: `answer(line)` returns what to write back for each line received. */
async function lineServer(greeting: string, answer: (line: string, socket: net.Socket) => string | undefined) {
  const lines: string[] = [];
  const s = await tcpServer((socket) => {
    socket.write(greeting);
    let buffer = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).replace(/\r$/, '');
        buffer = buffer.slice(nl + 1);
        lines.push(line);
        const reply = answer(line, socket);
        if (reply !== undefined) socket.write(reply);
      }
    });
  });
  closers.push(s.close);
  return { port: s.port, lines };
}

/** An SMTP server that can STARTTLS with the given certificate; records what it heard, and over what. */
async function starttlsServer(files: { key: string; cert: string }, offer = true) {
  const heard: string[] = [];
  const secureContext = tls.createSecureContext({ key: fs.readFileSync(files.key), cert: fs.readFileSync(files.cert) });
  const s = await tcpServer((plain) => {
    const serve = (socket: net.Socket, secure: boolean) => {
      let buffer = '';
      const onData = (chunk: Buffer) => {
        buffer += chunk.toString('latin1');
        let nl;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl).replace(/\r$/, '');
          buffer = buffer.slice(nl + 1);
          heard.push(`${secure ? 'tls' : 'plain'}: ${line}`);
          const verb = line.split(' ')[0]!.toUpperCase();
          if (verb === 'EHLO')
            socket.write(`250-mx.test\r\n${offer && !secure ? '250-STARTTLS\r\n' : ''}250 8BITMIME\r\n`);
          else if (verb === 'QUIT') socket.end('221 bye\r\n');
          else if (verb === 'STARTTLS' && !secure) {
            socket.removeListener('data', onData);
            socket.write('220 go ahead\r\n', () => {
              const upgraded = new tls.TLSSocket(socket, { isServer: true, secureContext });
              upgraded.on('error', () => undefined);
              serve(upgraded, true);
            });
          } else socket.write('502 no\r\n');
        }
      };
      socket.on('data', onData);
    };
    plain.write('220 mx.test ESMTP\r\n');
    serve(plain, false);
  });
  closers.push(s.close);
  return { port: s.port, heard };
}

describe('tls', () => {
  it('is up with a certificate from the given CA, with protocol and expiry in the detail', async () => {
    const s = await tlsServer(pki.good);
    closers.push(s.close);
    const result = await check({ type: 'tls', ca: pki.caFile }, s.port);
    expect(result).toMatchObject({ up: true });
    expect(result.detail).toMatch(/^TLSv1\.[23], certificate valid until \d{4}-\d\d-\d\d$/);
    expect(
      await check({ type: 'tls', ca: pki.caFile, servername: 'localhost', minValidDays: 30 }, s.port),
    ).toMatchObject({ up: true });
  });

  it('is down without the CA (not in the system store)', async () => {
    const s = await tlsServer(pki.good);
    closers.push(s.close);
    expect(await check({ type: 'tls' }, s.port)).toMatchObject({
      up: false,
      detail:
        'TLS: certificate not trusted: UNABLE_TO_VERIFY_LEAF_SIGNATURE (issuer "nf-healthd test CA" is not among the system\'s CAs and no ca file is set)',
    });
  });

  it('is down when the certificate expires sooner than minValidDays, with the date', async () => {
    const s = await tlsServer(pki.soon);
    closers.push(s.close);
    expect(await check({ type: 'tls', ca: pki.caFile, minValidDays: 3 }, s.port)).toMatchObject({ up: true });
    const result = await check({ type: 'tls', ca: pki.caFile, minValidDays: 14 }, s.port);
    expect(result.up).toBe(false);
    const expires = new Date(Date.now() + 5 * 86_400_000).toISOString().slice(0, 10);
    expect(result.detail).toBe(`TLS: certificate expires in 4 days (${expires}), minValidDays is 14`);
  });

  it('is down naming the file when the CA file is missing', async () => {
    const s = await tlsServer(pki.good);
    closers.push(s.close);
    expect(await check({ type: 'tls', ca: '/nonexistent/ca.pem' }, s.port)).toMatchObject({
      up: false,
      detail: 'ca file /nonexistent/ca.pem ENOENT',
    });
  });

  it('is down with ECONNREFUSED when nothing listens', async () => {
    expect(await check({ type: 'tls' }, await closedPort())).toMatchObject({
      up: false,
      detail: 'connect ECONNREFUSED',
    });
  });

  it('validates the TLS options', () => {
    const problems = (input: unknown) =>
      (checkSchema.safeParse(input).error?.issues ?? []).map((i) => `${i.path.join('.')}: ${i.message}`);
    expect(problems({ type: 'tls', ca: 'relative/ca.pem' })).toEqual(['ca: expected an absolute path to a PEM file']);
    expect(problems({ type: 'https', servername: 'bad name' })).toEqual(['servername: expected a host name']);
    expect(problems({ type: 'smtp', starttls: 'yes' })).toHaveLength(1);
    expect(problems({ type: 'tls', minValidDays: -1 })).toHaveLength(1);
    expect(problems({ type: 'exec', command: [] })).toEqual(['command: the program to run, then its arguments']);
    expect(problems({ type: 'exec', command: ['/bin/true'], env: { 'BAD-NAME': 'x' } })).toHaveLength(1);
  });
});

describe('https', () => {
  async function httpsServer(files: { key: string; cert: string }) {
    const hosts: string[] = [];
    const server = https.createServer(
      { key: fs.readFileSync(files.key), cert: fs.readFileSync(files.cert) },
      (req, res) => {
        hosts.push(String(req.headers.host));
        res.end(req.url === '/health' ? 'status: healthy' : 'hello');
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    return { port: (server.address() as net.AddressInfo).port, hosts };
  }

  it('is the http check over TLS: status, body and the certificate', async () => {
    const s = await httpsServer(pki.good);
    const result = await check(
      { type: 'https', ca: pki.caFile, servername: 'localhost', path: '/health', expectBody: 'healthy' },
      s.port,
    );
    expect(result.up).toBe(true);
    expect(result.detail).toMatch(/^200 OK, body has "healthy"; TLSv1\.[23], certificate valid until \d{4}-\d\d-\d\d$/);
    // The Host header follows servername.
    expect(s.hosts).toEqual(['localhost']);
  });

  it('is down on a body mismatch, and on an untrusted certificate before any request', async () => {
    const s = await httpsServer(pki.good);
    expect(await check({ type: 'https', ca: pki.caFile, expectBody: 'nope' }, s.port)).toMatchObject({
      up: false,
      detail: 'status 200 OK, body lacks "nope"',
    });
    const self = await httpsServer(pki.selfSigned);
    expect(await check({ type: 'https' }, self.port)).toMatchObject({
      up: false,
      detail:
        'TLS: certificate not trusted: DEPTH_ZERO_SELF_SIGNED_CERT (self-signed: trust it with ca set to the certificate itself, or set verify: false)',
    });
    expect(self.hosts).toEqual([]);
    expect(await check({ type: 'https', verify: false }, self.port)).toMatchObject({ up: true });
  });
});

describe('smtp with starttls', () => {
  it('EHLO, STARTTLS, handshake, EHLO again over TLS, QUIT', async () => {
    const s = await starttlsServer(pki.good);
    const result = await check(
      { type: 'smtp', starttls: true, ehlo: 'checker.test', ca: pki.caFile, servername: 'localhost' },
      s.port,
    );
    expect(result.up).toBe(true);
    expect(result.detail).toMatch(/^220 mx\.test ESMTP; TLSv1\.[23], certificate valid until /);
    await expect
      .poll(() => s.heard)
      .toEqual(['plain: EHLO checker.test', 'plain: STARTTLS', 'tls: EHLO checker.test', 'tls: QUIT']);
  });

  it('is down when STARTTLS is not offered', async () => {
    const s = await starttlsServer(pki.good, false);
    const result = await check({ type: 'smtp', starttls: true }, s.port);
    expect(result).toMatchObject({ up: false });
    expect(result.detail).toBe('EHLO: STARTTLS not offered (reply "250-mx.test | 250 8BITMIME")');
  });

  it('is down on a certificate for another name', async () => {
    const s = await starttlsServer(pki.wrongName);
    expect(await check({ type: 'smtp', starttls: true, ca: pki.caFile }, s.port)).toMatchObject({
      up: false,
      detail: 'TLS: certificate is not for 127.0.0.1 (it names DNS:wrong.example)',
    });
  });

  it('is down when STARTTLS is refused', async () => {
    const s = await lineServer('220 mx ESMTP\r\n', (line) =>
      line.startsWith('EHLO') ? '250-mx\r\n250 STARTTLS\r\n' : '454 4.7.0 TLS not available\r\n',
    );
    expect(await check({ type: 'smtp', starttls: true }, s.port)).toMatchObject({
      up: false,
      detail: 'STARTTLS: expected 220, got "454 4.7.0 TLS not available"',
    });
  });
});

describe('expect and its presets', () => {
  it('runs send/expect steps: prefix, regex, buffer search', async () => {
    const s = await lineServer('* hello from a custom thing\r\nREADY> ', (line) =>
      line === 'STATUS' ? 'status: all 3 workers alive\r\n' : 'ERR\r\n',
    );
    const steps = [
      { expect: '* hello' },
      { expect: 'READY> ', in: 'buffer' },
      { send: 'STATUS\r\n' },
      { expectRegex: '^status: all \\d+ workers alive$' },
    ];
    expect(await check({ type: 'expect', steps, farewell: 'BYE\r\n' }, s.port)).toMatchObject({
      up: true,
      detail: '* hello from a custom thing',
    });
    const wrong = await check(
      {
        type: 'expect',
        steps: [
          { expect: '* hello' },
          { expect: 'READY> ', in: 'buffer' },
          { send: 'STATUS\r\n' },
          { expectRegex: 'dead' },
        ],
      },
      s.port,
    );
    expect(wrong).toMatchObject({ up: false, detail: 'step 4: expected /dead/, got "status: all 3 workers alive"' });
  });

  it('reads multi-line replies in SMTP and FTP style', async () => {
    const s = await lineServer('220-first\r\nfree text\r\n220 ready\r\n', (line) =>
      line === 'NOOP' ? '250-ok\r\n250 fine\r\n' : undefined,
    );
    const steps = [{ expectReply: '220', style: 'ftp' }, { send: 'NOOP\r\n' }, { expectReply: '25' }];
    expect(await check({ type: 'expect', steps }, s.port)).toMatchObject({
      up: true,
      detail: '220 first | free text | ready',
    });
    const strict = await check({ type: 'expect', steps: [{ expectReply: '220' }] }, s.port);
    expect(strict).toMatchObject({ up: false, detail: 'step 1: malformed reply "free text"' });
  });

  it('rejects a bad regular expression in the config', () => {
    expect(checkSchema.safeParse({ type: 'expect', steps: [{ expectRegex: '(' }] }).success).toBe(false);
    expect(checkSchema.safeParse({ type: 'expect', steps: [] }).success).toBe(false);
  });

  it('runs a whole exchange over implicit TLS with a tls step first', async () => {
    const s = await tlsServer(pki.good, '+OK secure pop3 ready\r\n');
    closers.push(s.close);
    expect(
      await check({ type: 'expect', steps: [{ tls: true }, { expect: '+OK' }], ca: pki.caFile }, s.port),
    ).toMatchObject({ up: true });
    const pop3s = await check({ type: 'pop3', tls: true, ca: pki.caFile, servername: 'localhost' }, s.port);
    expect(pop3s.up).toBe(true);
    expect(pop3s.detail).toMatch(/^\+OK secure pop3 ready; TLSv1\.[23]/);
  });

  it('pop3: +OK up, -ERR down', async () => {
    const ok = await lineServer('+OK POP3 ready\r\n', () => '+OK bye\r\n');
    expect(await check({ type: 'pop3' }, ok.port)).toMatchObject({ up: true, detail: '+OK POP3 ready' });
    await expect.poll(() => ok.lines).toEqual(['QUIT']);
    const bad = await lineServer('-ERR too many connections\r\n', () => undefined);
    expect(await check({ type: 'pop3' }, bad.port)).toMatchObject({
      up: false,
      detail: 'greeting: expected +OK, got "-ERR too many connections"',
    });
  });

  it('imap: * OK up, * BYE down, LOGOUT sent', async () => {
    const ok = await lineServer('* OK [CAPABILITY IMAP4rev1] ready\r\n', () => '* BYE\r\na1 OK\r\n');
    expect(await check({ type: 'imap' }, ok.port)).toMatchObject({
      up: true,
      detail: '* OK [CAPABILITY IMAP4rev1] ready',
    });
    await expect.poll(() => ok.lines).toEqual(['a1 LOGOUT']);
    const bye = await lineServer('* BYE shutting down\r\n', () => undefined);
    expect((await check({ type: 'imap' }, bye.port)).up).toBe(false);
  });

  it('ftp: a multi-line 220 with free text lines', async () => {
    const s = await lineServer(
      '220-Welcome\r\n  this line has no code\r\n123 nor is this the end\r\n220 ready\r\n',
      () => '221 bye\r\n',
    );
    expect(await check({ type: 'ftp' }, s.port)).toMatchObject({
      up: true,
      detail: '220 Welcome | this line has no code | 123 nor is this the end | ready',
    });
    const busy = await lineServer('421 too many users\r\n', () => undefined);
    expect(await check({ type: 'ftp' }, busy.port)).toMatchObject({
      up: false,
      detail: 'greeting: expected 220, got "421 too many users"',
    });
  });

  it('ssh: the version line, after other lines, and our own version line back', async () => {
    const s = await lineServer('a banner line first\r\nSSH-2.0-OpenSSH_9.2p1 Debian\r\n', () => undefined);
    expect(await check({ type: 'ssh' }, s.port)).toMatchObject({ up: true, detail: 'SSH-2.0-OpenSSH_9.2p1 Debian' });
    await expect.poll(() => s.lines).toEqual(['SSH-2.0-nf-healthd']);
    const old = await lineServer('SSH-1.5-ancient\r\n', () => undefined);
    expect(await check({ type: 'ssh' }, old.port, 300)).toMatchObject({
      up: false,
      detail: 'timeout after 300ms (version)',
    });
  });

  it('redis: PING answered by +PONG', async () => {
    const s = await lineServer('', (line) => (line === 'PING' ? '+PONG\r\n' : '+OK\r\n'));
    expect(await check({ type: 'redis' }, s.port)).toMatchObject({ up: true, detail: '+PONG' });
    const loading = await lineServer('', () => '-LOADING Redis is loading the dataset in memory\r\n');
    expect((await check({ type: 'redis' }, loading.port)).detail).toBe(
      'PING: expected +PONG, got "-LOADING Redis is loading the dataset in memory"',
    );
  });

  it('lmtp: 220, LHLO answered by 250', async () => {
    const s = await lineServer('220 lmtp ready\r\n', (line) =>
      line.startsWith('LHLO') ? '250-lmtp\r\n250 PIPELINING\r\n' : '221 bye\r\n',
    );
    expect(await check({ type: 'lmtp' }, s.port)).toMatchObject({ up: true, detail: '220 lmtp ready' });
    await expect.poll(() => s.lines).toEqual(['LHLO localhost', 'QUIT']);
  });
});

describe('exec', () => {
  it('exit 0 is up, with the backend in the environment and the first line as detail', async () => {
    const script = 'echo "$NFH_SERVICE/$NFH_BACKEND at $NFH_ADDRESS:$NFH_PORT $EXTRA"; echo second line';
    expect(await check({ type: 'exec', command: ['/bin/sh', '-c', script], env: { EXTRA: 'x' } }, 2525)).toMatchObject({
      up: true,
      detail: 'exit 0: svc/b1 at 127.0.0.1:2525 x',
    });
  });

  it('another exit code is down with the first line (stderr too)', async () => {
    expect(await check({ type: 'exec', command: ['/bin/sh', '-c', 'echo "disk full" >&2; exit 2'] }, 1)).toMatchObject({
      up: false,
      detail: 'exit 2: disk full',
    });
  });

  it('a missing program is down', async () => {
    expect(await check({ type: 'exec', command: ['/nonexistent/check'] }, 1)).toMatchObject({
      up: false,
      detail: 'exec /nonexistent/check: ENOENT',
    });
  });

  it('a program killed by a signal is down naming it', async () => {
    expect(await check({ type: 'exec', command: ['/bin/sh', '-c', 'kill -SEGV $$'] }, 1)).toMatchObject({
      up: false,
      detail: 'killed by SIGSEGV',
    });
  });
});

describe('checks: several per backend', () => {
  const yaml = (port: number, tlsPort: number) => `writer: {type: condition, dir: ${dir}}
services:
  - name: mail
    port: ${port}
    checks:
      - {type: smtp}
      - {type: tls, verify: false}
    backends:
      - {name: both, address: 127.0.0.1, port: ${port}}
      - name: own
        address: 127.0.0.1
        port: ${tlsPort}
        checks: [{type: tcp}, {type: tls, ca: ${pki.caFile}}]
      - {name: single, address: 127.0.0.1, check: {type: tcp}}
`;

  it('resolves backend and service lists; check and checks together is an error', () => {
    const specs = parsePlan(yaml(25, 465)).backends;
    expect(specs.map((s) => checkLabel(s.checks))).toEqual(['smtp+tls', 'tcp+tls', 'tcp']);
    expect(specs[2]!.check).toEqual({ type: 'tcp' });
    expect(() =>
      parsePlan(
        `services:\n  - name: s\n    port: 1\n    check: {type: tcp}\n    checks: [{type: tcp}]\n    backends: [{name: b, address: 127.0.0.1}]\n`,
      ),
    ).toThrow(/services\[0\]\.checks: set either check or checks, not both/);
  });

  it('is up only when every check passes; the detail names the one that failed', async () => {
    const smtp = await lineServer('220 mx ESMTP\r\n', () => '221 bye\r\n');
    const tlsBackend = await tlsServer(pki.good);
    closers.push(tlsBackend.close);
    const target = { service: 'mail', backend: 'b', address: '127.0.0.1', port: smtp.port };
    const both = [checkSchema.parse({ type: 'smtp' }), checkSchema.parse({ type: 'tcp' })];
    expect(await runCheck(both, target, 1000)).toMatchObject({
      up: true,
      detail: 'smtp: 220 mx ESMTP; tcp: connected',
    });
    // TLS against the SMTP port fails: the smtp part passed, the tls part names itself.
    const mixed = [checkSchema.parse({ type: 'smtp' }), checkSchema.parse({ type: 'tls' })];
    const result = await runCheck(mixed, target, 1000);
    expect(result.up).toBe(false);
    expect(result.detail).toMatch(/^tls: TLS handshake failed: /);
    // A slow one is stopped by the one overall timeout.
    const silent = await tcpServer(() => undefined);
    closers.push(silent.close);
    const slow = await runCheck(
      [checkSchema.parse({ type: 'tcp' }), checkSchema.parse({ type: 'smtp' })],
      { ...target, port: silent.port },
      300,
    );
    expect(slow).toMatchObject({ up: false, detail: 'smtp: timeout after 300ms (greeting)' });
  });

  it('probe --json reports the joined type and the failing check', async () => {
    const smtp = await lineServer('220 mx ESMTP\r\n', () => '221 bye\r\n');
    const tlsBackend = await tlsServer(pki.good);
    closers.push(tlsBackend.close);
    const file = path.join(dir, 'checks.yaml');
    await writeFile(file, yaml(smtp.port, tlsBackend.port));
    const out = await promisify(execFile)(process.execPath, [BIN, 'probe', '-c', file, '--json']).then(
      (r) => ({ code: 0, stdout: r.stdout }),
      (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
    );
    const rows = JSON.parse(out.stdout) as { backend: string; type: string; up: boolean; detail: string }[];
    expect(rows.map((r) => [r.backend, r.type, r.up])).toEqual([
      ['both', 'smtp+tls', false],
      ['own', 'tcp+tls', true],
      ['single', 'tcp', true],
    ]);
    expect(rows[0]!.detail).toMatch(/^tls: TLS handshake failed/);
    expect(out.code).toBe(2);
  });
});
