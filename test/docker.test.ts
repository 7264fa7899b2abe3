import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSmtpServer, type SmtpServer } from '../demo/smtp-server.js';
import { tempDir, waitUntil } from './support/daemon.js';
import { type Dockerd, startDockerd } from './support/dockerd.js';
import { run } from './support/exec.js';
import { eachLine } from './support/lines.js';
import { closedPort } from './support/servers.js';

/*
 * The Dockerfile built and run by a real (private) dockerd: test/support/dockerd.ts.
 * Docker Hub cannot be reached here, so the build's NODE_IMAGE is a local base image
 * (test/docker/base-image.sh: Debian 12 minbase plus the host's node and npm, cached)
 * imported with `docker import`; the Dockerfile's default stays the Node LTS image.
 * The build uses BuildKit and the host network (npm and apt fetch). The image runs as
 * the docs say: --cap-drop ALL --cap-add NET_ADMIN --read-only. The `run` case drives
 * an nft set in a network namespace of its own: that of a holder container started
 * with --network none, which the daemon's container joins (--network container:) and
 * the test enters from the host (nsenter) to load the rules, run the backend on its
 * loopback and read the set. No traffic leaves loopback except the build's fetches.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const IMAGE = `nfh-test-${process.pid}:latest`;
const BASE = `nfh-node-base-${process.pid}:latest`;
const SMTP_BACKEND = fileURLToPath(new URL('./support/smtp-backend.mjs', import.meta.url));

let engine: Dockerd | undefined;
let tmp: ReturnType<typeof tempDir>;
let smtp: SmtpServer;
let buildSeconds = 0;
const backends: ChildProcess[] = [];

/** The `docker run` options docs/install.md gives: one capability, read-only, the config folder read-only. */
const hardened = () => [
  '--cap-drop',
  'ALL',
  '--cap-add',
  'NET_ADMIN',
  '--security-opt',
  'no-new-privileges',
  '--read-only',
  '-v',
  `${tmp.dir}/etc:/etc/nf-healthd:ro`,
];
const runImage = (extra: string[], args: string[], timeout = 60_000) =>
  engine!.docker(['run', '--rm', ...hardened(), ...extra, IMAGE, ...args], timeout);

function writeConfig(text: string): void {
  writeFileSync(path.join(tmp.dir, 'etc', 'config.yaml'), text);
}

const smtpConfig = (writer: string, backends: { name: string; port: number }[]) => `
defaults: {interval: 500ms, fastInterval: 200ms, timeout: 1s, rise: 1, fall: 1}
writer: ${writer}
stateFile: /run/nf-healthd/state.json
services:
  - name: mail
    vip: 10.0.0.1
    port: 25
    check: {type: smtp}
    backends:
${backends.map((b) => `      - {name: ${b.name}, address: 127.0.0.1, port: ${b.port}}`).join('\n')}
`;

beforeAll(async () => {
  tmp = tempDir('nfh-docker-');
  mkdirSync(path.join(tmp.dir, 'etc'));
  chmodSync(tmp.dir, 0o755);
  smtp = createSmtpServer();
  await smtp.start();
  const base = await run('bash', [path.join(ROOT, 'test/docker/base-image.sh')], 600_000);
  if (base.code !== 0) throw new Error(`base-image.sh failed: ${base.stderr}`);
  engine = await startDockerd();
  await engine.must(
    [
      'import',
      '--change',
      'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      '--change',
      'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt',
      '--change',
      'CMD ["node"]',
      base.stdout.trim(),
      BASE,
    ],
    300_000,
  );
  const started = performance.now();
  await engine.must(['build', '--network', 'host', '--build-arg', `NODE_IMAGE=${BASE}`, '-t', IMAGE, ROOT], 600_000);
  buildSeconds = (performance.now() - started) / 1000;
}, 1_200_000);

afterAll(async () => {
  for (const child of backends) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  try {
    if (engine) {
      const ids = (await engine.docker(['ps', '-aq'])).stdout.trim().split('\n').filter(Boolean);
      if (ids.length > 0) await engine.docker(['rm', '-f', ...ids]);
    }
  } finally {
    await engine?.stop();
    await smtp?.stop();
    tmp?.cleanup();
  }
}, 120_000);

describe('the Dockerfile, built and run by a private dockerd', () => {
  it('builds with BuildKit on the local base image', async () => {
    const size = Number((await engine!.must(['image', 'inspect', '--format', '{{.Size}}', IMAGE])).trim());
    // Figures for docs/install.md; the bounds only catch a build that went badly wrong.
    console.info(`image ${IMAGE}: ${(size / 1e6).toFixed(0)} MB, built in ${buildSeconds.toFixed(0)} s`);
    expect(size).toBeGreaterThan(50e6);
    expect(size).toBeLessThan(1e9);
    const entry = (await engine!.must(['image', 'inspect', '--format', '{{json .Config.Entrypoint}}', IMAGE])).trim();
    expect(JSON.parse(entry)).toEqual(['node', '--max-semi-space-size=32', '/opt/nf-healthd/bin/nf-healthd.js']);
  }, 60_000);

  it('--version', async () => {
    const r = await runImage([], ['--version']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(VERSION);
  }, 60_000);

  it('probe against a loopback backend: exit 0 up, 2 down, 78 for a broken config', async () => {
    const closed = await closedPort();
    writeConfig(smtpConfig('{type: condition, dir: /tmp}', [{ name: 'mail1', port: smtp.port }]));
    const up = await runImage(['--network', 'host'], ['probe']);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toMatch(/^mail +mail1 +127\.0\.0\.1:\d+ +smtp +up /m);
    writeConfig(
      smtpConfig('{type: condition, dir: /tmp}', [
        { name: 'mail1', port: smtp.port },
        { name: 'mail2', port: closed },
      ]),
    );
    const down = await runImage(['--network', 'host'], ['probe']);
    expect(down.code, down.stderr).toBe(2);
    expect(down.stdout).toMatch(/^mail +mail2 +127\.0\.0\.1:\d+ +smtp +DOWN .*connect ECONNREFUSED$/m);
    writeConfig('services: []\n');
    const broken = await runImage(['--network', 'host'], ['probe']);
    expect(broken.code).toBe(78);
    expect(broken.stderr).toContain('/etc/nf-healthd/config.yaml');
  }, 180_000);

  it('run drives an nft set in a network namespace, and docker stop ends it within the stop timeout', async () => {
    // The namespace: a holder container's (--network none: loopback only).
    const holder = `nfh-holder-${process.pid}`;
    await engine!.must([
      'run',
      '-d',
      '--name',
      holder,
      '--network',
      'none',
      '--read-only',
      '--entrypoint',
      'node',
      IMAGE,
      '-e',
      'setInterval(() => {}, 1 << 30)',
    ]);
    const pid = (await engine!.must(['inspect', '--format', '{{.State.Pid}}', holder])).trim();
    expect(Number(pid)).toBeGreaterThan(0);
    const inNs = (argv: string[], input?: string) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        const child = spawn('nsenter', ['-t', pid, '-n', ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
        child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
        child.once('exit', (code) => resolve({ code: code ?? 1, stdout, stderr }));
        child.stdin.end(input ?? '');
      });

    // Two SMTP backends on the namespace's loopback.
    const ports = [2501, 2502];
    for (const [i, port] of ports.entries()) {
      const child = spawn(
        'nsenter',
        ['-t', pid, '-n', process.execPath, SMTP_BACKEND, '127.0.0.1', String(port), `mail${i + 1}`],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      backends.push(child);
      await new Promise<void>((resolve, reject) => {
        eachLine(child.stdout!, (line) => line === 'listening' && resolve());
        child.once('exit', (code) => reject(new Error(`smtp-backend exited ${code}`)));
      });
    }
    writeConfig(
      smtpConfig('{type: nft}', [
        { name: 'mail1', port: ports[0]! },
        { name: 'mail2', port: ports[1]! },
      ]),
    );
    // The rules as the image prints them, loaded into the namespace from the host.
    const rules = await runImage([], ['rules']);
    expect(rules.code, rules.stderr).toBe(0);
    const loaded = await inNs(['nft', '-f', '-'], rules.stdout);
    expect(loaded.code, loaded.stderr).toBe(0);
    const marks = async () => {
      const r = await inNs(['nft', '-j', 'list', 'set', 'inet', 'nfh', 'up']);
      return r.stdout;
    };

    const name = `nfh-run-${process.pid}`;
    await engine!.must([
      'run',
      '-d',
      '--name',
      name,
      '--network',
      `container:${holder}`,
      ...hardened(),
      '--tmpfs',
      '/run/nf-healthd',
      '--stop-timeout',
      '10',
      IMAGE,
    ]);
    const both = await waitUntil(marks, (s) => s.includes('257') && s.includes('258'), 20_000, 100);
    expect(both).toMatch(/"elem":\s*\[257, 258\]/);
    backends[1]!.kill('SIGUSR1'); // mail2 stops accepting: its mark leaves the set
    await waitUntil(marks, (s) => s.includes('257') && !s.includes('258'), 20_000, 100);

    const stopped = performance.now();
    await engine!.must(['stop', name], 60_000);
    const seconds = (performance.now() - stopped) / 1000;
    const state = JSON.parse((await engine!.must(['inspect', '--format', '{{json .State}}', name])).trim()) as {
      ExitCode: number;
      OOMKilled: boolean;
    };
    // Exit 0 on SIGTERM: not the SIGKILL (137) docker sends when the stop timeout runs out.
    expect(state.ExitCode).toBe(0);
    expect(seconds).toBeLessThan(10);
    const logs = await engine!.must(['logs', name]);
    expect(logs).toContain('backend mail2 is down');
    expect(logs).toContain('stopping on SIGTERM');
  }, 180_000);
});
