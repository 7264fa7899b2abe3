import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, chmodSync, constants, cpSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/*
 * The host half of test/condition-vm.test.ts: builds (or reuses) the VM image
 * (test/vm/image.sh), puts what one run needs on a second disk (node, the project's
 * runtime tree, the guest scripts, configs and rules), boots QEMU with a hard timeout
 * and collects the guest's results (JSON lines the guest writes to its second serial
 * port, which QEMU writes to a file here).
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const VM = path.join(ROOT, 'test/vm');

export interface Exec {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command in a process group of its own; after timeoutMs the whole group gets
 * SIGTERM (so debootstrap unmounts and the build script's EXIT trap removes its
 * temporary tree), then SIGKILL 15 s later if anything is still there.
 */
export function execBounded(file: string, args: string[], timeoutMs: number): Promise<Exec> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-20_000)));
    const group = (signal: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, signal);
      } catch {
        // the group is gone
      }
    };
    let killer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      stderr += `\n[test] ${path.basename(file)} ${args.join(' ')}: stopped after ${timeoutMs} ms`;
      group('SIGTERM');
      killer = setTimeout(() => group('SIGKILL'), 15_000);
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout, stderr: err.message });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      clearTimeout(killer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
}

export interface Image {
  dir: string;
  kernel: string;
  versions: string;
  /** image.sh's own timing lines when it built the image now; empty when it came from the cache. */
  buildLog: string;
}

/** Builds the image once (about 5 minutes), or finds it in the cache. */
export async function vmImage(timeoutMs: number): Promise<Image> {
  const r = await execBounded('bash', [path.join(VM, 'image.sh')], timeoutMs);
  if (r.code !== 0) throw new Error(`test/vm/image.sh failed (${r.code}): ${r.stderr.trim()}`);
  const dir = r.stdout.trim();
  return {
    dir,
    kernel: readFileSync(path.join(dir, 'kernel'), 'utf8').trim(),
    versions: readFileSync(path.join(dir, 'versions.txt'), 'utf8').trim(),
    buildLog: r.stderr.trim(),
  };
}

/** The production dependencies' folders, from the lock file (what `npm ci --omit=dev` installs). */
function productionModules(): string[] {
  const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean }>;
  };
  return Object.entries(lock.packages)
    .filter(([dir, p]) => dir.startsWith('node_modules/') && !p.dev)
    .map(([dir]) => dir);
}

/**
 * The run's disk (mounted read-only at /nfh in the guest): node, app/ (bin, dist,
 * package.json, production node_modules), guest.sh, vm/ (guest.py, recipe.rules), run/
 * (the files given). Made with mkfs.ext4 -d: no loop mount, nothing to unmount.
 */
export async function runDisk(dir: string, files: Record<string, string>): Promise<string> {
  const stage = path.join(dir, 'stage');
  mkdirSync(path.join(stage, 'app'), { recursive: true });
  chmodSync(stage, 0o755); // the disk's root: the unprivileged daemon reads through it
  cpSync(process.execPath, path.join(stage, 'node'));
  for (const p of ['bin', 'dist', 'package.json', ...productionModules()]) {
    cpSync(path.join(ROOT, p), path.join(stage, 'app', p), { recursive: true });
  }
  cpSync(path.join(VM, 'guest.sh'), path.join(stage, 'guest.sh'));
  mkdirSync(path.join(stage, 'vm'));
  for (const f of ['guest.py', 'recipe.rules']) cpSync(path.join(VM, f), path.join(stage, 'vm', f));
  mkdirSync(path.join(stage, 'run'));
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(stage, 'run', name), text);
  const image = path.join(dir, 'run.img');
  const du = await execBounded('du', ['-sm', stage], 60_000);
  const mb = Number(du.stdout.split('\t')[0]) || 256;
  const mkfs = await execBounded(
    'mkfs.ext4',
    ['-q', '-F', '-L', 'nfh-run', '-d', stage, image, `${mb + Math.ceil(mb / 4) + 16}M`],
    120_000,
  );
  if (mkfs.code !== 0) throw new Error(`mkfs.ext4 -d for the run disk failed: ${mkfs.stderr}`);
  return image;
}

export type GuestStep = Record<string, unknown> & { step: string; ok?: boolean; ms?: number; error?: string };

export interface VmRun {
  steps: Map<string, GuestStep>;
  /** The guest's console (kernel messages, the guest script's progress): for failure messages. */
  console: string;
  accel: 'kvm' | 'tcg';
  /** From spawning QEMU to its exit. */
  ms: number;
  exit: string;
}

function kvmUsable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

let running: ChildProcess | undefined;

/** Kills a QEMU still running (the test's afterAll; the run's own timeout does it too). */
export function killVm(): void {
  if (running && running.exitCode === null && running.signalCode === null) running.kill('SIGKILL');
}

/**
 * Boots the image with the run disk; resolves when QEMU exits (the guest powers off
 * when done) or after timeoutMs, when QEMU is killed. The root disk is opened with
 * snapshot=on: the guest's writes go to a temporary file QEMU deletes, the cached image
 * is never changed and parallel runs can share it.
 */
export function bootVm(image: Image, disk: string, dir: string, timeoutMs: number): Promise<VmRun> {
  const accel = kvmUsable() ? 'kvm' : 'tcg';
  const results = path.join(dir, 'results.jsonl');
  writeFileSync(results, '');
  const args = [
    ...(accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=multi']),
    '-m',
    '1024',
    '-smp',
    '2',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-kernel',
    path.join(image.dir, 'vmlinuz'),
    '-initrd',
    path.join(image.dir, 'initrd.img'),
    '-append',
    'root=/dev/vda rw console=ttyS0 init=/sbin/nfh-init panic=-1 quiet',
    '-drive',
    `file=${path.join(image.dir, 'disk.img')},format=raw,if=virtio,snapshot=on`,
    '-drive',
    `file=${disk},format=raw,if=virtio,readonly=on`,
    '-serial',
    'stdio',
    '-serial',
    `file:${results}`,
  ];
  const started = performance.now();
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running = child;
  let console = '';
  const keep = (chunk: string) => {
    console = (console + chunk.replace(/\r/g, '')).slice(-200_000);
  };
  child.stdout.setEncoding('utf8').on('data', keep);
  child.stderr.setEncoding('utf8').on('data', keep);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      keep(`\n[test] QEMU killed after ${timeoutMs} ms\n`);
      child.kill('SIGKILL');
    }, timeoutMs);
    let finished = false;
    const done = (exit: string) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      running = undefined;
      const steps = new Map<string, GuestStep>();
      for (const line of readFileSync(results, 'utf8').split('\n')) {
        const text = line.replace(/\r/g, '').trim();
        if (!text.startsWith('{')) continue;
        try {
          const step = JSON.parse(text) as GuestStep;
          steps.set(step.step, step);
        } catch {
          keep(`\n[test] unreadable result line: ${text.slice(0, 200)}\n`);
        }
      }
      // NF_HEALTHD_VM_KEEP=DIR keeps the guest's results and console (docs/recipe-vm.md quotes a run).
      const keepDir = process.env.NF_HEALTHD_VM_KEEP;
      if (keepDir) {
        mkdirSync(keepDir, { recursive: true });
        cpSync(results, path.join(keepDir, 'results.jsonl'));
        writeFileSync(path.join(keepDir, 'console.log'), console);
      }
      resolve({ steps, console, accel, ms: performance.now() - started, exit });
    };
    child.once('error', (err) => done(`could not start QEMU: ${err.message}`));
    child.once('exit', (code, signal) => done(signal ? `killed by ${signal}` : `exit code ${code}`));
  });
}

/** Size of a file in MB, for the timing summary. */
export const sizeMb = (file: string) => Math.round(statSync(file).size / 1024 / 1024);
