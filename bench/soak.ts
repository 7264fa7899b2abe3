/**
 * Soak: one million checks (by default) against loopback backends that flap at
 * random, with heap, RSS and open handles at the start, along the way and at the end.
 * Not a timed test: a script whose figures go into BENCHMARKS.md.
 *
 *   npx tsc -p tsconfig.json && npx tsc -p bench/tsconfig.json
 *   node --expose-gc bench/dist/soak.js [--checks 1000000] [--concurrency 500] [--timeout 200] [--markdown FILE]
 *
 * It runs the built probes (dist/), loaded at run time so that bench/ compiles on its own.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { type SoakFigures, type SoakOptions, soak } from './soak-core.js';

const { values } = parseArgs({
  options: {
    checks: { type: 'string', default: '1000000' },
    concurrency: { type: 'string', default: '500' },
    timeout: { type: 'string', default: '200' },
    backends: { type: 'string', default: '8' },
    markdown: { type: 'string' },
  },
});

const dist = new URL('../../dist/probes/', import.meta.url);
const { runCheck } = (await import(new URL('run.js', dist).href)) as {
  runCheck: (c: unknown, t: unknown, ms: number) => ReturnType<SoakOptions['runCheck']>;
};
const { checkSchema } = (await import(new URL('registry.js', dist).href)) as {
  checkSchema: { parse(v: unknown): unknown };
};

const dir = mkdtempSync(path.join(os.tmpdir(), 'nfh-soak-'));
try {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-subj',
      '/CN=localhost',
      '-days',
      '2',
    ],
    { stdio: 'ignore' },
  );
  const total = Number(values.checks);
  const options: SoakOptions = {
    runCheck: (check, target, timeout) => runCheck(checkSchema.parse(check), target, timeout),
    total,
    concurrency: Number(values.concurrency),
    timeoutMs: Number(values.timeout),
    backendsPerKind: Number(values.backends),
    flapMs: 100,
    flapProbability: 0.2,
    tls: { key: readFileSync(key), cert: readFileSync(cert) },
    samples: 11,
    onSample: (s) =>
      console.error(
        `${s.checks} checks: heap ${s.heapUsedMiB} MiB, rss ${s.rssMiB} MiB, handles ${JSON.stringify(s.handles)}`,
      ),
  };
  const figures = await soak(options);
  console.log(JSON.stringify(figures));
  if (values.markdown) writeFileSync(values.markdown, markdown(figures, options));
} finally {
  rmSync(dir, { recursive: true, force: true });
}

function markdown(f: SoakFigures, o: SoakOptions): string {
  const first = f.samples[0]!;
  const last = f.samples[f.samples.length - 1]!;
  const peakHeap = Math.max(...f.samples.map((s) => s.heapUsedMiB));
  const peakRss = Math.max(...f.samples.map((s) => s.rssMiB));
  const handles = (h: Record<string, number>) =>
    Object.entries(h)
      .sort()
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || 'none';
  const reasons = Object.entries(f.reasons)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `| ${k.replace(/\|/g, '\\|')} | ${v} |`)
    .join('\n');
  return `## Soak: ${f.checks.toLocaleString('en')} checks against flapping backends

\`node --expose-gc bench/dist/soak.js --checks ${o.total} --concurrency ${o.concurrency} --timeout ${o.timeoutMs}\`
on ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}, ${new Date().toISOString().slice(0, 10)}.
${o.backendsPerKind} loopback backends per kind (smtp, http, tls); every ${o.flapMs} ms each one switches,
with probability ${o.flapProbability}, between healthy, refusing (listener closed), silent, resetting,
closing and answering wrong (554 / 503).

| figure | value |
| --- | --- |
| checks | ${f.checks} (${f.up} up, ${f.down} down) |
| wall time | ${f.seconds} s (${f.checksPerSecond} checks/s) |
| longest check | ${f.maxLatencyMs} ms (timeout ${o.timeoutMs} ms); over timeout + 250 ms: ${f.overTimeoutPlus250} |
| most bytes read by one check | ${f.maxBytesRead} |
| heap used, start / peak / end (after GC) | ${first.heapUsedMiB} / ${peakHeap} / ${last.heapUsedMiB} MiB |
| RSS, start / peak / end | ${first.rssMiB} / ${peakRss} / ${last.rssMiB} MiB |
| open handles at start | ${handles(first.handles)} |
| open handles at the end | ${handles(last.handles)} |

Samples along the way:

| checks | heap MiB | RSS MiB | sockets open |
| --- | --- | --- | --- |
${f.samples.map((s) => `| ${s.checks} | ${s.heapUsedMiB} | ${s.rssMiB} | ${s.handles.TCPSocketWrap ?? 0} |`).join('\n')}

Down verdicts by reason (numbers folded to N):

| reason | checks |
| --- | --- |
${reasons}
`;
}
