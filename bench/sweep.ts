/**
 * One row of the scale sweep: a checker against `count` backends for a measured
 * window. Checks are counted at the banner server (the same for both checkers),
 * CPU from /proc/PID/stat, lag and latency from nf-healthd's samples file.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type CheckerName, startChecker, type Timing } from './checkers.js';
import {
  type BackendMode,
  cpuMicros,
  cpuWaitNs,
  memoryMiB,
  prioritize,
  sleep,
  startBackends,
  timeWait,
  waitFor,
} from './lib.js';

export interface RowOptions {
  checker: CheckerName;
  mode: BackendMode;
  count: number;
  timing: Timing;
  /** Steady-state time before the window, after every backend has been checked once. */
  warmupMs: number;
  windowMs: number;
  /** A port no other row used, so this row's TIME_WAIT sockets can be told apart. */
  port: number;
  bannerServer: string;
  checkerCpu?: number;
  backendCpu?: number;
  /** Network namespace for the backends and the checker (see createNamespace). */
  ns?: string;
  nodeArgs?: string[];
  daemonEntry?: string;
  /** Keep the checker's temp folder (profiles) instead of removing it. */
  keepDir?: boolean;
}

export interface Percentiles {
  p50: number;
  p99: number;
}

export interface RowResult {
  checker: CheckerName;
  mode: BackendMode;
  count: number;
  windowS: number;
  /** Connections the checker opened in the window (in a namespace of the benchmark's own). */
  checks: number;
  /** Connections the banner server accepted (HAProxy's connect checks reset before accept). */
  accepted: number;
  planned: number;
  /** checks / planned */
  achieved: number;
  cpuUsPerCheck: number;
  /** Share of one core the checker used in the window. */
  cpuShare: number;
  /** Share of the window its main thread was runnable but waited for the CPU (other work on the core). */
  cpuWaitShare: number;
  backendCpuUsPerCheck: number;
  backendCpuShare: number;
  rssMiB: number;
  peakRssMiB: number;
  lagMs?: Percentiles;
  latencyMs?: Percentiles;
  /** nf-healthd: V8 heap in use and reserved at exit, MiB. */
  heapMiB?: { used: number; total: number };
  /** Backends the checker held down at the end: any is a wrong verdict (all backends are healthy). */
  down: number;
  timeWait: { checker: number; backend: number };
  exit: string;
  dir?: string;
}

interface SamplesFile {
  histogram: { minMs: number; growth: number; buckets: number };
  lag: Record<string, number[]>;
  latency: Record<string, number[]>;
  memory?: { rss: number; heapTotal: number; heapUsed: number; external: number; arrayBuffers: number };
}

/** Percentiles of the per-second histograms of the seconds overlapping [fromMs, toMs) (the edges fall in the steady warm-up). */
export function histogramPercentiles(
  file: SamplesFile,
  which: 'lag' | 'latency',
  fromMs: number,
  toMs: number,
): Percentiles | undefined {
  const { minMs, growth, buckets } = file.histogram;
  const total = new Array<number>(buckets).fill(0);
  let n = 0;
  for (const [second, counts] of Object.entries(file[which])) {
    const s = Number(second) * 1000;
    if (s + 1000 <= fromMs || s >= toMs) continue;
    counts.forEach((c, i) => {
      total[i]! += c;
      n += c;
    });
  }
  if (n === 0) return undefined;
  const at = (p: number) => {
    const rank = Math.ceil((p / 100) * n);
    let seen = 0;
    for (let i = 0; i < buckets; i++) {
      seen += total[i]!;
      if (seen >= rank) return i === 0 ? minMs : minMs * growth ** i; // the bucket's upper edge
    }
    return NaN;
  };
  return { p50: at(50), p99: at(99) };
}

export async function runRow(o: RowOptions): Promise<RowResult> {
  const dir = mkdtempSync(path.join(os.tmpdir(), `nfh-bench-${o.checker}-${o.mode}-${o.count}-`));
  const backends = await startBackends(o.bannerServer, o.mode, o.port, o.count, { cpu: o.backendCpu, ns: o.ns });
  try {
    const checker = await startChecker(o.checker, {
      mode: o.mode,
      port: o.port,
      count: o.count,
      timing: o.timing,
      dir,
      cpu: o.checkerCpu,
      ns: o.ns,
      nodeArgs: o.nodeArgs,
      daemonEntry: o.daemonEntry,
    });
    let exit = '';
    try {
      // Every backend checked at least once, then a steady state before measuring.
      const opened = backends.connections();
      await waitFor(
        `${o.checker} to check all ${o.count} backends`,
        () => backends.connections() - opened >= o.count,
        60_000 + o.count * 10,
        200,
      );
      prioritize(checker.pid);
      await sleep(o.warmupMs);
      const t0 = Date.now();
      const c0 = backends.connections();
      const a0 = await backends.accepted();
      const u0 = cpuMicros(checker.pid);
      const w0 = cpuWaitNs(checker.pid);
      const b0 = cpuMicros(backends.pid);
      await sleep(o.windowMs);
      const c1 = backends.connections();
      const a1 = await backends.accepted();
      const u1 = cpuMicros(checker.pid);
      const w1 = cpuWaitNs(checker.pid);
      const b1 = cpuMicros(backends.pid);
      const t1 = Date.now();
      const mem = memoryMiB(checker.pid);
      const tw = timeWait(o.port, o.ns);
      const down = await checker.downCount();
      exit = await checker.stop();
      const seconds = (t1 - t0) / 1000;
      const checks = c1 - c0;
      const planned = (o.count * (t1 - t0)) / o.timing.intervalMs;
      const row: RowResult = {
        checker: o.checker,
        mode: o.mode,
        count: o.count,
        windowS: seconds,
        checks,
        accepted: a1 - a0,
        planned,
        achieved: checks / planned,
        cpuUsPerCheck: (u1 - u0) / checks,
        cpuShare: (u1 - u0) / 1e6 / seconds,
        cpuWaitShare: (w1 - w0) / 1e9 / seconds,
        backendCpuUsPerCheck: (b1 - b0) / checks,
        backendCpuShare: (b1 - b0) / 1e6 / seconds,
        rssMiB: mem.rss,
        peakRssMiB: mem.peak,
        down,
        timeWait: { checker: tw.checker, backend: tw.backend },
        exit,
      };
      if (checker.samplesFile) {
        const samples = JSON.parse(readFileSync(checker.samplesFile, 'utf8')) as SamplesFile;
        row.lagMs = histogramPercentiles(samples, 'lag', t0, t1);
        row.latencyMs = histogramPercentiles(samples, 'latency', t0, t1);
        if (samples.memory)
          row.heapMiB = { used: samples.memory.heapUsed / 2 ** 20, total: samples.memory.heapTotal / 2 ** 20 };
      }
      if (o.keepDir) row.dir = dir;
      return row;
    } finally {
      if (!exit) await checker.stop();
    }
  } finally {
    await backends.stop();
    if (!o.keepDir) rmSync(dir, { recursive: true, force: true });
  }
}
