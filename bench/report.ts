/**
 * The benchmark's tables (Markdown, printed and written into BENCHMARKS.md
 * between markers, so hand-written notes around them survive a re-run).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { SHIPPED_NODE_FLAGS, type Timing } from './checkers.js';
import type { DetectionRow } from './detection.js';
import type { RowResult } from './sweep.js';

export const BEGIN = '<!-- bench:begin (written by npm run bench; edit outside the markers) -->';
export const END = '<!-- bench:end -->';

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  haproxy: string;
  debian: string;
}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

export function machine(): Machine {
  const debian = existsSync('/etc/debian_version') ? readFileSync('/etc/debian_version', 'utf8').trim() : 'not Debian';
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    haproxy: run('haproxy', ['-v'])
      .split('\n')[0]!
      .replace(/ - https?:.*$/, ''),
    debian,
  };
}

const fixed = (x: number | undefined, digits = 0) =>
  x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(digits);
const ms = (x: number | undefined) =>
  x === undefined || !Number.isFinite(x) ? 'n/a' : x < 10 ? x.toFixed(1) : x.toFixed(0);
const thousands = (n: number) => n.toLocaleString('en-US');

function table(head: string[], rows: string[][]): string {
  return [
    `| ${head.join(' | ')} |`,
    `|${head.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

export function sweepTable(rows: RowResult[]): string {
  return table(
    [
      'check',
      'backends',
      'checker',
      'checks/s',
      'achieved',
      'CPU µs/check',
      'core',
      'waited for CPU',
      'RSS MiB',
      'lag p50/p99 ms',
      'latency p50/p99 ms',
      'TIME_WAIT',
      'held down',
      'banner server µs/check',
    ],
    rows.map((r) => [
      r.mode,
      thousands(r.count),
      r.checker,
      thousands(Math.round(r.checks / r.windowS)),
      `${fixed(100 * r.achieved, 1)}%`,
      fixed(r.cpuUsPerCheck),
      `${fixed(100 * r.cpuShare)}%`,
      `${fixed(100 * r.cpuWaitShare)}%`,
      fixed(r.rssMiB),
      r.lagMs ? `${ms(r.lagMs.p50)} / ${ms(r.lagMs.p99)}` : 'n/a',
      r.latencyMs ? `${ms(r.latencyMs.p50)} / ${ms(r.latencyMs.p99)}` : 'n/a',
      thousands(r.timeWait.checker),
      String(r.down),
      fixed(r.backendCpuUsPerCheck),
    ]),
  );
}

export function ratioTable(rows: RowResult[]): string {
  const out: string[][] = [];
  for (const n of rows.filter((r) => r.checker === 'nf-healthd')) {
    const h = rows.find((r) => r.checker === 'haproxy' && r.mode === n.mode && r.count === n.count);
    if (!h) continue;
    const loop = rows.find((r) => r.checker === 'node-loop' && r.mode === n.mode && r.count === n.count);
    // A tiny run may see no whole clock tick of HAProxy's CPU: no ratio then.
    const ratio = (a: number, b: number | undefined) => (b !== undefined && b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a');
    out.push([
      n.mode,
      thousands(n.count),
      fixed(n.cpuUsPerCheck),
      fixed(h.cpuUsPerCheck),
      ratio(n.cpuUsPerCheck, h.cpuUsPerCheck),
      loop ? fixed(loop.cpuUsPerCheck) : 'n/a',
      ratio(n.cpuUsPerCheck, loop?.cpuUsPerCheck),
      fixed(n.rssMiB),
      fixed(h.rssMiB),
    ]);
  }
  return table(
    [
      'check',
      'backends',
      'nf-healthd µs/check',
      'HAProxy µs/check',
      'nf-healthd / HAProxy',
      'bare Node loop µs/check',
      'nf-healthd / bare loop',
      'nf-healthd RSS MiB',
      'HAProxy RSS MiB',
    ],
    out,
  );
}

export function detectionTable(rows: DetectionRow[]): string {
  return table(
    [
      'failure',
      'measured',
      'trials',
      'p50 ms',
      'p99 ms',
      'max ms',
      'formula',
      'formula ms',
      'p99 within 50 ms',
      'schedule bound ms',
    ],
    rows.map((r) => [
      r.failure === 'refused' ? 'killed (refused)' : 'silent (times out)',
      r.phase === 'down' ? 'detection' : 'recovery',
      r.missed > 0 ? `${r.trials} (${r.missed} unseen)` : String(r.trials),
      ms(r.p50Ms),
      ms(r.p99Ms),
      ms(r.maxMs),
      r.formula,
      String(r.formulaMs),
      r.met ? 'yes' : 'no',
      String(r.boundMs),
    ]),
  );
}

export interface TargetVerdict {
  target: string;
  measured: string;
  met: boolean | undefined;
}

/** The targets, judged from this run's rows (undefined: not measured in this run). */
export function targets(rows: RowResult[], detection: DetectionRow[]): TargetVerdict[] {
  const ratio = (mode: string, count: number) => {
    const n = rows.find((r) => r.checker === 'nf-healthd' && r.mode === mode && r.count === count);
    const h = rows.find((r) => r.checker === 'haproxy' && r.mode === mode && r.count === count);
    return n && h && h.cpuUsPerCheck > 0 ? n.cpuUsPerCheck / h.cpuUsPerCheck : undefined;
  };
  const out: TargetVerdict[] = [];
  const smtp = ratio('smtp', 5000);
  out.push({
    target: 'SMTP, 5,000 backends: CPU/check ≤ 1.5× HAProxy',
    measured: smtp === undefined ? 'not run' : `${smtp.toFixed(2)}×`,
    met: smtp === undefined ? undefined : smtp <= 1.5,
  });
  for (const mode of ['tcp', 'http']) {
    const r = ratio(mode, 5000);
    out.push({
      target: `stretch: ${mode.toUpperCase()}, 5,000 backends: CPU/check ≤ 1.2× HAProxy`,
      measured: r === undefined ? 'not run' : `${r.toFixed(2)}×`,
      met: r === undefined ? undefined : r <= 1.2,
    });
  }
  // The lean check path: CPU per check against the bare Node loop of the same run.
  for (const mode of ['tcp', 'smtp', 'http']) {
    for (const count of [100, 1000, 5000, 10_000]) {
      const n = rows.find((r) => r.checker === 'nf-healthd' && r.mode === mode && r.count === count);
      const loop = rows.find((r) => r.checker === 'node-loop' && r.mode === mode && r.count === count);
      if (!n || !loop || loop.cpuUsPerCheck <= 0) continue;
      const bound = count === 100 ? 1.5 : 1.3;
      const r = n.cpuUsPerCheck / loop.cpuUsPerCheck;
      out.push({
        target: `${mode.toUpperCase()}, ${count.toLocaleString('en-US')} backends: CPU/check ≤ ${bound}× the bare Node loop`,
        measured: `${r.toFixed(2)}×`,
        met: r <= bound,
      });
    }
  }
  for (const r of rows.filter((x) => x.checker === 'nf-healthd' && x.count === 10_000)) {
    const lag = r.lagMs?.p99;
    const met = r.achieved >= 0.98 && lag !== undefined && lag < 50 && r.rssMiB < 150;
    out.push({
      target: `${r.mode.toUpperCase()}, 10,000 backends: achieved ≥ 98%, lag p99 < 50 ms, RSS < 150 MB`,
      measured: `${(100 * r.achieved).toFixed(1)}%, ${ms(lag)} ms, ${r.rssMiB.toFixed(0)} MiB`,
      met,
    });
  }
  for (const d of detection) {
    out.push({
      target: `${d.failure} backend, ${d.phase === 'down' ? 'detection' : 'recovery'}: p99 ≤ ${d.formulaMs} + 50 ms`,
      measured: `${ms(d.p99Ms)} ms`,
      met: d.met,
    });
  }
  return out;
}

export interface Report {
  startedAt: Date;
  finishedAt: Date;
  machine: Machine;
  loadBefore: string;
  loadAfter: string;
  command: string;
  timing: Timing;
  detectionTiming?: Timing;
  windowS: number;
  rows: RowResult[];
  detection: DetectionRow[];
}

export function renderReport(r: Report): string {
  const t = r.timing;
  const m = r.machine;
  const lines = [
    `Run ${r.startedAt.toISOString().replace(/\.\d+Z$/, 'Z')} to ${r.finishedAt.toISOString().slice(11, 19)}Z with \`${r.command}\`.`,
    '',
    `- Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Linux ${m.kernel}, Debian ${m.debian}`,
    `- Node ${m.node}; ${m.haproxy}`,
    `- Load average (1, 5, 15 min) before: ${r.loadBefore}; after: ${r.loadAfter}`,
    `- Checks: interval ${t.intervalMs} ms, fastInterval ${t.fastIntervalMs} ms, timeout ${t.timeoutMs} ms, rise ${t.rise}, fall ${t.fall}; SMTP = greeting, EHLO, QUIT on both sides; HTTP = GET /; measured over ${r.windowS} s per row`,
    '- Checker pinned to one core, the banner server (C, epoll) to the other (taskset); both in a network namespace of their own, each in a session whose autogroup has niceness −10 (see --nice).',
    `- nf-healthd runs as the unit starts it: \`node ${SHIPPED_NODE_FLAGS.join(' ')}\` (docs/operating.md, "Node flags"); node-loop with Node's defaults.`,
    "- node-loop: `bench/node-loop.ts`, a bare Node loop doing the same exchange with nothing else (no timeouts, bounds, hysteresis, writer, logs): the floor for a checker written on Node's net module.",
    '',
  ];
  if (r.rows.length > 0) {
    lines.push(
      '### Scale sweep',
      '',
      sweepTable(r.rows),
      '',
      '### nf-healthd / HAProxy, CPU per check',
      '',
      ratioTable(r.rows),
      '',
    );
  }
  if (r.detection.length > 0) {
    const d = r.detectionTiming ?? t;
    lines.push(
      '### Detection and recovery (nf-healthd)',
      '',
      `interval ${d.intervalMs} ms, fastInterval ${d.fastIntervalMs} ms, timeout ${d.timeoutMs} ms, rise ${d.rise}, fall ${d.fall}; time from the kill (or revival) to the condition file's change.`,
      '',
      detectionTable(r.detection),
      '',
    );
  }
  const verdicts = targets(r.rows, r.detection);
  lines.push(
    '### Targets',
    '',
    table(
      ['target', 'measured', 'met'],
      verdicts.map((v) => [v.target, v.measured, v.met === undefined ? 'not run' : v.met ? 'yes' : 'NO']),
    ),
    '',
  );
  return lines.join('\n');
}

/** Replaces the section between the markers in `file` (creating the file or the section when missing). */
export function writeIntoFile(file: string, section: string, heading = '# Benchmarks'): void {
  const block = `${BEGIN}\n${section.trimEnd()}\n${END}`;
  if (!existsSync(file)) {
    writeFileSync(file, `${heading}\n\n${block}\n`);
    return;
  }
  const text = readFileSync(file, 'utf8');
  const from = text.indexOf(BEGIN);
  const to = text.indexOf(END);
  const next =
    from >= 0 && to > from
      ? `${text.slice(0, from)}${block}${text.slice(to + END.length)}`
      : `${text.trimEnd()}\n\n${block}\n`;
  writeFileSync(file, next);
}
