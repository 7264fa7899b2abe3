/**
 * The benchmark harness with tiny numbers, so it cannot rot: real banner server
 * (compiled here), real nf-healthd and HAProxy processes, a network namespace of
 * its own. No timing claims: those belong in BENCHMARKS.md.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Timing } from '../bench/checkers.js';
import { runDetection } from '../bench/detection.js';
import { buildBannerServer, createNamespace, startBackends } from '../bench/lib.js';
import { BEGIN, END, machine, renderReport, writeIntoFile } from '../bench/report.js';
import { type RowResult, runRow } from '../bench/sweep.js';

// A timeout far above loopback latency (no check times out on a busy machine), and
// detection deadlines (4 × the schedule, in bench/detection.ts) that are seconds long.
const timing: Timing = { intervalMs: 600, fastIntervalMs: 150, timeoutMs: 1000, rise: 2, fall: 2 };
let work: string;
let bannerServer: string;
let ns: ReturnType<typeof createNamespace>;
let port = 20_000 + Math.floor(Math.random() * 5000);

beforeAll(() => {
  work = mkdtempSync(path.join(os.tmpdir(), 'nfh-bench-smoke-'));
  bannerServer = buildBannerServer(work);
  ns = createNamespace();
});
afterAll(() => {
  ns?.remove();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** The report as `npm run bench` writes it, from what one test measured. */
function smokeReport(rows: RowResult[], detection: Awaited<ReturnType<typeof runDetection>>): string {
  return renderReport({
    startedAt: new Date(),
    finishedAt: new Date(),
    machine: machine(),
    loadBefore: '0',
    loadAfter: '0',
    command: 'smoke',
    timing,
    windowS: 1.2,
    rows,
    detection,
  });
}

describe('benchmark harness (smoke)', () => {
  it('the banner server answers SMTP and HTTP and obeys kill/revive', async () => {
    const backends = await startBackends(bannerServer, 'smtp', port++, 3, { ns: ns.name });
    try {
      expect(await backends.accepted()).toBe(0);
      await backends.kill(1);
      await backends.revive(1);
      await backends.silence(2);
      await expect(backends.kill(99)).rejects.toThrow(/unknown command/);
      expect(backends.connections()).toBe(0);
    } finally {
      await backends.stop();
    }
  });

  /** One row per checker for `mode`, each checked for its shape. */
  async function measureRows(mode: 'tcp' | 'smtp' | 'http'): Promise<RowResult[]> {
    const rows: RowResult[] = [];
    for (const checker of ['nf-healthd', 'haproxy'] as const) {
      const row = await runRow({
        checker,
        mode,
        count: 3,
        timing,
        warmupMs: 200,
        windowMs: 1200,
        port: port++,
        bannerServer,
        ns: ns.name,
      });
      rows.push(row);
      expect(row).toMatchObject({ checker, mode, count: 3, down: 0 });
      expect(row.checks).toBeGreaterThan(0);
      if (mode !== 'tcp') expect(row.accepted).toBeGreaterThan(0);
      expect(Number.isFinite(row.cpuUsPerCheck)).toBe(true);
      expect(row.rssMiB).toBeGreaterThan(0);
      if (checker === 'nf-healthd') {
        expect(row.exit).toBe('0');
        expect(row.lagMs?.p99).toBeGreaterThanOrEqual(0);
        expect(row.latencyMs?.p99).toBeGreaterThan(0);
      }
    }
    return rows;
  }

  for (const mode of ['tcp', 'http'] as const) {
    it(`measures a ${mode} row for nf-healthd and HAProxy alike`, async () => {
      await measureRows(mode);
    }, 60_000);
  }

  it('measures an smtp row for both and writes the report into BENCHMARKS.md, keeping the notes', async () => {
    const rows = await measureRows('smtp');
    const report = smokeReport(rows, []);
    expect(report).toContain('| smtp | 3 | nf-healthd |');
    expect(report).toContain('| smtp | 3 | haproxy |');
    expect(report).toMatch(/\| smtp \| 3 \| \d+ \| \d+ \| ([\d.]+×|n\/a) \|/);

    const file = path.join(work, 'BENCHMARKS.md');
    writeFileSync(file, '# Benchmarks\n\nnotes before\n\nnotes after\n');
    writeIntoFile(file, report);
    writeIntoFile(file, report); // a re-run replaces the section, keeping the notes
    const text = readFileSync(file, 'utf8');
    expect(text.split(BEGIN)).toHaveLength(2);
    expect(text).toContain('notes before');
    expect(text).toContain('notes after');
    expect(text.indexOf(END)).toBeGreaterThan(text.indexOf('| smtp | 3 | haproxy |'));
  }, 60_000);

  it('sees killed and silenced backends go down and come back through the condition files', async () => {
    const detection = await runDetection({ trials: 2, background: 2, timing, port: port++, bannerServer, ns: ns.name });
    expect(detection.map((d) => `${d.failure}/${d.phase}`)).toEqual([
      'refused/down',
      'refused/up',
      'silent/down',
      'silent/up',
    ]);
    for (const d of detection) expect(d).toMatchObject({ trials: 2, missed: 0 });
    const report = smokeReport([], detection);
    expect(report).toContain('| killed (refused) | detection | 2 |');
  }, 60_000);
});
