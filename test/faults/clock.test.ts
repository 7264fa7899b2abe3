import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SmtpServer } from '../../demo/smtp-server.js';
import { cli } from '../support/cli.js';
import { type DaemonProcess, type LogLine, startDaemon, tempDir, waitUntil } from '../support/daemon.js';
import { closedPort, startSmtp } from '../support/servers.js';

/*
 * The wall clock jumps an hour forward, then an hour back (an NTP step, a VM resumed):
 * check schedules, downInterval, flap damping holds, `status` and /healthz go on as if
 * nothing happened, because the daemon measures durations on the monotonic clock
 * (src/health/clock.ts). CLOCK_REALTIME is moved for the daemon's process only, with
 * Debian's libfaketime (package faketime) preloaded: FAKETIME_TIMESTAMP_FILE holds the
 * offset, FAKETIME_NO_CACHE=1 reads it on every call, FAKETIME_DONT_FAKE_MONOTONIC=1
 * leaves the monotonic clock real. `status` runs with the same offset: the jump is the
 * whole system's, as a real one would be.
 */

function libfaketime(): string {
  for (const dir of readdirSync('/usr/lib')) {
    const file = path.join('/usr/lib', dir, 'faketime', 'libfaketime.so.1');
    if (existsSync(file)) return file;
  }
  throw new Error('libfaketime.so.1 not found: install the Debian package faketime (scripts/test-packages.txt)');
}

let tmp: ReturnType<typeof tempDir>;
let daemon: DaemonProcess;
let offsetFile: string;
let config: string;
let faked: NodeJS.ProcessEnv;
const servers: SmtpServer[] = [];

beforeAll(async () => {
  tmp = tempDir('nfh-faults-clock-');
  offsetFile = path.join(tmp.dir, 'faketime.rc');
  writeFileSync(offsetFile, '+0\n');
  faked = {
    LD_PRELOAD: libfaketime(),
    FAKETIME_TIMESTAMP_FILE: offsetFile,
    FAKETIME_NO_CACHE: '1',
    FAKETIME_DONT_FAKE_MONOTONIC: '1',
  };
  const up = await startSmtp(servers);
  const flapper = await startSmtp(servers);
  const dead = await closedPort();
  const cond = path.join(tmp.dir, 'cond');
  mkdirSync(cond);
  config = path.join(tmp.dir, 'config.yaml');
  writeFileSync(
    config,
    // fall 2, 500ms: only the test's stop flaps the flapper, never one slow greeting.
    `defaults: { interval: 300ms, fastInterval: 100ms, timeout: 500ms, rise: 1, fall: 2, downInterval: 2m }
log: { level: debug, format: json }
writer: { type: condition, dir: ${cond} }
stateFile: ${path.join(tmp.dir, 'state.json')}
http: { listen: 0 }
damping: { window: 1m, changes: 2, hold: 8s }
services:
  - name: mail
    port: 25
    check: { type: smtp }
    backends:
      - { name: up, address: 127.0.0.1, port: ${up.port} }
      - { name: flapper, address: 127.0.0.1, port: ${flapper.port} }
      - { name: dead, address: 127.0.0.1, port: ${dead} }
`,
  );
  daemon = startDaemon(['run', '-c', config], faked);
  await daemon.waitForLine((l) => l.event === 'ready', 30_000);
});

afterAll(async () => {
  daemon?.kill('SIGKILL');
  await daemon?.exited;
  for (const s of servers) await s.stop();
  tmp.cleanup();
});

const jump = (offset: string) => writeFileSync(offsetFile, `${offset}\n`);
const isCheck = (backend: string) => (l: LogLine) => l.event === 'check' && l.backend === backend;

/** `n` checks of `backend` after line `from`; resolves with the test's monotonic ms they took. */
async function checks(backend: string, n: number, from: number, ms = 15_000): Promise<number> {
  const started = performance.now();
  let at = from;
  for (let i = 0; i < n; i++) at = daemon.lines.indexOf(await daemon.waitForLine(isCheck(backend), ms, at)) + 1;
  return performance.now() - started;
}

async function healthz(): Promise<{ status: number; body: string }> {
  const port = (daemon.lines.find((l) => l.event === 'http_listening')?.port ?? 0) as number;
  const r = await fetch(`http://127.0.0.1:${port}/healthz`);
  return { status: r.status, body: await r.text() };
}

describe('the wall clock jumps', () => {
  it('forward an hour: a down backend keeps its pace (no early downInterval), a damping hold is not cut short', async () => {
    // A dead backend is down after its first two checks: checked every interval for its first 2 minutes (downInterval).
    await daemon.waitForLine((l) => l.event === 'transition' && l.backend === 'dead', 10_000);
    // Flap the flapper twice: the second change starts an 8 s hold.
    const from = daemon.lines.length;
    await servers[1]!.stop();
    await daemon.waitForLine((l) => l.event === 'transition' && l.backend === 'flapper', 10_000, from);
    await servers[1]!.start();
    const hold = await daemon.waitForLine((l) => l.event === 'damping_hold' && l.backend === 'flapper', 10_000, from);
    const heldAt = daemon.lines.indexOf(hold);

    jump('+1h');
    const after = daemon.lines.length;
    // An hour of wall clock has "passed" for the dead backend: a wall-clock pace would wait 2 minutes now.
    expect(await checks('dead', 3, after)).toBeLessThan(10_000);
    await checks('up', 3, after);
    // The flapper passes its checks and stays held: the hour did not end its 8 s hold.
    await checks('flapper', 3, after);
    const flapper = daemon.lines.slice(heldAt + 1).filter((l) => l.backend === 'flapper');
    expect(flapper.filter((l) => l.event === 'transition' || l.event === 'damping_released')).toEqual([]);
    expect(flapper.filter((l) => l.event === 'check').every((l) => l.up === true)).toBe(true);
    expect(await healthz()).toMatchObject({ status: 200, body: expect.stringMatching(/^ok: latest check/) });
  });

  it('`status` with the jumped clock: stale for at most one write period, then current', async () => {
    const status = await waitUntil(
      () => cli(['status', '-c', config], faked),
      (r) => r.code !== 3,
      10_000,
    );
    expect(status.stdout).toMatch(/^1\/3 backends up/);
  });

  it('back two hours (to an hour behind): the hold still ends on time, the schedule goes on', async () => {
    jump('-1h');
    const after = daemon.lines.length;
    // An hour-long hold on a wall clock; 8 s from its start on the monotonic one.
    const up = await daemon.waitForLine(
      (l) => l.event === 'transition' && l.backend === 'flapper' && l.state === 'up',
      30_000,
      after,
    );
    expect(up.reason).toMatch(/flap damping hold/);
    expect(await checks('dead', 3, daemon.lines.length)).toBeLessThan(10_000);
    await checks('up', 3, daemon.lines.length);
    expect(await healthz()).toMatchObject({ status: 200, body: expect.stringMatching(/^ok: latest check/) });
    // The file written before the jump is an hour "ahead": not stale, and rewritten on the next period.
    const status = await cli(['status', '-c', config], faked);
    expect(status.code).toBe(2);
    expect(status.stdout).toMatch(/^2\/3 backends up/);
  });
});
