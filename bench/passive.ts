/**
 * `npm run bench:passive`: how long from the first client connection that fails to the
 * kernel taking the backend out, with passive health (`passive: {window: 2s, eject: true}`)
 * and with active checks only, on the same three backends in network namespaces made (and
 * removed) here. Three faults of backend 2: its route back to the clients broken, it resets
 * the clients, its server stops accepting (the kernel refuses). Clients connect 100 times a
 * second, the fault comes once they run; the kernel change is `nft monitor` printing the removal of the
 * backend's mark from the set of live marks. Prints a Markdown table for BENCHMARKS.md.
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanupNetns, tempFolder } from '../test/support/netns.js';
import {
  breakReturnRoute,
  burst,
  type PassiveLab,
  passiveLab,
  passiveYaml,
  resetClients,
  restoreReturnRoute,
  stopResettingClients,
} from '../test/support/passive-lab.js';

/** The CLI of this checkout (this file runs from bench/dist-passive/bench/). */
const BIN = fileURLToPath(new URL('../../../bin/nf-healthd.js', import.meta.url));
const TIMING = 'interval: 1s, fastInterval: 100ms, timeout: 1s, rise: 2, fall: 3';
const RUN_MS = 12_000;
/** Clients start this long before the fault: the client process has started and connects at its rate. */
const CLIENT_START_MS = 2000;

interface Fault {
  name: string;
  apply(lab: PassiveLab): Promise<unknown>;
  undo(lab: PassiveLab): Promise<unknown>;
}

const FAULTS: Fault[] = [
  { name: 'return route broken', apply: (l) => breakReturnRoute(l, 1), undo: (l) => restoreReturnRoute(l, 1) },
  { name: 'resets the clients', apply: (l) => resetClients(l, 1), undo: (l) => stopResettingClients(l, 1) },
  {
    name: 'server stops accepting',
    apply: async (l) => l.servers[1]!.kill('SIGUSR1'),
    undo: async (l) => l.servers[1]!.kill('SIGUSR2'),
  },
];

/** Resolves with the epoch ms at which `nft monitor` printed a line matching `pattern` (undefined: not by `ms`). */
function watchKernel(
  lab: PassiveLab,
  pattern: RegExp,
  ms: number,
): { seen: Promise<number | undefined>; stop(): void } {
  const monitor: ChildProcess = lab.balancer.spawn(['nft', 'monitor', 'elements']);
  let buffer = '';
  const seen = new Promise<number | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    monitor.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      const at = Date.now();
      buffer += chunk;
      if (pattern.test(buffer)) {
        clearTimeout(timer);
        resolve(at);
      }
    });
  });
  return { seen, stop: () => monitor.kill('SIGKILL') };
}

async function measure(lab: PassiveLab, dir: string, passive: boolean, fault: Fault): Promise<string> {
  const config = path.join(dir, `${passive ? 'passive' : 'active'}.yaml`);
  const yaml = passiveYaml(lab, {
    stateFile: path.join(dir, 'state.json'),
    passive: '{ window: 2s, eject: true }',
    timing: TIMING,
  });
  writeFileSync(config, passive ? yaml : yaml.replace(/^ {4}passive: .*\n/m, ''));
  const rules = await lab.balancer.run([process.execPath, BIN, 'rules', '-c', config, '--format', 'nft']);
  await lab.balancer.run(['nft', '-f', '-'], rules);
  const daemon = lab.balancer.spawn([process.execPath, BIN, 'run', '-c', config]);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    daemon.stdout!.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      if (out.includes('"event":"ready"')) resolve();
    });
    daemon.once('exit', (code) => reject(new Error(`daemon exited (${code}): ${out}`)));
  });
  const kernel = watchKernel(lab, /delete element inet nfh up \{ 0x0*102 \}/, RUN_MS + 5000);
  // Clients first (a new process in the client's namespace takes a while to start), then the fault.
  const clients = burst(lab, `rate:100:${RUN_MS}`, 1000);
  await new Promise((r) => setTimeout(r, CLIENT_START_MS));
  const faultAt = Date.now();
  await fault.apply(lab);
  const traffic = await clients;
  const changedAt = await kernel.seen;
  kernel.stop();
  daemon.kill('SIGTERM');
  await new Promise((r) => daemon.once('exit', r));
  await fault.undo(lab);
  const afterFault = traffic.timeline.filter(([at]) => traffic.startedAt + at >= faultAt);
  const firstFail = afterFault.find(([, r]) => !r.startsWith('220 '));
  const failed = afterFault.filter(([, r]) => !r.startsWith('220 ')).length;
  const mode = passive ? 'passive + active' : 'active only';
  if (!firstFail) return `| ${fault.name} | ${mode} | no client connection failed | ${failed} |`;
  const from = traffic.startedAt + firstFail[0];
  const took = changedAt === undefined ? "never (the clients' failures went on to the end)" : `${changedAt - from} ms`;
  return `| ${fault.name} | ${mode} | ${took} | ${failed} of ${afterFault.length} |`;
}

const lab = await passiveLab('10.240', '10.240.9.1');
const dir = tempFolder('nfh-bench-passive-');
const rows: string[] = [];
try {
  for (const fault of FAULTS)
    for (const passive of [true, false]) {
      const row = await measure(lab, dir, passive, fault);
      rows.push(row);
      process.stderr.write(`${row}\n`);
    }
} finally {
  cleanupNetns();
}
const cpu = execFileSync('nproc').toString().trim();
console.log(`Three SMTP backends, ${TIMING}; passive window 2s, minConnections 20, eject; clients 100 connections/s, the fault ${CLIENT_START_MS / 1000} s after they start, ${(RUN_MS - CLIENT_START_MS) / 1000} s of them counted; ${cpu} CPUs.

| backend 2 | health | first failing client connection -> backend out of the kernel | client connections failed |
|---|---|---|---|
${rows.join('\n')}`);
