/**
 * `npm run bench`: nf-healthd against HAProxy's checker on the same backends.
 * Every size and duration is a flag, so a quick run and the full one share the code:
 *   node bench/dist/main.js --sizes 100,1000 --types smtp --window 5 --trials 10
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { CheckerName, Timing } from './checkers.js';
import { type DetectionRow, runDetection } from './detection.js';
import { type BackendMode, buildBannerServer, createNamespace, repoRoot, setNiceness } from './lib.js';
import { machine, renderReport, writeIntoFile } from './report.js';
import { type RowResult, runRow } from './sweep.js';

const USAGE = `usage: npm run bench -- [options]
  --sizes LIST          backend counts (default 100,1000,5000,10000)
  --types LIST          tcp,smtp,http (default all three)
  --checkers LIST       nf-healthd,haproxy,node-loop (default nf-healthd,haproxy,node-loop;
                        node-loop: a bare Node loop doing the same exchange, the floor)
  --window S            measured seconds per row (default 15)
  --warmup S            steady-state seconds before each window (default 3)
  --interval MS --fast-interval MS --timeout MS --rise N --fall N
                        check timing (default 1000, 500, 1000, 2, 3)
  --trials N            detection trials per failure kind (default 50; 0 skips detection)
  --background N        healthy backends checked during the detection trials (default 1000)
  --detection-timeout MS  check timeout during the detection trials (default 500)
  --checker-cpu N --backend-cpu N   cores for taskset (default 1 and 0; -1: no pinning)
  --nice N              niceness of the checker and the backends (default -10, 0: unchanged;
                        on a shared machine, keeps other work from starving them)
  --profile DIR         run nf-healthd under --cpu-prof, profiles into DIR
  --node-arg FLAG       a Node/V8 flag for nf-healthd (repeatable), e.g. --node-arg=--max-semi-space-size=32
  --daemon FILE         nf-healthd entry point to measure (default test/instrument/dist/entry.js,
                        the daemon with its samples hook; for before/after)
  --out FILE            Markdown file to write the tables into (default BENCHMARKS.md)
  --no-write            print only
`;

const list = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
const int = (s: string, name: string) => {
  const n = Number(s);
  if (!Number.isInteger(n)) throw new Error(`--${name}: expected an integer, got ${s}`);
  return n;
};

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      sizes: { type: 'string', default: '100,1000,5000,10000' },
      types: { type: 'string', default: 'tcp,smtp,http' },
      checkers: { type: 'string', default: 'nf-healthd,haproxy,node-loop' },
      window: { type: 'string', default: '15' },
      warmup: { type: 'string', default: '3' },
      interval: { type: 'string', default: '1000' },
      'fast-interval': { type: 'string', default: '500' },
      timeout: { type: 'string', default: '1000' },
      rise: { type: 'string', default: '2' },
      fall: { type: 'string', default: '3' },
      trials: { type: 'string', default: '50' },
      background: { type: 'string', default: '1000' },
      'detection-timeout': { type: 'string', default: '500' },
      'checker-cpu': { type: 'string', default: '1' },
      'backend-cpu': { type: 'string', default: '0' },
      nice: { type: 'string', default: '-10' },
      profile: { type: 'string' },
      'node-arg': { type: 'string', multiple: true },
      daemon: { type: 'string' },
      out: { type: 'string', default: 'BENCHMARKS.md' },
      'no-write': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const sizes = list(values.sizes).map((s) => int(s, 'sizes'));
  const types = list(values.types) as BackendMode[];
  for (const t of types) if (!['tcp', 'smtp', 'http'].includes(t)) throw new Error(`--types: unknown check type ${t}`);
  const checkers = list(values.checkers) as CheckerName[];
  for (const c of checkers)
    if (!['nf-healthd', 'haproxy', 'node-loop'].includes(c)) throw new Error(`--checkers: unknown checker ${c}`);
  const timing: Timing = {
    intervalMs: int(values.interval, 'interval'),
    fastIntervalMs: int(values['fast-interval'], 'fast-interval'),
    timeoutMs: int(values.timeout, 'timeout'),
    rise: int(values.rise, 'rise'),
    fall: int(values.fall, 'fall'),
  };
  const detectionTiming: Timing = { ...timing, timeoutMs: int(values['detection-timeout'], 'detection-timeout') };
  const cpu = (s: string, name: string) => (int(s, name) < 0 ? undefined : int(s, name));
  const checkerCpu = cpu(values['checker-cpu'], 'checker-cpu');
  const backendCpu = cpu(values['backend-cpu'], 'backend-cpu');
  const windowMs = Number(values.window) * 1000;
  const warmupMs = Number(values.warmup) * 1000;
  const trials = int(values.trials, 'trials');
  setNiceness(int(values.nice, 'nice'));

  const startedAt = new Date();
  const loadBefore = os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(', ');
  const work = mkdtempSync(path.join(os.tmpdir(), 'nfh-bench-'));
  const bannerServer = buildBannerServer(work);
  const log = (text: string) => process.stderr.write(`bench: ${text}\n`);
  // Each row its own port: TIME_WAIT sockets of earlier rows (60 s) are not counted again.
  let port = 20_000 + Math.floor(Math.random() * 5000);
  const rows: RowResult[] = [];
  let detection: DetectionRow[] = [];
  // A namespace of our own: its loopback, connection counters and TIME_WAIT table see only the benchmark.
  const ns = createNamespace();
  try {
    for (const mode of types) {
      for (const count of sizes) {
        for (const checker of checkers) {
          log(`${mode} × ${count} with ${checker} (load ${os.loadavg()[0]!.toFixed(2)})`);
          const nodeArgs = [
            ...(checker === 'nf-healthd' ? (values['node-arg'] ?? []) : []),
            ...(checker === 'nf-healthd' && values.profile
              ? [
                  '--cpu-prof',
                  '--cpu-prof-dir',
                  path.resolve(values.profile),
                  '--cpu-prof-name',
                  `nf-healthd-${mode}-${count}.cpuprofile`,
                ]
              : []),
          ];
          const row = await runRow({
            checker,
            mode,
            count,
            timing,
            warmupMs,
            windowMs,
            port: port++,
            bannerServer,
            checkerCpu,
            backendCpu,
            ns: ns.name,
            nodeArgs,
            daemonEntry: values.daemon && path.resolve(values.daemon),
          });
          rows.push(row);
          log(
            `  ${(100 * row.achieved).toFixed(1)}% achieved, ${row.cpuUsPerCheck.toFixed(0)} µs/check, RSS ${row.rssMiB.toFixed(0)} MiB` +
              (row.lagMs ? `, lag p99 ${row.lagMs.p99.toFixed(1)} ms` : '') +
              `, TIME_WAIT ${row.timeWait.checker}, held down ${row.down}`,
          );
        }
      }
    }
    if (trials > 0) {
      log(`detection: ${trials} trials × (refused, silent) with ${values.background} background backends`);
      detection = await runDetection({
        trials,
        background: int(values.background, 'background'),
        timing: detectionTiming,
        port: port++,
        bannerServer,
        checkerCpu,
        backendCpu,
        ns: ns.name,
      });
    }
  } finally {
    ns.remove();
    rmSync(work, { recursive: true, force: true });
  }
  const report = renderReport({
    startedAt,
    finishedAt: new Date(),
    machine: machine(),
    loadBefore,
    loadAfter: os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(', '),
    command: `npm run bench${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`,
    timing,
    detectionTiming,
    windowS: windowMs / 1000,
    rows,
    detection,
  });
  process.stdout.write(`${report}\n`);
  if (!values['no-write']) {
    const file = path.resolve(repoRoot(), values.out);
    writeIntoFile(file, report);
    log(`tables written into ${file}`);
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    process.exitCode = 1;
  },
);
