import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkSchema } from '../src/probes/registry.js';
import { runCheck } from '../src/probes/run.js';
import type { ProbeResult } from '../src/probes/types.js';
import { makePki, type TestPki } from './support/certs.js';
import { freePort } from './support/servers.js';

/**
 * Real daemons from Debian's packages (scripts/test-packages.txt), each started by
 * the test with its own config in a temp folder on its own loopback port (never the
 * system service): up while running, down once stopped. Every process is stopped by
 * its pid.
 */

let pki: TestPki;
let dir: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  pki = await makePki();
  dir = await mkdtemp(path.join(os.tmpdir(), `nfh-real-${process.pid}-`));
  // Postfix and nginx workers run as other users: they must reach their files.
  await chmod(dir, 0o755);
  await chmod(pki.dir, 0o755);
});

afterAll(async () => {
  await Promise.all([...children].map((c) => stop(c)));
  await pki?.remove();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Starts a daemon in the foreground as our child; its output is kept for failure messages. */
function start(program: string, args: string[]): ChildProcess & { output: () => string } {
  const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (d: Buffer) => (output = (output + d.toString()).slice(-4000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.on('error', (err) => (output += `\nspawn error: ${err.message}`));
  children.add(child);
  return Object.assign(child, { output: () => output });
}

/** SIGTERM by pid, SIGKILL if it lingers; resolves once it exited. */
async function stop(child: ChildProcess): Promise<void> {
  children.delete(child);
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid, 'SIGTERM');
  const timer = setTimeout(() => child.pid && process.kill(child.pid, 'SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

function check(input: unknown, port: number, timeout = 2000): Promise<ProbeResult> {
  return runCheck(checkSchema.parse(input), { service: 'real', backend: 'b', address: '127.0.0.1', port }, timeout);
}

/** Polls a check until its verdict is `up` or the deadline passes; returns the last result. */
async function until(
  up: boolean,
  input: unknown,
  port: number,
  what: () => string,
  deadlineMs = 15_000,
): Promise<ProbeResult> {
  const deadline = performance.now() + deadlineMs;
  for (;;) {
    const result = await check(input, port);
    if (result.up === up) return result;
    if (performance.now() > deadline)
      throw new Error(`still ${result.up ? 'up' : 'down'} (${result.detail}); server output:\n${what()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('Postfix', () => {
  it('smtp and smtp with STARTTLS: up while running, down once stopped', async () => {
    const base = path.join(dir, 'postfix');
    const conf = path.join(base, 'conf');
    const queue = path.join(base, 'queue');
    for (const d of [
      conf,
      path.join(queue, 'pid'),
      path.join(queue, 'private'),
      path.join(queue, 'public'),
      path.join(base, 'data'),
    ])
      await mkdir(d, { recursive: true });
    await chmod(base, 0o755);
    const { uid } = await idOf('postfix');
    for (const d of ['private', 'public']) await chown(path.join(queue, d), uid, 0);
    await chown(path.join(base, 'data'), uid, 0);
    await chmod(path.join(queue, 'private'), 0o700);
    await chmod(path.join(queue, 'public'), 0o755);
    const port = await freePort();
    const log = path.join(base, 'maillog');
    await writeFile(
      path.join(conf, 'main.cf'),
      [
        'compatibility_level = 3.6',
        `queue_directory = ${queue}`,
        `data_directory = ${path.join(base, 'data')}`,
        'mail_owner = postfix',
        'inet_interfaces = 127.0.0.1',
        'inet_protocols = ipv4',
        'myhostname = nfh-test.localdomain',
        'mydestination =',
        'smtpd_banner = $myhostname ESMTP nf-healthd test',
        `maillog_file = ${log}`,
        `maillog_file_prefixes = ${base}`,
        `smtpd_tls_cert_file = ${pki.good.cert}`,
        `smtpd_tls_key_file = ${pki.good.key}`,
        'smtpd_tls_security_level = may',
        '',
      ].join('\n'),
    );
    // Only what a greeting, EHLO and STARTTLS need; no chroot (column 5 "n").
    await writeFile(
      path.join(conf, 'master.cf'),
      [
        `127.0.0.1:${port} inet n - n - - smtpd`,
        'anvil unix - - n - 1 anvil',
        'tlsmgr unix - - n 1000? 1 tlsmgr',
        'proxymap unix - - n - - proxymap',
        'rewrite unix - - n - - trivial-rewrite',
        'postlog unix-dgram n - n - 1 postlogd',
        '',
      ].join('\n'),
    );
    // master -d: the Postfix master in the foreground, as our child (killed by its pid).
    const master = start('/usr/lib/postfix/sbin/master', ['-c', conf, '-d']);
    const logText = () => `${master.output()}\n${readTail(log)}`;
    const plain = await until(true, { type: 'smtp', ehlo: 'checker.test' }, port, logText);
    expect(plain.detail).toBe('220 nfh-test.localdomain ESMTP nf-healthd test');
    const tls = await check(
      { type: 'smtp', starttls: true, ehlo: 'checker.test', ca: pki.caFile, servername: 'localhost', minValidDays: 30 },
      port,
    );
    expect(tls.up, tls.detail).toBe(true);
    expect(tls.detail).toMatch(
      /^220 nfh-test\.localdomain ESMTP nf-healthd test; TLSv1\.[23], certificate valid until /,
    );
    // Postfix logged clean sessions: QUIT, no lost connections.
    await expect
      .poll(() => readTail(log), { timeout: 5000 })
      .toMatch(/disconnect from localhost\[127\.0\.0\.1\] ehlo=2 starttls=1 quit=1 commands=4/);
    expect(readTail(log)).toMatch(/disconnect from localhost\[127\.0\.0\.1\] ehlo=1 quit=1 commands=2/);
    expect(readTail(log)).not.toMatch(/lost connection/);
    // A certificate for another name than asked is down, against the real server too
    // (we hang up in the handshake: that one Postfix does log as a lost connection).
    expect(
      await check({ type: 'smtp', starttls: true, ca: pki.caFile, servername: 'mail.example' }, port),
    ).toMatchObject({ up: false, detail: expect.stringMatching(/^TLS: certificate is not for mail\.example/) });
    await stop(master);
    await until(false, { type: 'smtp' }, port, logText);
  });
});

describe('nginx', () => {
  it('http and https: up while running, down once stopped', async () => {
    const base = path.join(dir, 'nginx');
    await mkdir(base, { recursive: true });
    const [httpPort, httpsPort] = [await freePort(), await freePort()];
    const conf = path.join(base, 'nginx.conf');
    await writeFile(
      conf,
      `daemon off;
worker_processes 1;
pid ${base}/nginx.pid;
error_log ${base}/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${base}/body;
  proxy_temp_path ${base}/proxy;
  fastcgi_temp_path ${base}/fastcgi;
  uwsgi_temp_path ${base}/uwsgi;
  scgi_temp_path ${base}/scgi;
  server {
    listen 127.0.0.1:${httpPort};
    location = /health { return 200 "nginx healthy\\n"; }
    location / { return 301 http://elsewhere.invalid/; }
  }
  server {
    listen 127.0.0.1:${httpsPort} ssl;
    server_name localhost;
    ssl_certificate ${pki.good.cert};
    ssl_certificate_key ${pki.good.key};
    location = /health { return 200 "nginx healthy over TLS\\n"; }
  }
}
`,
    );
    const nginx = start('/usr/sbin/nginx', ['-p', base, '-c', conf, '-e', path.join(base, 'error.log')]);
    const logText = () => `${nginx.output()}\n${readTail(path.join(base, 'error.log'))}`;
    expect(
      (await until(true, { type: 'http', path: '/health', expectBody: 'healthy' }, httpPort, logText)).detail,
    ).toBe('200 OK, body has "healthy"');
    expect(await check({ type: 'http', path: '/', expectStatus: [200] }, httpPort)).toMatchObject({
      up: false,
      detail: 'status 301 Moved Permanently (Location: http://elsewhere.invalid/), expected 200',
    });
    const secure = await check(
      { type: 'https', path: '/health', expectBody: 'over TLS', ca: pki.caFile, servername: 'localhost' },
      httpsPort,
    );
    expect(secure.up, secure.detail).toBe(true);
    expect(secure.detail).toMatch(/^200 OK, body has "over TLS"; TLSv1\.[23], certificate valid until /);
    expect((await check({ type: 'tls', ca: pki.caFile }, httpsPort)).up).toBe(true);
    await stop(nginx);
    await until(false, { type: 'http', path: '/health' }, httpPort, logText);
    await until(false, { type: 'https', ca: pki.caFile }, httpsPort, logText);
  });
});

describe('Redis', () => {
  it('the redis preset: up while running, down once stopped', async () => {
    const base = path.join(dir, 'redis');
    await mkdir(base, { recursive: true });
    const port = await freePort();
    const redis = start('/usr/bin/redis-server', [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      base,
      '--daemonize',
      'no',
    ]);
    expect((await until(true, { type: 'redis' }, port, redis.output)).detail).toBe('+PONG');
    expect(
      await check(
        {
          type: 'expect',
          steps: [{ send: 'INFO server\r\n' }, { expectRegex: 'redis_version:\\d+', in: 'buffer' }],
          farewell: 'QUIT\r\n',
        },
        port,
      ),
    ).toMatchObject({ up: true });
    await stop(redis);
    await until(false, { type: 'redis' }, port, redis.output);
  });
});

describe('OpenSSH', () => {
  it('the ssh preset: up while running, down once stopped', async () => {
    const base = path.join(dir, 'sshd');
    await mkdir(base, { recursive: true });
    // sshd's privilege separation folder is compiled in; systemd would create it (RuntimeDirectory).
    await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
    const key = path.join(base, 'host_ed25519');
    await promisify(execFile)('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const port = await freePort();
    const conf = path.join(base, 'sshd_config');
    await writeFile(
      conf,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${key}`,
        `PidFile ${base}/sshd.pid`,
        'UsePAM no',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        '',
      ].join('\n'),
    );
    // -D: foreground (our child), -e: log to stderr.
    const sshd = start('/usr/sbin/sshd', ['-D', '-e', '-f', conf]);
    expect((await until(true, { type: 'ssh' }, port, sshd.output)).detail).toMatch(/^SSH-2\.0-OpenSSH_/);
    // We sent our version line: sshd logs no "did not receive identification string" (fail2ban food).
    await expect
      .poll(() => sshd.output(), { timeout: 5000 })
      .toMatch(/Connection closed by 127\.0\.0\.1 port \d+|Connection reset by 127\.0\.0\.1/);
    expect(sshd.output()).not.toMatch(/did not receive identification/i);
    await stop(sshd);
    await until(false, { type: 'ssh' }, port, sshd.output);
  });
});

function readTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').slice(-4000);
  } catch {
    return '';
  }
}

async function idOf(user: string): Promise<{ uid: number }> {
  const { stdout } = await promisify(execFile)('id', ['-u', user]);
  return { uid: Number(stdout.trim()) };
}
