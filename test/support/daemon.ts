import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { eachLine, waitableList } from './lines.js';

export const BIN = fileURLToPath(new URL('../../bin/nf-healthd.js', import.meta.url));
/** The daemon plus the test hooks (test/instrument/entry.ts), as built by scripts/test.sh. */
export const INSTRUMENTED_BIN = fileURLToPath(new URL('../instrument/dist/entry.js', import.meta.url));

/** A unique temp folder, removed by the returned cleanup. */
export function tempDir(prefix = 'nfh-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export type LogLine = Record<string, unknown> & { level: string; msg: string };

/** The built CLI as a child process, its JSON log lines collected as they come. */
export interface DaemonProcess {
  child: ChildProcess;
  lines: LogLine[];
  stderr: () => string;
  /** Resolves with the first log line (from `from` on) that matches; rejects after `ms`. */
  waitForLine(match: (l: LogLine) => boolean, ms?: number, from?: number): Promise<LogLine>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
}

export interface StartOptions {
  /** The instrumented entry: the test hooks (NF_HEALTHD_TEST_WEDGE, NF_HEALTHD_SAMPLES) armed by `env`. */
  instrumented?: boolean;
}

/** `netns`: run it inside that network namespace (`ip netns exec` execs, so the pid is the daemon's). */
export function startDaemon(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  netns?: string,
  options: StartOptions = {},
): DaemonProcess {
  const { instrumented = false } = options;
  if (instrumented && !existsSync(INSTRUMENTED_BIN))
    throw new Error(`${INSTRUMENTED_BIN} is missing: run \`node test/instrument/build.mjs\` (npm test does)`);
  const argv = [process.execPath, instrumented ? INSTRUMENTED_BIN : BIN, ...args];
  const [program, ...rest] = netns === undefined ? argv : ['ip', 'netns', 'exec', netns, ...argv];
  const child = spawn(program!, rest, {
    env: { ...process.env, JOURNAL_STREAM: '', NOTIFY_SOCKET: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  const ended = () =>
    child.exitCode !== null || child.signalCode !== null
      ? `daemon exited (${child.exitCode ?? child.signalCode}); stderr: ${err}`
      : undefined;
  const list = waitableList<LogLine>((got) => `last lines: ${JSON.stringify(got.slice(-5))}; stderr: ${err}`, ended);
  const lines = list.items;
  eachLine(child.stdout!, (text) => {
    try {
      lines.push(JSON.parse(text) as LogLine);
    } catch {
      lines.push({ level: 'raw', msg: text });
    }
    list.changed();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      resolve({ code, signal });
      list.changed();
    }),
  );
  return {
    child,
    lines,
    stderr: () => err,
    exited,
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    waitForLine: list.waitFor,
  };
}

/** Polls `read` (sync or async) until `accept` holds or `ms` passes: for state outside the process (files, systemctl). */
export async function waitUntil<T>(
  read: () => T | Promise<T>,
  accept: (v: T) => boolean,
  ms = 10_000,
  every = 20,
): Promise<T> {
  const deadline = performance.now() + ms;
  for (;;) {
    const v = await read();
    if (accept(v)) return v;
    if (performance.now() > deadline)
      throw new Error(`condition not met within ${ms}ms; last value: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, every));
  }
}
