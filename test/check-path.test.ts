import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSmtpServer } from '../demo/smtp-server.js';
import { checkSchema } from '../src/probes/registry.js';
import { runCheck } from '../src/probes/run.js';
import { caContextsBuilt, prepareCaFiles } from '../src/probes/tls-options.js';
import { makePki, type TestPki } from './support/certs.js';
import { cli } from './support/cli.js';
import { smtpFarmYaml } from './support/config.js';
import { startDaemon, tempDir, waitUntil } from './support/daemon.js';
import { type Hostile, tlsServer } from './support/hostile.js';

/*
 * Faults found when the daemon met real mail servers: many TLS checks naming one CA
 * file, a daemon with more than ten backends, and TLS verdicts that did not say what
 * went wrong. Real TLS and SMTP servers on loopback, the built CLI as a child process.
 */

let pki: TestPki;
let server: Hostile;
const tmp = tempDir('nfh-check-path-');
beforeAll(async () => {
  pki = await makePki();
  server = await tlsServer(pki.good, '220 tls.example ESMTP\r\n');
});
afterAll(async () => {
  await server?.close();
  await pki?.remove();
  tmp.cleanup();
});

/** A CA file no check has named yet: the context cache starts empty for it. */
function freshCaFile(name: string): string {
  const file = path.join(tmp.dir, name);
  copyFileSync(pki.caFile, file);
  return file;
}

describe('40 TLS checks naming one CA file, started together', () => {
  it('are all up, beside a plain SMTP check, and the trusted store is built once', async () => {
    const smtp = createSmtpServer();
    await smtp.start();
    try {
      const ca = freshCaFile('shared-ca.pem');
      const tls = checkSchema.parse({ type: 'tls', ca, servername: 'localhost' });
      const target = (port: number, i: number) => ({ service: 's', backend: `b${i}`, address: '127.0.0.1', port });
      const before = caContextsBuilt();
      // The daemon's default timeout: what the checks failed against before.
      const results = await Promise.all([
        ...Array.from({ length: 40 }, (_, i) => runCheck(tls, target(server.port, i), 1500)),
        runCheck(checkSchema.parse({ type: 'smtp' }), target(smtp.port, 40), 1500),
      ]);
      expect(results.filter((r) => !r.up)).toEqual([]);
      expect(caContextsBuilt() - before).toBe(1);

      // Later checks reuse it; a changed file is a new version, built once more.
      await runCheck(tls, target(server.port, 0), 1500);
      expect(caContextsBuilt() - before).toBe(1);
      writeFileSync(ca, `${readFileSync(pki.caFile, 'latin1')}\n`);
      const again = await Promise.all(Array.from({ length: 5 }, (_, i) => runCheck(tls, target(server.port, i), 1500)));
      expect(again.every((r) => r.up)).toBe(true);
      expect(caContextsBuilt() - before).toBe(2);
    } finally {
      await smtp.stop();
    }
  });

  it('prepared ahead (at start or reload), no check builds a store', async () => {
    const ca = freshCaFile('prepared-ca.pem');
    await prepareCaFiles([ca, ca, undefined]);
    const before = caContextsBuilt();
    const tls = checkSchema.parse({ type: 'tls', ca, servername: 'localhost' });
    const target = { service: 's', backend: 'b', address: '127.0.0.1', port: server.port };
    expect(await runCheck(tls, target, 1500)).toMatchObject({ up: true });
    expect(caContextsBuilt()).toBe(before);
  });

  it('a missing CA file: down naming the file, and tried again once it exists', async () => {
    const ca = path.join(tmp.dir, 'not-yet.pem');
    const tls = checkSchema.parse({ type: 'tls', ca, servername: 'localhost' });
    const target = { service: 's', backend: 'b', address: '127.0.0.1', port: server.port };
    expect(await runCheck(tls, target, 1500)).toMatchObject({ up: false, detail: `ca file ${ca} ENOENT` });
    copyFileSync(pki.caFile, ca);
    expect(await runCheck(tls, target, 1500)).toMatchObject({ up: true });
  });

  it('`probe` with 40 such backends and an SMTP one: all up, exit 0', async () => {
    const smtp = createSmtpServer();
    await smtp.start();
    try {
      const ca = freshCaFile('probe-ca.pem');
      const backends = Array.from(
        { length: 40 },
        (_, i) => `      - {name: tls${i}, address: 127.0.0.1, port: ${server.port}}`,
      ).join('\n');
      const file = path.join(tmp.dir, 'probe.yaml');
      writeFileSync(
        file,
        `writer: {type: condition, dir: ${tmp.dir}}
services:
  - name: secure
    port: 465
    check: {type: tls, ca: ${ca}, servername: localhost}
    backends:
${backends}
  - name: plain
    port: 25
    check: {type: smtp}
    backends:
      - {name: mx, address: 127.0.0.1, port: ${smtp.port}}
`,
      );
      const probe = await cli(['probe', '-c', file, '--json']);
      const rows = JSON.parse(probe.stdout) as { backend: string; up: boolean; detail: string }[];
      expect(rows.filter((r) => !r.up)).toEqual([]);
      expect(rows).toHaveLength(41);
      expect(probe.code).toBe(0);
    } finally {
      await smtp.stop();
    }
  });
});

describe('a daemon with many backends', () => {
  it('runs 50 backends and stops without a MaxListenersExceededWarning', async () => {
    const smtp = createSmtpServer();
    await smtp.start();
    const dir = path.join(tmp.dir, 'fifty');
    const cond = path.join(dir, 'cond');
    mkdirSync(cond, { recursive: true });
    const config = path.join(dir, 'config.yaml');
    writeFileSync(
      config,
      smtpFarmYaml({
        timing: 'interval: 300ms, fastInterval: 100ms, timeout: 250ms, rise: 2, fall: 2',
        conditionDir: cond,
        backends: Array.from({ length: 50 }, (_, i) => ({ name: `mx${i}`, port: smtp.port })),
      }),
    );
    const d = startDaemon(['run', '-c', config]);
    try {
      const ready = await d.waitForLine((l) => l.event === 'ready', 20_000);
      expect(ready.msg).toBe('nf-healthd ready: 50/50 up');
      // A second round in flight, then stop while checks run: the stop signal reaches them all.
      const checked = smtp.connections;
      await waitUntil(
        () => smtp.connections,
        (n) => n >= checked + 50,
      );
      d.kill('SIGTERM');
      expect((await d.exited).code).toBe(0);
      expect(d.stderr()).not.toContain('MaxListenersExceededWarning');
      expect(d.stderr()).toBe('');
    } finally {
      d.kill('SIGKILL');
      await smtp.stop();
    }
  }, 30_000);
});
