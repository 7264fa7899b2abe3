import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { IPSET_LINE_PREFIX } from '../../src/kernel/rules/iptables-ipset.js';

/**
 * Network namespaces and the processes inside them, for the kernel tests. Every
 * namespace and process made here is removed by cleanupNetns(), which also runs on
 * exit, SIGINT and SIGTERM, so an interrupted run leaves nothing behind.
 */

const namespaces = new Set<string>();
const processes = new Set<ChildProcess>();
const folders = new Set<string>();

/** A temp folder (mkdtemp, unique) removed by cleanupNetns() with everything else. */
export function tempFolder(prefix: string): string {
  hookExit();
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  folders.add(dir);
  return dir;
}

export interface Exec {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface Netns {
  readonly name: string;
  /** Runs argv inside the namespace; resolves with the exit code and output. */
  exec(argv: readonly string[], input?: string): Promise<Exec>;
  /** Like exec, but rejects unless the command succeeds. */
  run(argv: readonly string[], input?: string): Promise<string>;
  /** A long-running process inside the namespace, killed by cleanupNetns() if still alive. */
  spawn(argv: readonly string[]): ChildProcess;
  /** An executable that runs `binary` inside the namespace (for a writer's ipsetPath/nftPath). */
  wrapper(dir: string, binary: string, callLog?: string): string;
}

let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', cleanupNetns);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      cleanupNetns();
      process.kill(process.pid, signal);
    });
  }
}

/** `nfh-<pid>-<random>-<tag>`: unique across parallel test files and runs. */
export function uniqueName(tag: string): string {
  return `nfh-${process.pid}-${randomBytes(3).toString('hex')}-${tag}`;
}

function execArgv(argv: readonly string[], input?: string): Promise<Exec> {
  return new Promise((resolve) => {
    const child = execFile(
      argv[0]!,
      argv.slice(1),
      { maxBuffer: 16 * 1024 * 1024, timeout: 20_000 },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === 'number'
            ? (err as { code: number }).code
            : 1
          : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.on('error', () => undefined); // EPIPE when the command exits without reading
    child.stdin?.end(input ?? '');
  });
}

export function createNetns(tag: string): Netns {
  hookExit();
  const name = uniqueName(tag);
  execFileSync('ip', ['netns', 'add', name]);
  namespaces.add(name);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  const exec = (argv: readonly string[], input?: string) => execArgv(['ip', 'netns', 'exec', name, ...argv], input);
  return {
    name,
    exec,
    async run(argv, input) {
      const r = await exec(argv, input);
      if (r.code !== 0)
        throw new Error(`in ${name}: ${argv.join(' ')} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
      return r.stdout;
    },
    spawn(argv) {
      const child = spawn('ip', ['netns', 'exec', name, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
      processes.add(child);
      child.once('exit', () => processes.delete(child));
      return child;
    },
    wrapper(dir, binary, callLog) {
      const file = path.join(dir, `${path.basename(binary)}-in-${name}`);
      const log = callLog ? `echo "$*" >> '${callLog}'\n` : '';
      writeFileSync(file, `#!/bin/sh\n${log}exec ip netns exec ${name} ${binary} "$@"\n`);
      chmodSync(file, 0o755);
      return file;
    },
  };
}

/** Kills the processes (by pid), deletes the namespaces and temp folders made here. Synchronous: safe in an exit handler. */
export function cleanupNetns(): void {
  for (const child of processes) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  processes.clear();
  for (const name of namespaces) {
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
  namespaces.clear();
  for (const dir of folders) rmSync(dir, { recursive: true, force: true });
  folders.clear();
}

/** A veth pair between two namespaces, made inside `a` so no name touches the host. */
export async function link(a: Netns, aIf: string, aAddr: string, b: Netns, bIf: string, bAddr: string): Promise<void> {
  await a.run(['ip', 'link', 'add', aIf, 'type', 'veth', 'peer', 'name', bIf, 'netns', b.name]);
  await a.run(['ip', 'addr', 'add', aAddr, 'dev', aIf]);
  await a.run(['ip', 'link', 'set', aIf, 'up']);
  await b.run(['ip', 'addr', 'add', bAddr, 'dev', bIf]);
  await b.run(['ip', 'link', 'set', bIf, 'up']);
}

/**
 * Starts a server inside `ns` and resolves once it prints its first output (its "ready"
 * line); rejects with its stderr if it exits first.
 */
export function startServer(
  ns: Netns,
  argv: readonly string[],
  label: string,
): { child: ChildProcess; ready: Promise<void> } {
  const child = ns.spawn(argv);
  const ready = new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`${label} exited (${code}): ${err}`)));
  });
  return { child, ready };
}

/** The balancer topology of the kernel tests: a client, a balancer holding the VIP, two backends. */
export interface BalancerLab {
  client: Netns;
  balancer: Netns;
  backends: [Netns, Netns];
}

/**
 * Builds it on `PREFIX.1.0/24` (client), `PREFIX.2.0/24` and `PREFIX.3.0/24` (backends at
 * .2, the balancer at .1 on each), with forwarding on and the VIP on the balancer's lo.
 * `tag` keeps the namespace names apart between test files.
 */
export async function balancerLab(prefix: string, vip: string, tag = ''): Promise<BalancerLab> {
  const client = createNetns(`${tag}client`);
  const balancer = createNetns(`${tag}lb`);
  const b1 = createNetns(`${tag}be1`);
  const b2 = createNetns(`${tag}be2`);
  await link(balancer, 'to-client', `${prefix}.1.1/24`, client, 'eth0', `${prefix}.1.2/24`);
  await link(balancer, 'to-be1', `${prefix}.2.1/24`, b1, 'eth0', `${prefix}.2.2/24`);
  await link(balancer, 'to-be2', `${prefix}.3.1/24`, b2, 'eth0', `${prefix}.3.2/24`);
  await balancer.run(['ip', 'addr', 'add', `${vip}/32`, 'dev', 'lo']);
  await balancer.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  await client.run(['ip', 'route', 'add', 'default', 'via', `${prefix}.1.1`]);
  // The return-route requirement: replies must pass the balancer to be un-NATed.
  await b1.run(['ip', 'route', 'add', 'default', 'via', `${prefix}.2.1`]);
  await b2.run(['ip', 'route', 'add', 'default', 'via', `${prefix}.3.1`]);
  return { client, balancer, backends: [b1, b2] };
}

/** Loads `nf-healthd rules --format iptables-ipset` output: its sets (the marked lines), then the rules. */
export async function loadIptablesIpset(ns: Netns, rules: string): Promise<void> {
  const sets = rules
    .split('\n')
    .filter((l) => l.startsWith(IPSET_LINE_PREFIX))
    .map((l) => l.slice(IPSET_LINE_PREFIX.length));
  await ns.run(['ipset', 'restore', '-exist'], `${sets.join('\n')}\n`);
  await ns.run(['iptables-restore'], rules);
}
