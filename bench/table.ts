/**
 * `npm run bench:table [-- 10 1000 10000]`: the time from a backend's state change to
 * the kernel's balancing table holding it, with the real writer loop, the real nft
 * writer and the real kernel, in a network namespace made (and removed) here. Per size:
 * services of at most 250 backends (a mark byte holds 255), the rules loaded once, then
 * one backend of the first service flipped down and up a few times; each flip is timed
 * from `balancer.changed` to the loop having written it (`settled`), with the table
 * computation timed on its own. Prints a Markdown table for BENCHMARKS.md.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { nftWriterSchema } from '../src/config/writers.js';
import { createBalancer } from '../src/kernel/balancer.js';
import { createKernelLoop } from '../src/kernel/loop.js';
import { renderRules } from '../src/kernel/rules/command.js';
import { computeTable } from '../src/kernel/table.js';
import { createNftWriter } from '../src/kernel/writers/nft.js';
import { parsePlan } from '../src/plan/load.js';

const PER_SERVICE = 250;
const FLIPS = 6;

function configFor(backends: number): string {
  const services: string[] = [];
  for (let s = 0; s * PER_SERVICE < backends; s++) {
    const count = Math.min(PER_SERVICE, backends - s * PER_SERVICE);
    const lines = Array.from(
      { length: count },
      (_, b) => `      - { name: s${s}b${b}, address: 10.${100 + (s >> 8)}.${s & 0xff}.${b + 1} }`,
    );
    services.push(
      `  - name: s${s}\n    vip: 10.99.${s >> 8}.${(s & 0xff) + 1}\n    port: 25\n    backends:\n${lines.join('\n')}`,
    );
  }
  return `writer: { type: nft }\nservices:\n${services.join('\n')}\n`;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function measure(backends: number, ns: string, dir: string) {
  const plan = parsePlan(configFor(backends), `bench-${backends}.yaml`);
  const wrapper = path.join(dir, 'nft');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} nft "$@"\n`, { mode: 0o755 });
  const loadStart = performance.now();
  execFileSync(wrapper, ['-f', '-'], { input: renderRules(plan, 'nft'), maxBuffer: 1 << 30 });
  const loadMs = performance.now() - loadStart;
  const writer = createNftWriter(nftWriterSchema.parse({ type: 'nft', nftPath: wrapper, commandTimeout: '600s' }));
  const log = pino({ level: 'warn' });
  // Read-back far away: this measures the write path; the read-back is timed below.
  const kernel = createKernelLoop({ writer, log, readBackMs: 3_600_000, stallAfterMs: 600_000 });
  const up = new Map(plan.backends.map((b) => [b.id, true]));
  const balancer = createBalancer({ log, kernel, state: (b) => ({ up: up.get(b.id)! }) });
  balancer.setPlan(plan);
  await kernel.settled();
  const service = plan.services[0]!;
  const flipped = service.backends[0]!;
  const changes: number[] = [];
  const computes: number[] = [];
  for (let i = 0; i < FLIPS; i++) {
    const state = i % 2 === 1;
    up.set(flipped.id, state);
    const t0 = performance.now();
    kernel.want(flipped.target, state);
    balancer.changed(flipped, state ? 'up' : 'down');
    await kernel.settled();
    changes.push(performance.now() - t0);
    const c0 = performance.now();
    computeTable(service, (b) => ({ up: up.get(b.id)! }));
    computes.push(performance.now() - c0);
  }
  const readStart = performance.now();
  await writer.readTables!(plan.services.map((s) => ({ key: s.balancing.map, label: s.balancing.map })));
  const readMs = performance.now() - readStart;
  balancer.stop();
  await kernel.stop();
  const slots = plan.services.reduce((a, s) => a + s.balancing.slots, 0);
  return {
    backends,
    services: plan.services.length,
    slotsPerService: service.balancing.slots,
    slots,
    loadMs,
    changeMs: median(changes),
    worstMs: Math.max(...changes),
    computeMs: median(computes),
    readMs,
  };
}

async function main() {
  const sizes = process.argv.slice(2).map(Number);
  const rows = [];
  for (const backends of sizes.length > 0 ? sizes : [10, 1000, 10_000]) {
    const ns = `nfh-bench-table-${process.pid}-${randomBytes(3).toString('hex')}`;
    const dir = mkdtempSync(path.join(tmpdir(), 'nfh-bench-table-'));
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      rows.push(await measure(backends, ns, dir));
      process.stderr.write(`${JSON.stringify(rows.at(-1))}\n`);
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const ms = (x: number) => `${x < 10 ? x.toFixed(1) : Math.round(x)} ms`;
  console.log(
    '| backends | services × slots | state change -> table written (median / worst of 6) | table computed | whole table read back | rules loaded |',
  );
  console.log('|---:|---|---:|---:|---:|---:|');
  for (const r of rows)
    console.log(
      `| ${r.backends.toLocaleString('en')} | ${r.services} × ${r.slotsPerService.toLocaleString('en')} | ${ms(r.changeMs)} / ${ms(r.worstMs)} | ${ms(r.computeMs)} | ${ms(r.readMs)} | ${ms(r.loadMs)} |`,
    );
}

await main();
