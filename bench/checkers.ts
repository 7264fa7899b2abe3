/**
 * The two checkers under test, each as a real process pinned to its own core:
 * nf-healthd (`node test/instrument/dist/entry.js run`: the built daemon plus its
 * timing samples hook) and HAProxy (foreground, checks only),
 * configured alike from one description of the backends.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { type BackendMode, backendAddress, command, repoRoot, sleep } from './lib.js';

/** `node-loop`: the bare Node loop of bench/node-loop.ts, the floor under nf-healthd (from bench/dist only). */
export type CheckerName = 'nf-healthd' | 'haproxy' | 'node-loop';

export interface Timing {
  intervalMs: number;
  fastIntervalMs: number;
  timeoutMs: number;
  rise: number;
  fall: number;
}

export interface CheckerSetup {
  mode: BackendMode;
  port: number;
  count: number;
  timing: Timing;
  /** A fresh temp folder for this checker's files. */
  dir: string;
  /** Core to pin the checker to (taskset -c). */
  cpu?: number;
  /** Network namespace to run in (the backends' one). */
  ns?: string;
  /** Extra node options (say, --cpu-prof) for nf-healthd. */
  nodeArgs?: string[];
  /**
   * nf-healthd's entry point: this repository's instrumented entry (test/instrument/, with the
   * samples hook) unless given (before/after comparisons: another checkout's instrumented entry).
   */
  daemonEntry?: string;
}

export interface CheckerProcess {
  name: CheckerName;
  pid: number;
  /** Backends the checker holds for down now (0 in a healthy sweep: a cross-check of the verdicts). */
  downCount(): Promise<number>;
  /** SIGTERM and wait; resolves with the exit code or signal. */
  stop(): Promise<string>;
  /** nf-healthd: the timing samples file written at exit (see test/instrument/samples.ts). */
  samplesFile?: string;
  /** nf-healthd: the condition files' folder. */
  conditionDir?: string;
}

export const backendName = (i: number) => `b${i}`;

/** The config nf-healthd runs with: one service, `count` backends, log level warn. */
export function nfHealthdConfig(setup: CheckerSetup, conditionDir: string): string {
  const { timing } = setup;
  const check =
    setup.mode === 'smtp'
      ? '{ type: smtp, ehlo: bench.invalid }'
      : setup.mode === 'http'
        ? '{ type: http, path: / }'
        : '{ type: tcp }';
  const lines = [
    'defaults:',
    `  interval: ${timing.intervalMs}ms`,
    `  fastInterval: ${timing.fastIntervalMs}ms`,
    `  timeout: ${timing.timeoutMs}ms`,
    `  rise: ${timing.rise}`,
    `  fall: ${timing.fall}`,
    'initialState: up',
    `stateFile: ${JSON.stringify(path.join(setup.dir, 'state.json'))}`,
    'writer:',
    '  type: condition',
    `  dir: ${JSON.stringify(conditionDir)}`,
    '  upValue: 0',
    'log:',
    '  level: warn',
    '  format: json',
    'services:',
    '  - name: bench',
    `    port: ${setup.port}`,
    `    check: ${check}`,
    '    backends:',
  ];
  for (let i = 0; i < setup.count; i++)
    lines.push(`      - { name: ${backendName(i)}, address: ${backendAddress(i)} }`);
  return `${lines.join('\n')}\n`;
}

/** The same farm for HAProxy: checks only (no frontend, no traffic), one thread. */
export function haproxyConfig(setup: CheckerSetup, statsSocket: string): string {
  const { timing } = setup;
  const option =
    setup.mode === 'smtp'
      ? ['  option smtpchk EHLO bench.invalid']
      : setup.mode === 'http'
        ? ['  option httpchk GET /', '  http-check expect status 200-399']
        : [];
  const lines = [
    'global',
    '  nbthread 1',
    '  maxconn 2000',
    `  stats socket ${statsSocket} mode 600 level admin`,
    '',
    'defaults',
    '  mode tcp',
    `  timeout connect ${timing.timeoutMs}ms`,
    `  timeout check ${timing.timeoutMs}ms`,
    '  timeout client 10s',
    '  timeout server 10s',
    '',
    'backend bench',
    ...option,
    `  default-server check inter ${timing.intervalMs}ms fastinter ${timing.fastIntervalMs}ms downinter ${timing.intervalMs}ms rise ${timing.rise} fall ${timing.fall}`,
  ];
  for (let i = 0; i < setup.count; i++) lines.push(`  server ${backendName(i)} ${backendAddress(i)}:${setup.port}`);
  return `${lines.join('\n')}\n`;
}

/** A clean environment: no NOTIFY_SOCKET or JOURNAL_STREAM leaking in from the caller. */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...extra };
}

function watchExit(child: ChildProcess, name: string) {
  let exit: string | undefined;
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  const exited = new Promise<string>((resolve) =>
    child.once('exit', (code, signal) => resolve((exit = String(code ?? signal)))),
  );
  return {
    exited,
    alive: () => exit === undefined,
    async stop(): Promise<string> {
      if (exit !== undefined) return exit;
      child.kill('SIGTERM');
      const code = await Promise.race([exited, sleep(10_000).then(() => undefined)]);
      if (code === undefined) {
        child.kill('SIGKILL');
        return `${await exited} (killed: did not stop on SIGTERM)`;
      }
      if (code !== '0' && code !== 'SIGTERM') process.stderr.write(`bench: ${name} exited ${code}: ${stderr}\n`);
      return code;
    },
    stderr: () => stderr,
  };
}

/**
 * The Node flags nf-healthd ships with (the unit, /usr/bin/nf-healthd, the Dockerfile and
 * bin/nf-healthd.js; test/systemd-unit.test.ts keeps them equal): the benchmark measures the
 * daemon as it runs there.
 */
export const SHIPPED_NODE_FLAGS = ['--max-semi-space-size=32'];

export async function startNfHealthd(setup: CheckerSetup): Promise<CheckerProcess> {
  const conditionDir = path.join(setup.dir, 'conditions');
  mkdirSync(conditionDir, { recursive: true });
  const configFile = path.join(setup.dir, 'nf-healthd.yaml');
  writeFileSync(configFile, nfHealthdConfig(setup, conditionDir));
  const samplesFile = path.join(setup.dir, 'samples.json');
  const [cmd, args] = command(
    [
      process.execPath,
      ...SHIPPED_NODE_FLAGS,
      ...(setup.nodeArgs ?? []),
      setup.daemonEntry ?? path.join(repoRoot(), 'test', 'instrument', 'dist', 'entry.js'),
      'run',
      '-c',
      configFile,
    ],
    setup,
  );
  const child = spawn(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv({ NF_HEALTHD_SAMPLES: samplesFile }),
    cwd: setup.dir,
  });
  // Log level warn: a healthy run says nothing; keep what it does say for the report.
  let said = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => (said = (said + d).slice(-4000)));
  const proc = watchExit(child, 'nf-healthd');
  return {
    name: 'nf-healthd',
    pid: child.pid!,
    samplesFile,
    conditionDir,
    async downCount() {
      let down = 0;
      for (const f of readdirSync(conditionDir))
        if (readFileSync(path.join(conditionDir, f), 'latin1')[0] !== '0') down++;
      return down;
    },
    async stop() {
      const code = await proc.stop();
      if (said.trim())
        process.stderr.write(`bench: nf-healthd said: ${said.trim().split('\n').slice(-3).join('\n')}\n`);
      return code;
    },
  };
}

/** Sends one command to HAProxy's stats socket; resolves with the whole answer. */
export function haproxyCommand(socketPath: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    let out = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.end(`${command}\n`));
    socket.on('data', (d: string) => (out += d));
    socket.on('end', () => resolve(out));
    socket.on('error', reject);
  });
}

export async function startHaproxy(setup: CheckerSetup): Promise<CheckerProcess> {
  const statsSocket = path.join(setup.dir, 'haproxy.sock');
  const configFile = path.join(setup.dir, 'haproxy.cfg');
  writeFileSync(configFile, haproxyConfig(setup, statsSocket));
  // -db: foreground, one process.
  const [cmd, args] = command(['haproxy', '-db', '-f', configFile], setup);
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: childEnv(), cwd: setup.dir });
  const proc = watchExit(child, 'haproxy');
  // Ready when the stats socket answers.
  for (let tries = 0; ; tries++) {
    if (!proc.alive()) throw new Error(`haproxy exited: ${proc.stderr()}`);
    try {
      await haproxyCommand(statsSocket, 'show info');
      break;
    } catch (err) {
      if (tries > 300) throw err;
      await sleep(100);
    }
  }
  return {
    name: 'haproxy',
    pid: child.pid!,
    async downCount() {
      const csv = await haproxyCommand(statsSocket, 'show stat');
      const rows = csv.split('\n').filter((l) => l.startsWith('bench,') && !l.startsWith('bench,BACKEND'));
      // Column 18 (0-based 17) is status: UP, DOWN, "UP 1/2", "DOWN 1/3"...
      return rows.filter((r) => !(r.split(',')[17] ?? '').startsWith('UP')).length;
    },
    stop: () => proc.stop(),
  };
}

export async function startNodeLoop(setup: CheckerSetup): Promise<CheckerProcess> {
  const script = path.join(repoRoot(), 'bench', 'dist', 'node-loop.js');
  const [cmd, args] = command(
    [process.execPath, script, setup.mode, String(setup.port), String(setup.count), String(setup.timing.intervalMs)],
    setup,
  );
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: childEnv(), cwd: setup.dir });
  const proc = watchExit(child, 'node-loop');
  return { name: 'node-loop', pid: child.pid!, downCount: async () => 0, stop: () => proc.stop() };
}

export function startChecker(name: CheckerName, setup: CheckerSetup): Promise<CheckerProcess> {
  return name === 'nf-healthd'
    ? startNfHealthd(setup)
    : name === 'haproxy'
      ? startHaproxy(setup)
      : startNodeLoop(setup);
}
