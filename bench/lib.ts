/**
 * Small pieces the benchmark is made of: /proc readings, the banner server's
 * process and its control pipe, paths, sleeping.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The repository root: the nearest folder above this file with nf-healthd's package.json. */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'nf-healthd')
      return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the nf-healthd repository above the bench harness');
    dir = up;
  }
}

let clockTicks: number | undefined;
/** USER_HZ: the unit of utime/stime in /proc/PID/stat. */
export function ticksPerSecond(): number {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  return clockTicks;
}

/** CPU time (user + system, all threads) a process has used, in microseconds. */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1e6) / ticksPerSecond();
}

/** Nanoseconds the process's main thread has spent runnable but waiting for a CPU. */
export function cpuWaitNs(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/schedstat`, 'latin1').split(' ')[1]);
}

/** Resident set size and its peak, in MiB. */
export function memoryMiB(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'latin1');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

/** TIME_WAIT sockets whose peer (checker side) or own address (backend side) uses `port`, in network namespace `ns`. */
export function timeWait(port: number, ns?: string): { checker: number; backend: number; total: number } {
  const [cmd, args] = inNamespace(ns, ['ss', '-tanH', 'state', 'time-wait']);
  const out = execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  let checker = 0;
  let backend = 0;
  let total = 0;
  const suffix = `:${port}`;
  for (const line of out.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 4) continue;
    total++;
    // -H with a state filter: Recv-Q Send-Q Local Peer
    const local = cols[cols.length - 2]!;
    const peer = cols[cols.length - 1]!;
    if (peer.endsWith(suffix)) checker++;
    else if (local.endsWith(suffix)) backend++;
  }
  return { checker, backend, total };
}

/**
 * Connections opened (TCP ActiveOpens: connect(2) calls that sent a SYN) in the
 * network namespace of `pid`. In the benchmark's own namespace only the checker
 * connects, so this counts its checks alike for both checkers, including HAProxy's
 * connect checks, which reset during the handshake and never reach accept(2).
 */
export function activeOpens(pid: number): number {
  const lines = readFileSync(`/proc/${pid}/net/snmp`, 'latin1')
    .split('\n')
    .filter((l) => l.startsWith('Tcp:'));
  const names = lines[0]!.split(/\s+/);
  const values = lines[1]!.split(/\s+/);
  return Number(values[names.indexOf('ActiveOpens')]);
}

/** argv prefixed with `ip netns exec NS` (which execs: the pid stays the program's). */
export function inNamespace(ns: string | undefined, argv: string[]): [string, string[]] {
  return ns === undefined ? [argv[0]!, argv.slice(1)] : ['ip', ['netns', 'exec', ns, ...argv]];
}

/**
 * Scheduling priority for the checker and the backends: on a shared machine it keeps
 * other work from starving the measured processes; the same for both checkers, so the
 * comparison stays fair. 0 leaves everything alone. With autogroup scheduling (the
 * Linux default) nice only counts inside a session, so each measured process gets a
 * session of its own (setsid) and that session's autogroup gets the niceness.
 */
let niceness = 0;
export function setNiceness(n: number): void {
  niceness = n;
}

/** Gives the autogroup of a process started by command() the niceness set above. */
export function prioritize(pid: number): void {
  if (niceness === 0) return;
  try {
    writeFileSync(`/proc/${pid}/autogroup`, String(niceness));
  } catch {
    // Not permitted or no autogroups: the run goes on at normal priority.
  }
}

/** argv pinned to `cpu` with taskset, inside `ns` when given, in a session of its own when prioritized. */
export function command(argv: string[], where: { cpu?: number; ns?: string }): [string, string[]] {
  const pinned = where.cpu === undefined ? argv : ['taskset', '-c', String(where.cpu), ...argv];
  return inNamespace(where.ns, niceness === 0 ? pinned : ['setsid', 'nice', '-n', String(niceness), ...pinned]);
}

/** A network namespace of the benchmark's own, loopback up: its counters and sockets are ours alone. */
export function createNamespace(): { name: string; remove(): void } {
  const name = `nfh-bench-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  execFileSync('ip', ['netns', 'add', name]);
  try {
    execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (err) {
    execFileSync('ip', ['netns', 'del', name]);
    throw err;
  }
  return {
    name,
    remove: () => {
      try {
        execFileSync('ip', ['netns', 'del', name]);
      } catch {
        // already gone
      }
    },
  };
}

/** Backend i's address: 127.1.(i / 250).(i % 250 + 1), as banner-server.c binds it. */
export function backendAddress(i: number): string {
  return `127.1.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}

export type BackendMode = 'tcp' | 'smtp' | 'http';

/** Compiles banner-server.c (gcc -O2) into `dir`; returns the binary's path. */
export function buildBannerServer(dir: string): string {
  const out = path.join(dir, 'banner-server');
  execFileSync('gcc', ['-O2', '-Wall', '-o', out, path.join(repoRoot(), 'bench', 'banner-server.c')], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  return out;
}

export interface Backends {
  pid: number;
  count: number;
  port: number;
  /** Connections accepted so far, over all backends. */
  accepted(): Promise<number>;
  /** Connections opened so far in the backends' namespace (see activeOpens): the checks made, counted alike for both checkers. */
  connections(): number;
  kill(i: number): Promise<void>;
  revive(i: number): Promise<void>;
  silence(i: number): Promise<void>;
  stop(): Promise<void>;
}

/** Starts the banner server (pinned, in a namespace, when asked); resolves once every backend listens. */
export async function startBackends(
  binary: string,
  mode: BackendMode,
  port: number,
  count: number,
  where: { cpu?: number; ns?: string } = {},
): Promise<Backends> {
  const [cmd, args] = command([binary, mode, String(port), String(count)], where);
  const child: ChildProcess = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const waiting: ((line: string) => void)[] = [];
  let exited = false;
  const lines = createInterface({ input: child.stdout! });
  let ready: (() => void) | undefined;
  let failed: ((err: Error) => void) | undefined;
  lines.on('line', (line) => {
    if (ready && line.startsWith('ready ')) {
      ready();
      ready = undefined;
      return;
    }
    waiting.shift()?.(line);
  });
  child.on('exit', (code, signal) => {
    exited = true;
    failed?.(new Error(`banner-server exited (${code ?? signal}) before it was ready`));
    for (const w of waiting.splice(0)) w('error exited');
  });
  await new Promise<void>((resolve, reject) => {
    ready = resolve;
    failed = reject;
  });
  failed = undefined;
  prioritize(child.pid!);
  const ask = (command: string) =>
    new Promise<string>((resolve, reject) => {
      if (exited) return reject(new Error('banner-server is gone'));
      waiting.push(resolve);
      child.stdin!.write(`${command}\n`);
    });
  const expectOk = async (command: string) => {
    const answer = await ask(command);
    if (answer !== 'ok') throw new Error(`banner-server: ${command}: ${answer}`);
  };
  return {
    pid: child.pid!,
    count,
    port,
    async accepted() {
      const answer = await ask('count');
      const m = /^count (\d+)$/.exec(answer);
      if (!m) throw new Error(`banner-server: count: ${answer}`);
      return Number(m[1]);
    },
    connections: () => activeOpens(child.pid!),
    kill: (i) => expectOk(`kill ${i}`),
    revive: (i) => expectOk(`revive ${i}`),
    silence: (i) => expectOk(`silent ${i}`),
    async stop() {
      if (exited) return;
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.stdin!.end('quit\n');
      await Promise.race([gone, sleep(2000)]);
      if (!exited) child.kill('SIGKILL');
    },
  };
}

/** Waits for `predicate` with a deadline, polling every `everyMs`. */
export async function waitFor(
  what: string,
  predicate: () => Promise<boolean> | boolean,
  timeoutMs: number,
  everyMs = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** p-th percentile (0..100) of numbers, nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}
