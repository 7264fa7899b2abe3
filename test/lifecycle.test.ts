import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SmtpServer } from '../demo/smtp-server.js';
import type { Snapshot } from '../src/ops/snapshot.js';
import { cli } from './support/cli.js';
import { smtpFarmYaml } from './support/config.js';
import { type DaemonProcess, type LogLine, startDaemon, tempDir, waitUntil } from './support/daemon.js';
import { parseMetrics } from './support/metrics.js';
import { startSmtp } from './support/servers.js';

/*
 * Paths of a running daemon no other test walked: `status` on a stuck daemon's stale
 * state file, hooks that time out or are still running at stop, and the metrics that
 * count them. The built daemon as a child process, real SMTP backends on loopback.
 */

let tmp: ReturnType<typeof tempDir>;
let daemon: DaemonProcess | undefined;
let servers: SmtpServer[] = [];
beforeEach(() => {
  tmp = tempDir('nfh-lifecycle-');
});
afterEach(async () => {
  daemon?.kill('SIGKILL'); // also ends one a test left stopped (SIGSTOP)
  await daemon?.exited;
  daemon = undefined;
  for (const s of servers) await s.stop();
  servers = [];
  tmp.cleanup();
});

/** Stopped, its port stays refused and reserved: another process cannot take it before a restart. */
const smtp = () => startSmtp(servers);

function run(backends: { name: string; port: number }[], extra: string, timing: string): { config: string } {
  const cond = path.join(tmp.dir, 'cond');
  mkdirSync(cond, { recursive: true });
  const config = path.join(tmp.dir, 'config.yaml');
  const stateFile = path.join(tmp.dir, 'state.json');
  writeFileSync(config, smtpFarmYaml({ timing, conditionDir: cond, stateFile, extra, backends }));
  daemon = startDaemon(['run', '-c', config]);
  return { config };
}

const isTransition = (backend: string, state: string) => (l: LogLine) =>
  l.event === 'transition' && l.backend === backend && l.state === state;

/** A hook that writes its pid to `<name>.pid` and then sleeps: it outlives any timeout given here. */
function sleepingHook(name: string): { program: string; pidFile: string } {
  const program = path.join(tmp.dir, `${name}.sh`);
  const pidFile = path.join(tmp.dir, `${name}.pid`);
  writeFileSync(program, `#!/bin/sh\necho $$ > "${pidFile}.tmp" && mv "${pidFile}.tmp" "${pidFile}"\nexec sleep 60\n`);
  chmodSync(program, 0o755);
  return { program, pidFile };
}

/** Gone, or a zombie: no longer running. */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return false;
  }
}

async function hookPid(pidFile: string): Promise<number> {
  await waitUntil(() => existsSync(pidFile), Boolean);
  return Number(readFileSync(pidFile, 'latin1'));
}

async function metrics(port: unknown) {
  return parseMetrics(await (await fetch(`http://127.0.0.1:${String(port)}/metrics`)).text());
}

describe('status on a stuck daemon', () => {
  it('exits 3 once the state file is stale, and 0 again when the daemon goes on', async () => {
    const a = await smtp();
    const { config } = run([{ name: 'a', port: a.port }], '', 'interval: 300ms, fastInterval: 100ms, timeout: 250ms');
    await daemon!.waitForLine((l) => l.event === 'ready');
    await waitUntil(
      () => cli(['status', '-c', config]),
      (r) => r.code === 0,
    );
    // Stopped, not dead: the pid is alive and the file stays, but nothing refreshes it.
    process.kill(daemon!.child.pid!, 'SIGSTOP');
    const stale = await waitUntil(
      () => cli(['status', '-c', config]),
      (r) => r.code !== 0,
      30_000,
      200,
    );
    expect(stale.code).toBe(3);
    expect(stale.stderr).toMatch(
      new RegExp(
        `^nf-healthd is not running or stuck: its state file was last written \\d+s ago \\(pid ${daemon!.child.pid}\\), it is refreshed every `,
      ),
    );
    const json = await cli(['status', '-c', config, '--json']);
    expect(json.code).toBe(3);
    expect(JSON.parse(json.stdout) as { running: boolean; problem: string }).toMatchObject({
      running: false,
      problem: expect.stringContaining('not running or stuck'),
    });
    process.kill(daemon!.child.pid!, 'SIGCONT');
    const back = await waitUntil(
      () => cli(['status', '-c', config]),
      (r) => r.code === 0,
      30_000,
      200,
    );
    expect(back.stdout).toMatch(/^1\/1 backends up/);
  }, 60_000);
});

describe('notify hooks in a running daemon', () => {
  it('a hook past its timeout is killed, logged and counted; the state-since metric matches the state file', async () => {
    const a = await smtp();
    const hook = sleepingHook('slow');
    run(
      [{ name: 'a', port: a.port }],
      `http: {listen: 0}\nnotify: {down: [${hook.program}], timeout: 500ms}`,
      'interval: 300ms, fastInterval: 100ms, timeout: 500ms, rise: 1, fall: 3', // fall 3: one slow check is no flap
    );
    const listening = await daemon!.waitForLine((l) => l.event === 'http_listening');
    await daemon!.waitForLine((l) => l.event === 'ready');
    await a.stop();
    await daemon!.waitForLine(isTransition('a', 'down'));
    const pid = await hookPid(hook.pidFile);
    const line = await daemon!.waitForLine((l) => l.event === 'hook' && l.hook === 'down');
    expect(line).toMatchObject({ level: 'warn', outcome: 'timeout', detail: 'killed after 500ms', backend: 'a' });
    expect(line.msg).toBe('notify.down for a timed out: killed after 500ms');
    await waitUntil(
      () => running(pid),
      (r) => !r,
    );

    const samples = await metrics(listening.port);
    expect(samples.filter((s) => s.name === 'nfh_notify_hook_runs_total')).toEqual([
      { name: 'nfh_notify_hook_runs_total', labels: { hook: 'down', outcome: 'timeout' }, value: 1 },
    ]);
    const stateFile = path.join(tmp.dir, 'state.json');
    const state = await waitUntil(
      () => (existsSync(stateFile) ? (JSON.parse(readFileSync(stateFile, 'utf8')) as Snapshot) : undefined),
      (s) => s?.backends[0]?.state === 'down',
    );
    const since = samples.find((s) => s.name === 'nfh_backend_state_since_seconds' && s.labels.backend === 'a');
    expect(since?.value).toBe(Date.parse(state!.backends[0]!.since) / 1000);
  });

  it('a hook still running at stop is killed with the daemon, which exits 0', async () => {
    const a = await smtp();
    const hook = sleepingHook('stuck');
    run(
      [{ name: 'a', port: a.port }],
      `notify: {down: [${hook.program}], timeout: 1h}`,
      'interval: 300ms, fastInterval: 100ms, timeout: 500ms, rise: 1, fall: 3', // fall 3: one slow check is no flap
    );
    await daemon!.waitForLine((l) => l.event === 'ready');
    await a.stop();
    await daemon!.waitForLine(isTransition('a', 'down'));
    const pid = await hookPid(hook.pidFile);
    expect(running(pid)).toBe(true);
    daemon!.kill('SIGTERM');
    expect((await daemon!.exited).code).toBe(0);
    await waitUntil(
      () => running(pid),
      (r) => !r,
    );
  });
});

describe('flap damping metrics', () => {
  it('nfh_backend_held is 1 while a flapping backend is held down, 0 for the others', async () => {
    const flappy = await smtp();
    const steady = await smtp();
    run(
      [
        { name: 'f', port: flappy.port },
        { name: 's', port: steady.port },
      ],
      'http: {listen: 0}\ndamping: {window: 1m, changes: 2, hold: 1m, maxHold: 1m, decay: 1m}',
      'interval: 300ms, fastInterval: 100ms, timeout: 500ms, rise: 1, fall: 3', // fall 3: one slow check is no flap
    );
    const listening = await daemon!.waitForLine((l) => l.event === 'http_listening');
    await daemon!.waitForLine((l) => l.event === 'ready');
    await flappy.stop();
    await daemon!.waitForLine(isTransition('f', 'down'));
    await flappy.start();
    // The second change inside the window is held: f passes its checks and stays down.
    await daemon!.waitForLine((l) => l.event === 'damping_hold' && l.backend === 'f');
    const held = (await metrics(listening.port)).filter((s) => s.name === 'nfh_backend_held');
    expect(held.map((s) => [s.labels.backend, s.value])).toEqual([
      ['f', 1],
      ['s', 0],
    ]);
  });
});
