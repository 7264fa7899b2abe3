/**
 * Detection and recovery time: backends are killed (connections refused) or
 * silenced (accepted, never answered: the check times out) at random moments,
 * then brought back; the time is measured until nf-healthd's condition file
 * changes (inotify on the folder), against interval + fall × fastInterval
 * (+ the timeout for a silent backend), and interval + rise × fastInterval back.
 * The trials run side by side, each on its own backend, with unrelated backends
 * checked at the same time as background load.
 */
import { mkdtempSync, readFileSync, rmSync, watch } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { backendName, startNfHealthd, type Timing } from './checkers.js';
import { percentile, prioritize, sleep, startBackends, waitFor } from './lib.js';

export interface DetectionOptions {
  trials: number;
  /** Healthy backends checked alongside the trials. */
  background: number;
  timing: Timing;
  port: number;
  bannerServer: string;
  checkerCpu?: number;
  backendCpu?: number;
  ns?: string;
  random?: () => number;
}

export type Failure = 'refused' | 'silent';

export interface DetectionRow {
  failure: Failure;
  phase: 'down' | 'up';
  trials: number;
  /** Trials that saw no change before their deadline. */
  missed: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The formula for this row. */
  formulaMs: number;
  formula: string;
  /**
   * The schedule's own worst case: the first failing check starts within one interval,
   * each failing check of a silent backend lasts the whole timeout, and the next one
   * starts fastInterval after the previous one ended.
   */
  boundMs: number;
  /** p99 within 50 ms of the formula. */
  met: boolean;
}

export function scheduleBound(failure: Failure, phase: 'down' | 'up', t: Timing): number {
  const checks = phase === 'down' ? t.fall : t.rise;
  // Recovery from silence: a check hanging at the revival still runs into its timeout first.
  const lasting = failure === 'silent' ? (phase === 'down' ? checks * t.timeoutMs : t.timeoutMs) : 0;
  return t.intervalMs + (checks - 1) * t.fastIntervalMs + lasting;
}

export function formulaFor(failure: Failure, phase: 'down' | 'up', t: Timing): { ms: number; text: string } {
  const base = phase === 'down' ? t.intervalMs + t.fall * t.fastIntervalMs : t.intervalMs + t.rise * t.fastIntervalMs;
  const text = phase === 'down' ? `interval + fall × fastInterval` : `interval + rise × fastInterval`;
  return failure === 'silent' ? { ms: base + t.timeoutMs, text: `${text} + timeout` } : { ms: base, text };
}

/** Resolves when the condition file of `name` holds `value`; inotify on the folder wakes the waiters. */
function conditionWatcher(dir: string) {
  const waiters = new Map<string, { value: string; resolve: (at: number) => void }>();
  const look = (file: string) => {
    const w = waiters.get(file);
    if (!w) return;
    let first: string | undefined;
    try {
      first = readFileSync(path.join(dir, file), 'latin1')[0];
    } catch {
      return;
    }
    if (first === w.value) {
      waiters.delete(file);
      w.resolve(performance.now());
    }
  };
  const watcher = watch(dir, (_event, file) => {
    if (file) look(file.toString());
  });
  return {
    until(name: string, value: string, deadlineMs: number): Promise<number | undefined> {
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          waiters.delete(name);
          resolve(undefined);
        }, deadlineMs);
        waiters.set(name, {
          value,
          resolve: (at) => {
            clearTimeout(timer);
            resolve(at);
          },
        });
        look(name);
      });
    },
    close: () => watcher.close(),
  };
}

export async function runDetection(o: DetectionOptions): Promise<DetectionRow[]> {
  const random = o.random ?? Math.random;
  const count = 2 * o.trials + o.background;
  const t = o.timing;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nfh-bench-detection-'));
  const backends = await startBackends(o.bannerServer, 'smtp', o.port, count, { cpu: o.backendCpu, ns: o.ns });
  try {
    const checker = await startNfHealthd({
      mode: 'smtp',
      port: o.port,
      count,
      timing: t,
      dir,
      cpu: o.checkerCpu,
      ns: o.ns,
    });
    try {
      await waitFor('nf-healthd to check every backend', async () => (await backends.accepted()) >= count, 60_000, 100);
      prioritize(checker.pid);
      await sleep(2 * t.intervalMs);
      const conditions = conditionWatcher(checker.conditionDir!);
      const times: Record<Failure, { down: (number | undefined)[]; up: (number | undefined)[] }> = {
        refused: { down: [], up: [] },
        silent: { down: [], up: [] },
      };
      const trial = async (i: number, failure: Failure) => {
        const name = backendName(i);
        const down = formulaFor(failure, 'down', t).ms;
        const up = formulaFor(failure, 'up', t).ms;
        await sleep(random() * 2 * t.intervalMs);
        const seen = conditions.until(name, '1', 4 * down); // upValue 0: "1" is down
        const killedAt = performance.now();
        await (failure === 'refused' ? backends.kill(i) : backends.silence(i));
        const downAt = await seen;
        times[failure].down.push(downAt === undefined ? undefined : downAt - killedAt);
        await sleep(random() * t.intervalMs);
        const back = conditions.until(name, '0', 4 * up);
        const revivedAt = performance.now();
        await backends.revive(i);
        const upAt = await back;
        times[failure].up.push(upAt === undefined ? undefined : upAt - revivedAt);
      };
      const runs: Promise<void>[] = [];
      for (let k = 0; k < o.trials; k++) {
        runs.push(trial(k, 'refused'), trial(o.trials + k, 'silent'));
      }
      await Promise.all(runs);
      conditions.close();
      const rows: DetectionRow[] = [];
      for (const failure of ['refused', 'silent'] as const) {
        for (const phase of ['down', 'up'] as const) {
          const all = times[failure][phase];
          const seen = all.filter((x): x is number => x !== undefined);
          const f = formulaFor(failure, phase, t);
          const p99 = percentile(seen, 99);
          rows.push({
            failure,
            phase,
            trials: all.length,
            missed: all.length - seen.length,
            p50Ms: percentile(seen, 50),
            p99Ms: p99,
            maxMs: Math.max(...seen),
            formulaMs: f.ms,
            formula: f.text,
            boundMs: scheduleBound(failure, phase, t),
            met: seen.length === all.length && p99 <= f.ms + 50,
          });
        }
      }
      return rows;
    } finally {
      await checker.stop();
    }
  } finally {
    await backends.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
