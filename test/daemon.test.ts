import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createDaemon, type Daemon, summarize } from '../src/daemon.js';
import type { ReadOutcome, Writer } from '../src/kernel/writers/types.js';
import { createLogger } from '../src/log.js';
import { parsePlan } from '../src/plan/load.js';
import type { ProbeResult } from '../src/probes/types.js';

/*
 * Scheduling and hysteresis wiring under fake timers. The probe and the writer are
 * replaced by scripted stand-ins here (both are tested for real against loopback
 * sockets and a real folder elsewhere): what is under test is when checks run and
 * what the daemon decides from their results.
 */

const CONFIG = `defaults: {interval: 1s, fastInterval: 200ms, timeout: 500ms, rise: 2, fall: 3}
writer: {type: condition, dir: /nonexistent-in-memory}
services:
  - name: mail
    port: 25
    check: {type: smtp}
    backends:
      - {name: mail1, address: 127.0.0.1, condition: mail1up}
      - {name: mail2, address: 127.0.0.2, condition: mail2up}
`;

function memoryWriter() {
  const values = new Map<string, boolean>();
  const writes: string[] = [];
  const writer: Writer = {
    async read(targets) {
      return new Map<string, ReadOutcome>(
        targets.map((t) => [
          t.key,
          values.has(t.key)
            ? { up: values.get(t.key)!, raw: values.get(t.key) ? '0' : '1' }
            : { error: Object.assign(new Error('missing'), { code: 'ENOENT' }) },
        ]),
      );
    },
    async write(changes) {
      for (const c of changes) {
        values.set(c.target.key, c.up);
        writes.push(`${c.target.key}=${c.up ? 'up' : 'down'}`);
      }
      return new Map();
    },
    hint: () => 'test',
  };
  return { writer, values, writes };
}

/** Lets real setImmediate callbacks (the reconciler batches on them) and promise chains run. */
async function flush() {
  for (let i = 0; i < 4; i++) {
    await vi.advanceTimersByTimeAsync(0);
    await new Promise((r) => setImmediate(r));
  }
}

/** Moves fake time forward 1 ms at a time, letting the daemon finish what each timer started. */
async function advance(ms: number) {
  for (let i = 0; i < ms; i++) {
    await vi.advanceTimersByTimeAsync(1);
    await flush();
  }
}

async function drive<T>(p: Promise<T>): Promise<T> {
  let done = false;
  const watched = p.finally(() => (done = true));
  for (let i = 0; i < 100 && !done; i++) await flush();
  return watched;
}

let daemon: Daemon | undefined;
beforeEach(() => {
  vi.useFakeTimers({
    toFake: ['setTimeout', 'clearTimeout', 'Date', 'performance'],
    now: new Date('2026-11-26T12:00:00Z'),
  });
});
afterEach(async () => {
  if (daemon) await drive(daemon.stop());
  daemon = undefined;
  vi.useRealTimers();
});

function setup(script: (backend: string, n: number) => boolean | Promise<ProbeResult>, random = () => 0.5) {
  const mem = memoryWriter();
  const calls: { backend: string; at: number }[] = [];
  const counts = new Map<string, number>();
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({
    level: 'debug',
    format: 'json',
    destination: { write: (l: string) => void lines.push(JSON.parse(l)) },
  });
  daemon = createDaemon({
    configPath: 'test.yaml',
    plan: parsePlan(CONFIG),
    log,
    random,
    writerFactory: () => mem.writer,
    runCheck: async (_check, target) => {
      const n = (counts.get(target.backend) ?? 0) + 1;
      counts.set(target.backend, n);
      calls.push({ backend: target.backend, at: Date.now() - Date.parse('2026-11-26T12:00:00Z') });
      const r = script(target.backend, n);
      return typeof r === 'boolean' ? { up: r, detail: r ? '220 ok' : 'connect ECONNREFUSED', latencyMs: 1 } : r;
    },
  });
  return { mem, calls, lines, daemon };
}

const times = (calls: { backend: string; at: number }[], backend: string) =>
  calls.filter((c) => c.backend === backend).map((c) => c.at);

describe('daemon scheduling (fake timers)', () => {
  it('checks everything once at start, writes, then every interval with jitter', async () => {
    let step = 0;
    const { mem, calls, daemon } = setup(
      () => true,
      () => [0.5, 0.25][step++ % 2]!,
    );
    await drive(daemon.start());
    expect(mem.writes).toEqual(['mail1up=up', 'mail2up=up']);
    expect(calls).toEqual([
      { backend: 'mail1', at: 0 },
      { backend: 'mail2', at: 0 },
    ]);
    await advance(5_000);
    // First run spread inside one interval (random 0.5 and 0.25), then every
    // interval minus up to 10% jitter (random alternating 0.5/0.25 -> 950/975 ms).
    const m1 = times(calls, 'mail1');
    const m2 = times(calls, 'mail2');
    expect(m1[1]).toBe(500);
    expect(m2[1]).toBe(250);
    for (const t of [m1, m2]) {
      const gaps = t.slice(2).map((v, i) => v - t[i + 1]!);
      expect(gaps.length).toBeGreaterThanOrEqual(3);
      for (const g of gaps) expect([950, 975]).toContain(g);
    }
    // Nothing changed, so nothing was written again and nothing above debug was logged.
    expect(mem.writes).toEqual(['mail1up=up', 'mail2up=up']);
  });

  it('switches to fastInterval on a failure, marks down after `fall` failures, up after `rise` successes', async () => {
    // mail1: up at start, then 3 failures, then successes. mail2 always fine.
    const { mem, calls, lines, daemon } = setup((backend, n) => backend === 'mail2' || n === 1 || n >= 5);
    await drive(daemon.start());
    await advance(4_000);
    const m1 = times(calls, 'mail1');
    // 0: ok (start); 500: fail 1 -> fast (200 ms less 5% jitter = 190); 690: fail 2;
    // 880: fail 3 -> down, settled -> 950; 1830: ok 1 -> fast; 2020: ok 2 -> up -> 950.
    expect(m1.slice(0, 7)).toEqual([0, 500, 690, 880, 1830, 2020, 2970]);
    expect(mem.writes).toEqual(['mail1up=up', 'mail2up=up', 'mail1up=down', 'mail1up=up']);
    const transitions = lines.filter((l) => l.event === 'transition');
    expect(transitions).toEqual([
      expect.objectContaining({
        level: 'warn',
        backend: 'mail1',
        state: 'down',
        previous: 'up',
        reason: '3 consecutive failures: connect ECONNREFUSED',
      }),
      expect.objectContaining({
        level: 'info',
        backend: 'mail1',
        state: 'up',
        previous: 'down',
        reason: '2 consecutive successes: 220 ok',
      }),
    ]);
    // Silence when all is well: beyond start, ready and the two transitions, only debug lines.
    expect(lines.filter((l) => l.level !== 'debug').map((l) => l.event)).toEqual(['ready', 'transition', 'transition']);
  });

  it('never runs two checks of one backend at once', async () => {
    const pending: ((r: ProbeResult) => void)[] = [];
    const { calls, daemon } = setup((backend, n) =>
      backend === 'mail1' && n === 2 ? new Promise<ProbeResult>((resolve) => pending.push(resolve)) : true,
    );
    await drive(daemon.start());
    await advance(10_000);
    // mail1's second check hangs (a stand-in for a slow check): no third one starts meanwhile.
    expect(times(calls, 'mail1')).toEqual([0, 500]);
    expect(times(calls, 'mail2').length).toBeGreaterThan(8);
    pending[0]!({ up: true, detail: 'late', latencyMs: 9500 });
    await flush();
    await advance(1_000);
    // It overran its period, so the next one starts at once, then on the period again.
    expect(times(calls, 'mail1')).toEqual([0, 500, 10_000, 10_950]);
  });

  it('plans the period from start to start: a slow check does not push the next back', async () => {
    const { calls, daemon } = setup((backend, n) =>
      backend === 'mail1' && n === 2
        ? new Promise<ProbeResult>((resolve) =>
            setTimeout(() => resolve({ up: true, detail: 'slow', latencyMs: 300 }), 300),
          )
        : true,
    );
    await drive(daemon.start());
    await advance(2_500);
    // 500: a check that takes 300 ms; the next still starts 950 ms after it began.
    expect(times(calls, 'mail1').slice(0, 4)).toEqual([0, 500, 1450, 2400]);
  });

  it('caps checks in flight at `concurrency`', async () => {
    const pending: (() => void)[] = [];
    let inFlight = 0;
    let most = 0;
    const mem = memoryWriter();
    const many = `concurrency: 3
writer: {type: condition, dir: /nonexistent-in-memory}
services:
  - name: web
    port: 80
    backends:
${[...Array(10)].map((_, i) => `      - {name: web${i}, address: 127.0.0.1}`).join('\n')}
`;
    daemon = createDaemon({
      configPath: 'x',
      plan: parsePlan(many),
      log: createLogger({ level: 'error', format: 'json', destination: { write: () => undefined } }),
      writerFactory: () => mem.writer,
      runCheck: () =>
        new Promise<ProbeResult>((resolve) => {
          most = Math.max(most, ++inFlight);
          pending.push(() => {
            inFlight--;
            resolve({ up: true, detail: 'ok', latencyMs: 1 });
          });
        }),
    });
    const started = daemon.start();
    for (let i = 0; i < 10; i++) {
      await flush();
      pending.shift()?.();
    }
    await drive(started);
    expect(most).toBe(3);
    expect(mem.writes).toHaveLength(10);
  });
});

describe('summarize', () => {
  it('says how many are up and why the others are down', () => {
    const spec = (name: string) => ({ name }) as never;
    expect(
      summarize([
        { spec: spec('mail1'), health: { state: 'up', successes: 3, failures: 0 }, since: 0, reason: '' },
        {
          spec: spec('mail2'),
          health: { state: 'down', successes: 0, failures: 3 },
          since: new Date(2026, 10, 26, 12, 4, 31).getTime(),
          reason: 'x',
          last: { up: false, detail: 'connect ECONNREFUSED', latencyMs: 1, at: 0 },
        },
      ]),
    ).toBe('1/2 up; mail2 down since 12:04:31: connect ECONNREFUSED');
  });
});
