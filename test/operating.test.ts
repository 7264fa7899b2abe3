import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SmtpServer } from '../demo/smtp-server.js';
import type { Snapshot } from '../src/ops/snapshot.js';
import { cli } from './support/cli.js';
import { smtpFarmYaml } from './support/config.js';
import { type DaemonProcess, type LogLine, startDaemon, tempDir, waitUntil } from './support/daemon.js';
import { parseMetrics } from './support/metrics.js';
import { closedPort, freePort, startSmtp } from './support/servers.js';

/*
 * Issue 6 against the built daemon as a child process: real SMTP backends on
 * loopback (port 0), a temp condition folder and a temp state file.
 */

let tmp: ReturnType<typeof tempDir>;
let daemons: DaemonProcess[] = [];
let servers: SmtpServer[] = [];

beforeEach(() => {
  tmp = tempDir('nfh-ops-');
});
afterEach(async () => {
  for (const d of daemons) {
    d.kill('SIGKILL');
    await d.exited;
  }
  for (const s of servers) await s.stop();
  daemons = [];
  servers = [];
  tmp.cleanup();
});

/** Stopped, its port stays refused and reserved: another process cannot take it before a restart. */
const smtp = () => startSmtp(servers);

function run(configPath: string): DaemonProcess {
  const d = startDaemon(['run', '-c', configPath]);
  daemons.push(d);
  return d;
}

async function stop(d: DaemonProcess): Promise<void> {
  d.kill('SIGTERM');
  const { code } = await d.exited;
  expect(code).toBe(0);
}

interface Setup {
  configPath: string;
  stateFile: string;
  cond: string;
}

function writeConfig(
  backends: { name: string; port: number }[],
  extra = '',
  timing = 'interval: 300ms, fastInterval: 100ms, timeout: 250ms, rise: 2, fall: 2',
): Setup {
  const cond = path.join(tmp.dir, 'cond');
  mkdirSync(cond, { recursive: true });
  const stateFile = path.join(tmp.dir, 'run', 'state.json');
  const configPath = path.join(tmp.dir, 'config.yaml');
  writeFileSync(configPath, smtpFarmYaml({ timing, conditionDir: cond, stateFile, extra, backends }));
  return { configPath, stateFile, cond };
}

function readState(file: string): Snapshot | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  } catch {
    return undefined;
  }
}

const backendIn = (s: Snapshot | undefined, name: string) => s?.backends.find((b) => b.backend === name);
const isTransition = (backend: string, state: string) => (l: LogLine) =>
  l.event === 'transition' && l.backend === backend && l.state === state;

describe('state file, status and restarts', () => {
  it('keeps the state file, reports it with `status`, and resumes it on restart without touching the kernel', async () => {
    const a = await smtp();
    const b = await smtp();
    await b.stop(); // b's port is known and closed: b goes down
    const { configPath, stateFile, cond } = writeConfig([
      { name: 'a', port: a.port },
      { name: 'b', port: b.port },
    ]);

    // Before any daemon ran: no state file, exit 3 in words.
    const none = await cli(['status', '-c', configPath]);
    expect(none.code).toBe(3);
    expect(none.stderr).toContain(`nf-healthd is not running: no state file at ${stateFile}`);

    const first = run(configPath);
    await first.waitForLine(isTransition('b', 'down'));
    const settled = await waitUntil(
      () => readState(stateFile),
      // The file is written at the transition and again once the writer has applied it.
      (s) =>
        backendIn(s, 'b')?.state === 'down' &&
        backendIn(s, 'b')?.written?.up === false &&
        backendIn(s, 'b')?.written?.confirmed === true &&
        backendIn(s, 'a')?.written?.confirmed === true,
    );
    expect(settled!.pid).toBe(first.child.pid);
    const sa = backendIn(settled, 'a')!;
    const sb = backendIn(settled, 'b')!;
    expect(sa).toMatchObject({
      id: 'mail/a',
      state: 'up',
      failures: 0,
      target: { key: 'a', label: path.join(cond, 'a') },
      written: { up: true, confirmed: true },
    });
    expect(sa.last).toMatchObject({ up: true, detail: '220 nf-healthd-demo ESMTP' });
    expect(sb).toMatchObject({
      state: 'down',
      successes: 0,
      reason: '2 consecutive failures: connect ECONNREFUSED',
      written: { up: false, confirmed: true },
    });
    expect(sb.failures).toBeGreaterThanOrEqual(2);
    expect(sb.last).toMatchObject({ up: false, detail: 'connect ECONNREFUSED' });
    expect(typeof sb.last!.latencyMs).toBe('number');

    // Rewritten while nothing changes, so a reader can tell a live daemon from a stale file.
    const before = Date.parse(settled!.writtenAt);
    await waitUntil(
      () => readState(stateFile),
      (s) => s !== undefined && Date.parse(s.writtenAt) > before,
      5000,
    );

    const table = await cli(['status', '-c', configPath]);
    expect(table.code).toBe(2);
    expect(table.stdout).toMatch(/^1\/2 backends up \(state of pid \d+, \d+s old\)\n/);
    expect(table.stdout).toMatch(/BACKEND +STATE +SINCE +LAST CHECK +LATENCY +TARGET +VALUE/);
    expect(table.stdout).toMatch(
      new RegExp(
        `mail/a +up +\\d+s ago +ok \\d+s ago: 220 nf-healthd-demo ESMTP +\\d+ms +${path.join(cond, 'a')} +0\\n`,
      ),
    );
    expect(table.stdout).toMatch(
      new RegExp(
        `mail/b +DOWN +\\d+s ago +FAIL \\d+s ago: connect ECONNREFUSED +\\d+ms +${path.join(cond, 'b')} +1\\n`,
      ),
    );
    expect(table.stdout).toContain('Down:\n  mail/b: 2 consecutive failures: connect ECONNREFUSED\n');
    const json = await cli(['status', '-c', configPath, '--json']);
    expect(json.code).toBe(2);
    const parsed = JSON.parse(json.stdout) as Snapshot & { running: boolean };
    expect(parsed.running).toBe(true);
    expect(parsed.backends.map((x) => [x.backend, x.state])).toEqual([
      ['a', 'up'],
      ['b', 'down'],
    ]);

    // SIGUSR1: the whole state in one log line.
    const mark = first.lines.length;
    first.child.kill('SIGUSR1');
    const dump = await first.waitForLine((l) => l.event === 'state_dump', 5000, mark);
    expect(dump.msg).toMatch(/^state dump \(SIGUSR1\): 1\/2 up; b down since/);
    expect((dump.state as Snapshot).backends.map((x) => x.state)).toEqual(['up', 'down']);

    await stop(first);
    const stopped = readState(stateFile)!;
    expect(stopped.stoppedAt).toBeDefined();
    // Written atomically (temporary file, then rename): nothing left behind.
    expect(readdirSync(path.dirname(stateFile))).toEqual(['state.json']);
    const after = await cli(['status', '-c', configPath]);
    expect(after.code).toBe(3);
    expect(after.stderr).toContain('nf-healthd is not running: it stopped at');

    // Restart: b resumes down, a resumes up; the condition files are not written at all.
    const files = ['a', 'b'].map((n) => path.join(cond, n));
    const stamp = () => files.map((f) => `${readFileSync(f, 'latin1')}@${statSync(f, { bigint: true }).mtimeNs}`);
    const kernelBefore = stamp();
    expect(kernelBefore.map((s) => s.split('@')[0])).toEqual(['0\n', '1\n']);
    const second = run(configPath);
    await second.waitForLine((l) => l.event === 'state_file_read');
    const ready = await second.waitForLine((l) => l.event === 'ready');
    expect(ready.msg).toMatch(/^nf-healthd ready: 1\/2 up; b down since/);
    const readyAt = Date.parse(String(ready.time));
    // Several checks of both after the restart, then compare.
    await waitUntil(
      () => readState(stateFile),
      (s) =>
        s?.pid === second.child.pid &&
        ['a', 'b'].every((n) => Date.parse(backendIn(s, n)?.last?.at ?? '0') > readyAt + 300),
    );
    expect(stamp()).toEqual(kernelBefore);
    expect(second.lines.filter((l) => l.event === 'transition')).toEqual([]);
    expect(backendIn(readState(stateFile), 'b')).toMatchObject({ state: 'down', since: sb.since, reason: sb.reason });

    // b comes back: all up, exit 0.
    await b.start();
    await second.waitForLine(isTransition('b', 'up'));
    await waitUntil(
      () => readState(stateFile),
      (s) => backendIn(s, 'b')?.state === 'up',
    );
    const allUp = await cli(['status', '-c', configPath]);
    expect(allUp.code).toBe(0);
    expect(allUp.stdout).toMatch(/^2\/2 backends up/);
    await stop(second);
  }, 60_000);

  it('does not resume a backend whose address, port, check or target changed, nor an old state file', async () => {
    const a = await smtp();
    const gone = await closedPort();
    let setup = writeConfig([
      { name: 'a', port: a.port },
      { name: 'b', port: gone },
    ]);
    const first = run(setup.configPath);
    await first.waitForLine(isTransition('b', 'down'));
    await waitUntil(
      () => readState(setup.stateFile),
      (s) => backendIn(s, 'b')?.written?.up === false,
    );
    await stop(first);

    // b now on another (also closed) port: it starts at initialState (up) and must fall again.
    setup = writeConfig([
      { name: 'a', port: a.port },
      { name: 'b', port: await closedPort() },
    ]);
    const second = run(setup.configPath);
    const notResumed = await second.waitForLine((l) => l.event === 'state_not_resumed' && l.backend === 'b');
    expect(notResumed.msg).toBe('backend b is new or changed since the state file: it starts up');
    await second.waitForLine(isTransition('b', 'down'));
    expect(second.lines.some((l) => l.event === 'state_not_resumed' && l.backend === 'a')).toBe(false);
    await stop(second);

    // A state file older than stateMaxAge is ignored as a whole.
    setup = writeConfig(
      [
        { name: 'a', port: a.port },
        { name: 'b', port: gone },
      ],
      'stateMaxAge: 1ms',
    );
    const third = run(setup.configPath);
    const old = await third.waitForLine((l) => l.event === 'state_not_resumed');
    expect(old.msg).toMatch(/^state file .* old \(stateMaxAge 1ms\): backends start up$/);
    await third.waitForLine((l) => l.event === 'ready');
    await stop(third);
  });
});

describe('HTTP listener', () => {
  it('serves /metrics, /status and /healthz on loopback', async () => {
    const a = await smtp();
    const gone = await closedPort();
    const { configPath, cond } = writeConfig(
      [
        { name: 'a', port: a.port },
        { name: 'b', port: gone },
        { name: 'c', port: a.port },
      ],
      'http: {listen: "0"}',
    );
    mkdirSync(path.join(cond, 'c')); // c's condition "file" is a folder: every write fails (EISDIR)
    const d = run(configPath);
    const listening = await d.waitForLine((l) => l.event === 'http_listening');
    expect(listening.host).toBe('127.0.0.1');
    const base = `http://127.0.0.1:${String(listening.port)}`;
    await d.waitForLine(isTransition('b', 'down'));
    // Checks go on: healthy. Asked first: c's writes fail from the start, and failing for 5s
    // makes the writer count as stalled (docs/operating.md), which a busy machine can reach
    // before the steps below are done.
    const healthz = await fetch(`${base}/healthz`);
    expect(healthz.status).toBe(200);
    expect(await healthz.text()).toMatch(/^ok: latest check \d+\.\ds ago\n$/);

    // Someone writes "down" into a's condition by hand: repaired and counted.
    writeFileSync(path.join(cond, 'a'), '1\n');
    await d.waitForLine((l) => l.event === 'drift_repaired');

    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const samples = parseMetrics(await res.text());
    const one = (name: string, labels: Record<string, string> = {}) =>
      samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

    expect(one('nfh_backend_up').map((s) => [s.labels.backend, s.value])).toEqual([
      ['a', 1],
      ['b', 0],
      ['c', 1],
    ]);
    expect(one('nfh_checks_total', { backend: 'a', type: 'smtp', outcome: 'up' })[0]!.value).toBeGreaterThanOrEqual(1);
    expect(one('nfh_checks_total', { backend: 'b', type: 'smtp', outcome: 'down' })[0]!.value).toBeGreaterThanOrEqual(
      2,
    );
    const histCount = one('nfh_check_duration_seconds_count', { backend: 'b', outcome: 'down' })[0]!.value;
    expect(histCount).toBeGreaterThanOrEqual(2);
    expect(one('nfh_check_duration_seconds_bucket', { backend: 'b', outcome: 'down', le: '+Inf' })[0]!.value).toBe(
      histCount,
    );
    expect(one('nfh_transitions_total', { backend: 'b', to: 'down' })[0]!.value).toBe(1);
    expect(one('nfh_transitions_total', { backend: 'a' })).toEqual([]);
    expect(one('nfh_drifts_repaired_total', { backend: 'a' })[0]!.value).toBe(1);
    expect(one('nfh_writer_failures_total', { backend: 'c' })[0]!.value).toBeGreaterThanOrEqual(1);
    expect(one('nfh_writer_failures_total', { backend: 'a' })).toEqual([]);
    for (const name of [
      'nfh_checks_in_flight',
      'nfh_checks_waiting',
      'nfh_scheduling_lag_seconds',
      'nfh_last_check_age_seconds',
    ]) {
      expect(one(name)).toHaveLength(1);
      expect(one(name)[0]!.value).toBeGreaterThanOrEqual(0);
    }
    expect(one('process_resident_memory_bytes')[0]!.value).toBeGreaterThan(0);
    // Bounded labels: only these names, never a detail string.
    const labelNames = new Set(samples.filter((s) => s.name.startsWith('nfh_')).flatMap((s) => Object.keys(s.labels)));
    expect([...labelNames].sort()).toEqual(['backend', 'le', 'outcome', 'service', 'to', 'type']);
    expect(samples.some((s) => Object.values(s.labels).some((v) => /ECONNREFUSED|220|EISDIR/.test(v)))).toBe(false);

    const status = await fetch(`${base}/status`);
    expect(status.status).toBe(200);
    const state = (await status.json()) as Snapshot;
    expect(state.backends.map((b) => [b.backend, b.state])).toEqual([
      ['a', 'up'],
      ['b', 'down'],
      ['c', 'up'],
    ]);
    expect(backendIn(state, 'c')!.written).toBeUndefined(); // never confirmed: the write fails

    expect((await fetch(`${base}/nope`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: 'POST' })).status).toBe(405);

    // Reload: c removed (its series go), the listener moves to another port.
    const newPort = await freePort();
    writeConfig(
      [
        { name: 'a', port: a.port },
        { name: 'b', port: gone },
      ],
      `http: {listen: "127.0.0.1:${newPort}"}`,
    );
    const mark = d.lines.length;
    d.child.kill('SIGHUP');
    await d.waitForLine((l) => l.event === 'reloaded', 10_000, mark);
    const moved = await d.waitForLine((l) => l.event === 'http_listening', 10_000, mark);
    expect(moved.port).toBe(newPort);
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
    const after = parseMetrics(await (await fetch(`http://127.0.0.1:${newPort}/metrics`)).text());
    expect(after.some((s) => s.labels.backend === 'c')).toBe(false);
    expect(after.find((s) => s.name === 'nfh_reloads_total')).toMatchObject({
      labels: { outcome: 'applied' },
      value: 1,
    });
    expect(after.find((s) => s.name === 'nfh_transitions_total' && s.labels.backend === 'b')?.value).toBe(1);
    await stop(d);
  });
});

describe('notify hooks', () => {
  it('runs notify.down, notify.up and notify.change with the facts in the environment; failures are logged', async () => {
    const hookDir = path.join(tmp.dir, 'hooks');
    mkdirSync(hookDir);
    const record = path.join(tmp.dir, 'record.sh');
    // Each run leaves its environment in its own file (written, then renamed: complete when seen).
    writeFileSync(
      record,
      `#!/bin/sh\nf="${hookDir}/$NFH_BACKEND.$NFH_EVENT.$$"\nenv > "$f.tmp" && mv "$f.tmp" "$f.env"\n`,
    );
    const failing = path.join(tmp.dir, 'failing.sh');
    writeFileSync(failing, '#!/bin/sh\necho "pager unreachable" >&2\nexit 3\n');
    chmodSync(record, 0o755);
    chmodSync(failing, 0o755);
    const a = await smtp();
    const b = await smtp();
    await b.stop();
    const { configPath, cond } = writeConfig(
      [
        { name: 'a', port: a.port },
        { name: 'b', port: b.port },
      ],
      `notify: {down: [${record}], up: [${record}, extra-arg], change: [${failing}], timeout: 5s, maxConcurrent: 2}`,
    );
    const d = run(configPath);
    await d.waitForLine(isTransition('b', 'down'));
    const envOf = async (name: string) => {
      const file = await waitUntil(
        () => readdirSync(hookDir).find((f) => f.startsWith(`${name}.`) && f.endsWith('.env')),
        (f) => f !== undefined,
      );
      return Object.fromEntries(
        readFileSync(path.join(hookDir, file!), 'utf8')
          .split('\n')
          .filter((l) => l.startsWith('NFH_'))
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      );
    };
    expect(await envOf('b.down')).toEqual({
      NFH_EVENT: 'down',
      NFH_SERVICE: 'mail',
      NFH_BACKEND: 'b',
      NFH_ADDRESS: '127.0.0.1',
      NFH_PORT: String(b.port),
      NFH_TARGET: path.join(cond, 'b'),
      NFH_STATE: 'down',
      NFH_PREVIOUS: 'up',
      NFH_REASON: '2 consecutive failures: connect ECONNREFUSED',
      NFH_SINCE: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      NFH_COALESCED: '1',
    });
    const failed = await d.waitForLine((l) => l.event === 'hook' && l.hook === 'change' && l.backend === 'b');
    expect(failed).toMatchObject({
      level: 'warn',
      outcome: 'failed',
      detail: 'exit 3: pager unreachable',
      program: failing,
    });

    await b.start();
    await d.waitForLine(isTransition('b', 'up'));
    expect(await envOf('b.up')).toMatchObject({
      NFH_EVENT: 'up',
      NFH_STATE: 'up',
      NFH_PREVIOUS: 'down',
      NFH_REASON: '2 consecutive successes: 220 nf-healthd-demo ESMTP',
    });
    // a never changed: no hook ran for it.
    expect(readdirSync(hookDir).filter((f) => f.startsWith('a.'))).toEqual([]);
    await stop(d);
  });
});

describe('flap damping and downInterval on a flapping backend', () => {
  it('holds a flapping backend down, then lets it up; checks a long-down backend at downInterval', async () => {
    const flappy = await smtp();
    const { configPath, stateFile, cond } = writeConfig(
      [{ name: 'f', port: flappy.port }],
      `damping: {window: 30s, changes: 4, hold: 8s, maxHold: 10s, decay: 1m}\nlog: {level: debug}`,
      // fall 2 and 400ms: only the test's stops take f down, not one slow greeting on a busy
      // machine. A hold of 8s: the `status` below (a new Node process) runs inside it.
      'interval: 200ms, fastInterval: 50ms, timeout: 400ms, rise: 2, fall: 2, downInterval: 1s',
    );
    const condFile = path.join(cond, 'f');
    const d = run(configPath);
    await d.waitForLine((l) => l.event === 'ready');
    // Four changes: down, up, down, up -> the 4th is held.
    await flappy.stop();
    await d.waitForLine(isTransition('f', 'down'));
    await flappy.start();
    await d.waitForLine(isTransition('f', 'up'));
    await flappy.stop();
    const down2 = d.lines.length;
    await d.waitForLine(isTransition('f', 'down'), 10_000, down2);
    await flappy.start();
    const hold = await d.waitForLine((l) => l.event === 'damping_hold');
    expect(hold).toMatchObject({
      level: 'warn',
      backend: 'f',
      reason:
        'flapping: 4 state changes in 30s; held down for 8s (hold 1) (the check passed: 220 nf-healthd-demo ESMTP)',
    });
    expect(hold.msg).toBe('backend f stays down: flapping: 4 state changes in 30s; held down for 8s (hold 1)');
    expect(readFileSync(condFile, 'latin1')).toBe('1\n');
    const held = await waitUntil(
      () => readState(stateFile),
      (s) => backendIn(s, 'f')?.held !== undefined,
    );
    expect(backendIn(held, 'f')!.held).toEqual({
      until: hold.until,
      reason: 'flapping: 4 state changes in 30s; held down for 8s (hold 1)',
    });
    const status = await cli(['status', '-c', configPath]);
    expect(status.code).toBe(2);
    expect(status.stdout).toMatch(/mail\/f +DOWN \(held \ds\)/);
    expect(status.stdout).toContain(
      `mail/f: held down until ${String(hold.until)}; flapping: 4 state changes in 30s; held down for 8s (hold 1) (the check passed: 220 nf-healthd-demo ESMTP)\n`,
    );

    // Passing checks while held: still down; up only once the hold is over.
    const up = await d.waitForLine(isTransition('f', 'up'), 20_000, d.lines.indexOf(hold));
    expect(Date.parse(String(up.time))).toBeGreaterThanOrEqual(Date.parse(String(hold.until)));
    expect(d.lines.some((l) => l.event === 'damping_released')).toBe(true);
    const passedWhileHeld = d.lines.filter(
      (l) =>
        l.event === 'check' &&
        l.up === true &&
        Date.parse(String(l.time)) < Date.parse(String(hold.until)) &&
        d.lines.indexOf(l) > d.lines.indexOf(hold),
    );
    expect(passedWhileHeld.length).toBeGreaterThan(0);
    await waitUntil(
      () => readFileSync(condFile, 'latin1'),
      (v) => v === '0\n',
    );

    // downInterval: down for longer than 1s -> checked every ~1s (never sooner than 0.9s with jitter).
    await flappy.stop();
    const down = await d.waitForLine(isTransition('f', 'down'), 10_000, d.lines.indexOf(up));
    const downAt = Date.parse(String(down.time));
    const checksOfF = () =>
      d.lines
        .filter((l) => l.event === 'check' && l.backend === 'f' && Date.parse(String(l.time)) > downAt)
        .map((l) => Date.parse(String(l.time)));
    await waitUntil(checksOfF, (times) => times.filter((t) => t > downAt + 1000).length >= 4, 15_000);
    const times = [downAt, ...checksOfF()];
    const gaps = times.slice(1).map((t, i) => ({ at: times[i]! - downAt, gap: t - times[i]! }));
    // Gaps are end to end (log times): a busy machine stretches or shrinks one by a check's
    // latency, so the bounds sit between the two paces (interval 200ms, downInterval 1s)
    // with room on both sides rather than at either of them.
    const early = gaps.filter((g) => g.at < 800);
    const late = gaps.filter((g) => g.at >= 1300);
    expect(early.length).toBeGreaterThan(0);
    expect(Math.min(...early.map((g) => g.gap))).toBeLessThan(600);
    expect(late.length).toBeGreaterThanOrEqual(2);
    expect(late.every((g) => g.gap >= 600)).toBe(true);

    // First success: back to fastInterval (50ms), up after rise 2 without waiting another downInterval.
    await flappy.start();
    const back = await d.waitForLine(isTransition('f', 'up'), 10_000, d.lines.indexOf(down));
    const firstOk = d.lines.find(
      (l) => l.event === 'check' && l.backend === 'f' && l.up === true && d.lines.indexOf(l) > d.lines.indexOf(down),
    );
    expect(firstOk).toBeDefined();
    // rise 2: the very next check of f makes it up (the transition replaces its check line)...
    const between = d.lines.slice(d.lines.indexOf(firstOk!) + 1, d.lines.indexOf(back));
    expect(between.filter((l) => l.event === 'check' && l.backend === 'f')).toEqual([]);
    // ...and it runs at fastInterval (50ms), not after another downInterval (1s).
    expect(Date.parse(String(back.time)) - Date.parse(String(firstOk!.time))).toBeLessThan(800);
    await stop(d);
  }, 60_000);
});
