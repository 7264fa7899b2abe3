import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSmtpServer, type SmtpServer } from '../demo/smtp-server.js';
import type { SamplesFile } from './instrument/samples.js';
import { BIN, type DaemonProcess, startDaemon, tempDir, waitUntil } from './support/daemon.js';
import { closedPort, restartable, tcpServer } from './support/servers.js';

/* The built CLI (bin/nf-healthd.js -> dist/) as a child process, against real SMTP servers on loopback. */

const run = promisify(execFile);
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], {
      env: { ...process.env, NOTIFY_SOCKET: '' },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const tmp = tempDir('nfh-cli-');
afterAll(() => tmp.cleanup());

function configFile(name: string, body: string): string {
  const file = path.join(tmp.dir, name);
  writeFileSync(file, body);
  return file;
}

describe('nf-healthd command line', () => {
  it('prints its version and help', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(await cli(['--version'])).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/nf-healthd run +\[-c FILE\]/);
  });

  it.each([
    [['frobnicate'], "nf-healthd: unknown command 'frobnicate'. Try 'nf-healthd --help'.\n"],
    [['check', '--bogus'], "nf-healthd: Unknown option '--bogus'. Try 'nf-healthd --help'.\n"],
    [[], "nf-healthd: a command is needed (run, check, probe). Try 'nf-healthd --help'.\n"],
  ])('exits 64 with a one-line hint on %j', async (args, stderr) => {
    const got = await cli(args);
    expect(got.code).toBe(64);
    expect(got.stderr.split('\n')[0]).toBe(stderr.split('\n')[0]);
    expect(got.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('check: exit 0 for the example, 78 with located errors for a bad file', async () => {
    const example = new URL('../config/example.yaml', import.meta.url).pathname;
    expect(await cli(['check', '-c', example])).toMatchObject({
      code: 0,
      stdout: `${example}: OK (1 services, 2 backends)\n`,
    });
    const bad = configFile(
      'bad.yaml',
      'defaults:\n  interval: soon\nservices:\n  - name: mail\n    port: 25\n    backends:\n      - {name: m1, address: 127.0.0.1, colour: red}\n',
    );
    const got = await cli(['check', '-c', bad]);
    expect(got.code).toBe(78);
    expect(got.stderr.trim().split('\n')).toEqual([
      `${bad}:2:13: defaults.interval: "soon" is not a duration: use a number and a unit (ms, s, m, h), such as 500ms or 2s`,
      `${bad}:7:40: services[0].backends[0].colour: unknown key "colour"`,
    ]);
    const missing = await cli(['check', '-c', path.join(tmp.dir, 'nope.yaml')]);
    expect(missing.code).toBe(78);
    expect(missing.stderr).toMatch(/nope\.yaml:1:1: \(top\): cannot read the file: ENOENT/);
  });

  describe('probe', () => {
    let up: SmtpServer;
    beforeAll(async () => {
      up = createSmtpServer({ banner: 'mx1.test ESMTP' });
      await up.start();
      return () => up.stop();
    });

    it('checks every backend once and prints JSON; exit 2 when one is down', async () => {
      const dead = await closedPort();
      const file = configFile(
        'probe.yaml',
        `writer: {type: condition, dir: ${tmp.dir}/never-written}
services:
  - name: mail
    port: 25
    check: {type: smtp}
    backends:
      - {name: mx1, address: 127.0.0.1, port: ${up.port}}
      - {name: mx2, address: 127.0.0.1, port: ${dead}, check: {type: tcp}}
`,
      );
      const got = await cli(['probe', '-c', file, '--json']);
      expect(got.code).toBe(2);
      const rows = JSON.parse(got.stdout) as Record<string, unknown>[];
      expect(rows).toEqual([
        expect.objectContaining({
          service: 'mail',
          backend: 'mx1',
          address: '127.0.0.1',
          port: up.port,
          type: 'smtp',
          up: true,
          detail: '220 mx1.test ESMTP',
          latencyMs: expect.any(Number),
        }),
        expect.objectContaining({
          service: 'mail',
          backend: 'mx2',
          address: '127.0.0.1',
          port: dead,
          type: 'tcp',
          up: false,
          detail: 'connect ECONNREFUSED',
          latencyMs: expect.any(Number),
        }),
      ]);
      const table = await cli(['probe', '-c', file]);
      expect(table.code).toBe(2);
      expect(table.stdout).toMatch(/^SERVICE +BACKEND +ADDRESS +TYPE +RESULT +LATENCY +DETAIL\n/);
      expect(table.stdout).toMatch(/mx2 +127\.0\.0\.1:\d+ +tcp +DOWN +\d+ms +connect ECONNREFUSED/);
    });

    it('exits 0 when all are up, 78 on a config error', async () => {
      const file = configFile(
        'probe-ok.yaml',
        `services:\n  - name: mail\n    port: ${up.port}\n    check: {type: smtp}\n    backends: [{name: mx1, address: 127.0.0.1}]\n`,
      );
      expect((await cli(['probe', '-c', file])).code).toBe(0);
      expect((await cli(['probe', '-c', configFile('probe-bad.yaml', 'services: 3\n')])).code).toBe(78);
    });
  });
});

describe('nf-healthd run', () => {
  const servers: SmtpServer[] = [];
  let daemon: DaemonProcess | undefined;
  afterAll(async () => {
    daemon?.kill('SIGKILL');
    await Promise.all(servers.map((s) => s.stop()));
  });

  const conditions = path.join(tmp.dir, 'nf_condition');
  const value = (name: string) => {
    try {
      return readFileSync(path.join(conditions, name), 'latin1');
    } catch {
      return undefined;
    }
  };
  const yaml = (backends: string) => `defaults: {interval: 300ms, fastInterval: 100ms, timeout: 250ms, rise: 2, fall: 2}
writer: {type: condition, dir: ${conditions}, upValue: 0}
stateFile: ${tmp.dir}/run-state.json
log: {level: info, format: json}
services:
  - name: mail
    port: 25
    check: {type: smtp}
    backends:
${backends}`;

  it('goes through transitions, drift repair, reloads and a clean stop', async () => {
    const [mx1, mx2, mx3] = [createSmtpServer(), restartable(createSmtpServer()), restartable(createSmtpServer())];
    servers.push(mx1, mx2, mx3);
    await Promise.all([mx1.start(), mx2.start(), mx3.start()]);
    const b = (name: string, s: SmtpServer) =>
      `      - {name: ${name}, address: 127.0.0.1, port: ${s.port}, condition: ${name}up}\n`;
    const file = configFile('run.yaml', yaml(b('mx1', mx1) + b('mx2', mx2)));
    const { mkdirSync } = await import('node:fs');
    mkdirSync(conditions);

    daemon = startDaemon(['run', '-c', file]);
    const d = daemon;
    await d.waitForLine((l) => l.event === 'ready');
    // Ready means the first round is in the folder already.
    expect([value('mx1up'), value('mx2up')]).toEqual(['0\n', '0\n']);

    // A backend dies: one warning line with the reason, and the file flips.
    await mx2.stop();
    const down = await d.waitForLine((l) => l.event === 'transition' && l.backend === 'mx2');
    expect(down).toMatchObject({
      level: 'warn',
      state: 'down',
      previous: 'up',
      reason: '2 consecutive failures: connect ECONNREFUSED',
      msg: 'backend mx2 is down: 2 consecutive failures: connect ECONNREFUSED',
    });
    await waitUntil(
      () => value('mx2up'),
      (v) => v === '1\n',
    );

    // Someone writes the file behind the daemon's back: repaired on the next check, and said.
    writeFileSync(path.join(conditions, 'mx2up'), '0\n');
    const drift = await d.waitForLine((l) => l.event === 'drift_repaired');
    expect(drift).toMatchObject({ level: 'warn', found: '0', want: 'down' });
    expect(value('mx2up')).toBe('1\n');

    // It comes back.
    await mx2.start();
    await d.waitForLine((l) => l.event === 'transition' && l.backend === 'mx2' && l.state === 'up');
    await waitUntil(
      () => value('mx2up'),
      (v) => v === '0\n',
    );

    // SIGHUP with a valid config: mx1 removed (its file left as it is), mx3 added.
    writeFileSync(path.join(conditions, 'mx1up'), '0\n');
    writeFileSync(file, yaml(b('mx2', mx2) + b('mx3', mx3)));
    let mark = d.lines.length;
    d.kill('SIGHUP');
    const reloaded = await d.waitForLine((l) => l.event === 'reloaded', 10_000, mark);
    expect(reloaded).toMatchObject({ backends: 2, added: 1, removed: 1 });
    expect(d.lines.slice(mark).find((l) => l.event === 'backend_removed')).toMatchObject({
      backend: 'mx1',
      msg: expect.stringContaining('is left as it is'),
    });
    await waitUntil(
      () => value('mx3up'),
      (v) => v === '0\n',
    );
    // mx2 kept its state and counters: no transition line for it after the reload.
    expect(d.lines.slice(mark).some((l) => l.event === 'transition' && l.backend === 'mx2')).toBe(false);

    // SIGHUP with a broken config: every error logged, the old config keeps running.
    writeFileSync(file, yaml(`${b('mx2', mx2)}      - {name: mx9, address: 127.0.0.1, port: 70000}\n`));
    mark = d.lines.length;
    d.kill('SIGHUP');
    const rejected = await d.waitForLine((l) => l.event === 'reload_rejected', 10_000, mark);
    expect(rejected).toMatchObject({
      level: 'error',
      msg: expect.stringMatching(
        new RegExp(
          `config rejected, keeping the running one: ${file}:\\d+:\\d+: services\\[0\\]\\.backends\\[1\\]\\.port: `,
        ),
      ),
    });
    await mx3.stop();
    await d.waitForLine((l) => l.event === 'transition' && l.backend === 'mx3' && l.state === 'down', 10_000, mark);
    expect(value('mx1up')).toBe('0\n');

    // SIGTERM: exit 0.
    d.kill('SIGTERM');
    expect(await d.exited).toEqual({ code: 0, signal: null });
    expect(d.lines.at(-1)).toMatchObject({ event: 'stopping', signal: 'SIGTERM' });
    expect(d.stderr()).toBe('');
  });

  it('stops at once on SIGTERM even with a check stalled in flight', async () => {
    const silent = await tcpServer(() => undefined); // accepts, never speaks
    const dir = path.join(tmp.dir, 'stall');
    const file = configFile(
      'stall.yaml',
      `defaults: {interval: 10s, timeout: 10s}
writer: {type: condition, dir: ${dir}}
stateFile: ${tmp.dir}/stall-state.json
services:
  - name: mail
    port: ${silent.port}
    check: {type: smtp}
    backends: [{name: quiet, address: 127.0.0.1}]
`,
    );
    const d = startDaemon(['run', '-c', file]);
    await d.waitForLine((l) => l.event === 'starting');
    // The first check is now waiting on a backend that says nothing for 10 s.
    const t0 = performance.now();
    d.kill('SIGTERM');
    expect(await d.exited).toEqual({ code: 0, signal: null });
    // A bound, not a benchmark: it did not wait for the 10 s timeout.
    expect(performance.now() - t0).toBeLessThan(3000);
    await silent.close();
  });
});

describe('test hooks (test/instrument/) stay out of the shipped daemon', () => {
  const hooksEnv = (samples: string) => ({ NF_HEALTHD_TEST_WEDGE: 'scheduler', NF_HEALTHD_SAMPLES: samples });
  async function runOnce(name: string, instrumented: boolean) {
    const mx = createSmtpServer();
    await mx.start();
    const dir = path.join(tmp.dir, name);
    const file = configFile(
      `${name}.yaml`,
      `defaults: {interval: 300ms, fastInterval: 100ms, timeout: 250ms}
writer: {type: condition, dir: ${dir}}
stateFile: ${tmp.dir}/${name}-state.json
services:
  - name: mail
    port: ${mx.port}
    check: {type: smtp}
    backends: [{name: mx, address: 127.0.0.1}]
`,
    );
    const samples = path.join(tmp.dir, `${name}-samples.json`);
    const d = startDaemon(['run', '-c', file], hooksEnv(samples), undefined, { instrumented });
    try {
      await d.waitForLine((l) => l.event === 'ready');
      d.kill('SIGTERM');
      expect(await d.exited).toEqual({ code: 0, signal: null });
    } finally {
      d.kill('SIGKILL');
      await mx.stop();
    }
    return { d, samples: existsSync(samples) ? (JSON.parse(readFileSync(samples, 'utf8')) as SamplesFile) : undefined };
  }

  it('bin/nf-healthd.js ignores NF_HEALTHD_TEST_WEDGE and NF_HEALTHD_SAMPLES', async () => {
    const { d, samples } = await runOnce('plain', false);
    expect(d.lines.filter((l) => l.event === 'test_wedge')).toEqual([]);
    expect(samples).toBeUndefined();
  });

  it('the instrumented entry arms both: the fault switch says so, the samples file is written at stop', async () => {
    const { d, samples } = await runOnce('instrumented', true);
    expect(d.lines.find((l) => l.event === 'test_wedge')).toMatchObject({ level: 'warn', mode: 'scheduler' });
    expect(Object.keys(samples?.latency ?? {}).length).toBeGreaterThan(0);
    expect(samples?.memory.rss).toBeGreaterThan(0);
  });
});
