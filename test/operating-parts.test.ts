import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config/load.js';
import { parseListen } from '../src/config/operations.js';
import { assessLiveness, type Watched } from '../src/health/liveness.js';
import type { WriterHealth } from '../src/kernel/loop.js';
import { createLogger } from '../src/log.js';
import { createHookRunner, runHook } from '../src/ops/hooks-plugin.js';
import { restoreFrom } from '../src/ops/restore.js';
import { fingerprint, type Snapshot } from '../src/ops/snapshot.js';
import { readStateFile, writeStateFile } from '../src/ops/state-file.js';
import { staleness, statusTable } from '../src/ops/status-command.js';
import { parseConfig, parsePlan } from '../src/plan/load.js';
import { MINIMAL_YAML } from './support/config.js';
import { tempDir } from './support/daemon.js';

const BASE = MINIMAL_YAML;

function problems(text: string): string[] {
  try {
    parseConfig(text, 'c.yaml');
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.line}:${p.column}: ${p.path}: ${p.message}`);
    throw err;
  }
}

describe('operating config keys', () => {
  it.each([
    ['9100', { host: '127.0.0.1', port: 9100 }],
    [':9100', { host: '127.0.0.1', port: 9100 }],
    ['0.0.0.0:9100', { host: '0.0.0.0', port: 9100 }],
    ['[::1]:9100', { host: '::1', port: 9100 }],
    ['localhost:0', { host: 'localhost', port: 0 }],
    ['::1:9100', '"::1:9100": write an IPv6 address in brackets, such as [::1]:9100'],
    ['99999', '"99999": expected a port (0 to 65535), ":PORT" or "ADDRESS:PORT"'],
    ['example.com:9100', '"example.com" is not an IP address: listen on an address, such as 127.0.0.1:9100'],
  ])('http.listen %s', (text, want) => {
    expect(parseListen(text)).toEqual(want);
  });

  it('has safe defaults: state file in /run, 5m stateMaxAge, no listener, no hooks, no damping', () => {
    const c = parsePlan(BASE);
    expect(c.config.stateFile).toBe('/run/nf-healthd/state.json');
    expect(c.config.stateMaxAge).toBe(300_000);
    expect(c.config.http).toBeUndefined();
    expect(c.config.notify).toBeUndefined();
    expect(c.config.damping).toBeUndefined();
    expect(c.backends[0]!.downInterval).toBe(2000); // = interval
  });

  it('parses every key, with a bare port as loopback and defaults filled in', () => {
    const c = parsePlan(`${BASE}stateFile: /var/lib/nfh/state.json
stateMaxAge: 10m
http: {listen: 9100}
notify: {down: [/usr/local/bin/page, --team, net]}
damping: {hold: 1m}
defaults: {interval: 2s, downInterval: 30s}
`);
    expect(c.config.http?.listen).toEqual({ host: '127.0.0.1', port: 9100 });
    expect(c.config.notify).toEqual({
      down: ['/usr/local/bin/page', '--team', 'net'],
      timeout: 10_000,
      maxConcurrent: 4,
    });
    expect(c.config.damping).toEqual({ window: 60_000, changes: 4, hold: 60_000, maxHold: 600_000, decay: 300_000 });
    expect(c.config.stateMaxAge).toBe(600_000);
    expect(c.backends[0]!.downInterval).toBe(30_000);
  });

  it('rejects bad values with their line', () => {
    expect(
      problems(`${BASE}stateFile: state.json
http: {listen: "example.com:80"}
notify: {up: [page.sh], timeout: soon}
damping: {changes: 1}
`),
    ).toEqual([
      '8:12: stateFile: expected an absolute path',
      '9:16: http.listen: "example.com" is not an IP address: listen on an address, such as 127.0.0.1:9100',
      '10:14: notify.up: the program must be an absolute path (hooks run without a shell and without PATH lookups)',
      '10:34: notify.timeout: "soon" is not a duration: use a number and a unit (ms, s, m, h), such as 500ms or 2s',
      '11:20: damping.changes: Too small: expected number to be >=2',
    ]);
    expect(problems(`${BASE}defaults: {interval: 2s, downInterval: 1s}\n`)).toEqual([
      '8:40: defaults.downInterval: downInterval 1s is shorter than interval 2s for backend mail1: it is meant to check long-dead backends less often',
    ]);
  });
});

let tmp: ReturnType<typeof tempDir>;
beforeEach(() => {
  tmp = tempDir('nfh-ops-parts-');
});
afterEach(() => tmp.cleanup());

function snapshotOf(partial: Partial<Snapshot> = {}): Snapshot {
  const spec = parsePlan(BASE).backends[0]!;
  return {
    version: 1,
    pid: 4242,
    writtenAt: '2026-11-26T03:00:00.000Z',
    staleAfterMs: 8000,
    configPath: '/etc/nf-healthd/config.yaml',
    backends: [
      {
        id: spec.id,
        service: 'mail',
        backend: 'mail1',
        address: '192.0.2.1',
        port: 25,
        type: 'smtp',
        fingerprint: fingerprint(spec),
        target: { key: 'mail1', label: '/tmp/x/mail1' },
        state: 'down',
        since: '2026-11-26T02:55:00.000Z',
        reason: '3 consecutive failures: connect ECONNREFUSED',
        successes: 0,
        failures: 7,
        last: { at: '2026-11-26T02:59:58.000Z', up: false, detail: 'connect ECONNREFUSED', latencyMs: 0.4 },
        written: { up: false, confirmed: true, at: '2026-11-26T02:55:00.000Z' },
      },
    ],
    ...partial,
  };
}

describe('state file', () => {
  it('round-trips through an atomic write and rejects what is not a state file', async () => {
    const file = path.join(tmp.dir, 'sub', 'state.json');
    await writeStateFile(file, snapshotOf());
    const read = await readStateFile(file);
    expect(read).toEqual({ ok: true, state: snapshotOf() });
    writeFileSync(file, '{"version": 0}');
    expect(await readStateFile(file)).toMatchObject({
      ok: false,
      missing: false,
      problem: expect.stringContaining('is not a state file of this version: version'),
    });
    writeFileSync(file, '{"version": 2}');
    expect(await readStateFile(file)).toMatchObject({
      ok: false,
      missing: false,
      problem: `${file} was written by a newer nf-healthd (state file version 2, this one reads 1)`,
    });
    writeFileSync(file, 'garbage');
    expect(await readStateFile(file)).toMatchObject({ ok: false, problem: `${file} is not JSON` });
    expect(await readStateFile(path.join(tmp.dir, 'none.json'))).toMatchObject({ ok: false, missing: true });
  });

  it('resumes an unchanged backend from a recent file only', () => {
    const spec = parsePlan(BASE).backends[0]!;
    const now = Date.parse('2026-11-26T03:01:00.000Z');
    const fresh = restoreFrom(snapshotOf(), 300_000, now);
    expect(fresh.usable).toBe(true);
    expect(fresh.restore(spec)).toEqual({
      health: { state: 'down', successes: 0, failures: 7 },
      since: Date.parse('2026-11-26T02:55:00.000Z'),
      reason: '3 consecutive failures: connect ECONNREFUSED',
      last: { up: false, detail: 'connect ECONNREFUSED', latencyMs: 0.4, at: Date.parse('2026-11-26T02:59:58.000Z') },
    });
    expect(restoreFrom(snapshotOf(), 30_000, now).restore(spec)).toBeUndefined(); // 60s old
    expect(fresh.restore({ ...spec, port: 26 })).toBeUndefined();
    expect(fresh.restore({ ...spec, address: '192.0.2.2' })).toBeUndefined();
    expect(fresh.restore({ ...spec, checks: [{ type: 'tcp' }] })).toBeUndefined();
    expect(fresh.restore({ ...spec, target: { key: 'other', label: '/tmp/x/other' } })).toBeUndefined();
    expect(fresh.restore({ ...spec, id: 'mail/mail9' })).toBeUndefined();
    // Timing is not identity: a new interval keeps the state.
    expect(fresh.restore({ ...spec, interval: 5000 })).toBeDefined();
  });

  it('status: staleness in words, and a table', () => {
    const now = Date.parse('2026-11-26T03:00:05.000Z');
    expect(staleness(snapshotOf(), now)).toBeUndefined();
    expect(staleness(snapshotOf(), now + 10_000)).toBe(
      'nf-healthd is not running or stuck: its state file was last written 15s ago (pid 4242), it is refreshed every 2s',
    );
    expect(staleness(snapshotOf({ stoppedAt: '2026-11-26T03:00:00.000Z' }), now)).toBe(
      'nf-healthd is not running: it stopped at 2026-11-26T03:00:00.000Z (pid 4242)',
    );
    expect(statusTable(snapshotOf(), parseConfig(BASE), now)).toBe(
      [
        '0/1 backends up (state of pid 4242, 5s old)',
        '',
        'BACKEND     STATE  SINCE      LAST CHECK                         LATENCY  TARGET        VALUE',
        'mail/mail1  DOWN   5m05s ago  FAIL 7s ago: connect ECONNREFUSED  0ms      /tmp/x/mail1  1',
        '',
        'Down:',
        '  mail/mail1: 3 consecutive failures: connect ECONNREFUSED',
        '',
      ].join('\n'),
    );
  });
});

describe('notify hooks (real processes)', () => {
  const log = createLogger({ level: 'error', destination: { write: () => undefined } });

  it('kills a hook at its timeout and says so', async () => {
    const stop = new AbortController();
    expect(await runHook(['/bin/sleep', '30'], {}, 100, stop.signal)).toEqual({
      outcome: 'timeout',
      detail: 'killed after 100ms',
    });
    expect(await runHook(['/bin/true'], {}, 5000, stop.signal)).toEqual({ outcome: 'ok', detail: 'exit 0' });
    expect(await runHook(['/nonexistent/hook'], {}, 5000, stop.signal)).toEqual({
      outcome: 'failed',
      detail: 'ENOENT',
    });
  });

  it('a burst runs at most maxConcurrent at once and coalesces per backend (latest state wins)', async () => {
    const logFile = path.join(tmp.dir, 'runs.log');
    const hook = path.join(tmp.dir, 'hook.sh');
    // start/end lines around a short pause: overlapping runs would interleave them.
    writeFileSync(
      hook,
      `#!/bin/sh\necho "start $NFH_BACKEND $NFH_STATE $NFH_PREVIOUS $NFH_COALESCED" >> "$1"\nsleep 0.05\necho "end $NFH_BACKEND" >> "$1"\n`,
    );
    chmodSync(hook, 0o755);
    const counted: string[] = [];
    const hooks = createHookRunner({
      config: () => ({ change: [hook, logFile], timeout: 5000, maxConcurrent: 1 }),
      log,
      count: (h, o) => counted.push(`${h}:${o}`),
    });
    const at = { service: 'mail', address: '192.0.2.1', port: 25, target: '/tmp/x', reason: 'test', since: 0 };
    const flips = (backend: string, n: number) => {
      for (let i = 0; i < n; i++)
        hooks.run({ ...at, backend, state: i % 2 === 0 ? 'down' : 'up', previous: i % 2 === 0 ? 'up' : 'down' });
    };
    flips('x', 5); // down up down up down
    flips('y', 3); // down up down
    await hooks.idle();
    expect(readFileSync(logFile, 'utf8').trim().split('\n')).toEqual([
      'start x down up 1',
      'end x',
      'start y down up 1',
      'end y',
      // x's 2nd..5th coalesced: latest state (down); previous is what the first run reported before
      'start x down down 4',
      'end x',
      'start y down down 2',
      'end y',
    ]);
    expect(counted.filter((c) => c === 'change:coalesced')).toHaveLength(4);
    expect(counted.filter((c) => c === 'change:ok')).toHaveLength(4);
    hooks.stop();
  });
});

describe('liveness: /healthz and the watchdog', () => {
  // assessLiveness reads a few daemon accessors; a plain object with those values stands in
  // for a daemon whose scheduler or writer is stuck, which a real one cannot be made to be
  // on demand (test/writer-stall.test.ts drives a real daemon with a hanging nft).
  const spec = { interval: 2000, downInterval: 10_000, timeout: 1500 };
  const idleWriter: WriterHealth = { busySince: undefined, failingSince: undefined, lastError: undefined, pending: 0 };
  const daemonAt = (progressAt: number, writer: Partial<WriterHealth> = {}) =>
    ({
      backends: () => [{ spec }],
      lastProgressAt: () => progressAt,
      scheduler: () => ({ lastRunAt: () => progressAt }),
      writerHealth: () => ({ ...idleWriter, ...writer }),
      config: () => ({ writer: { type: 'nft', commandTimeout: 2000 } }),
    }) as unknown as Watched;

  it('is starting before the first round, checks-stalled when no check completed for twice the longest period', () => {
    expect(assessLiveness(daemonAt(0), false, 1000)).toEqual({
      state: 'starting',
      detail: 'starting: the first round of checks is not done',
    });
    expect(assessLiveness(daemonAt(0), true, 1500)).toEqual({ state: 'ok', detail: 'ok: latest check 1.5s ago' });
    // longest period: downInterval 10s + timeout 1.5s -> limit 2 x 11.5s + 1s = 24s
    expect(assessLiveness(daemonAt(0), true, 24_000)).toMatchObject({ state: 'ok' });
    expect(assessLiveness(daemonAt(0), true, 24_001)).toEqual({
      state: 'checks-stalled',
      detail: 'no check has completed for 24.0s (limit 24.0s): the scheduler is stuck',
    });
  });

  it('is writer-stalled when one write runs past the command timeout, or writes keep failing', () => {
    // commandTimeout 2s + 1s slack
    expect(assessLiveness(daemonAt(10_000, { busySince: 7000 }), true, 10_000)).toMatchObject({ state: 'ok' });
    expect(assessLiveness(daemonAt(10_000, { busySince: 6999 }), true, 10_000)).toEqual({
      state: 'writer-stalled',
      detail: 'writer stalled: one kernel write has been running for 3.0s (timeout 2.0s); checks go on',
    });
    const failing = { failingSince: 1000, lastError: 'nft set inet nfh up element 0x101: ETIMEDOUT' };
    expect(assessLiveness(daemonAt(6000, failing), true, 6000)).toMatchObject({ state: 'ok' });
    expect(assessLiveness(daemonAt(6001, failing), true, 6001)).toEqual({
      state: 'writer-stalled',
      detail:
        'writer stalled: kernel writes failing for 5.0s (nft set inet nfh up element 0x101: ETIMEDOUT); checks go on',
    });
  });
});
