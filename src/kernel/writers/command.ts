import { spawn } from 'node:child_process';

export interface CommandResult {
  code: number | null;
  /** The signal that ended it (code null), e.g. SIGKILL from the OOM killer or an operator. */
  signal?: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CommandOptions {
  input?: string;
  timeoutMs: number;
  /** Bytes of stdout kept; more fails the command (a runaway listing must not eat memory). */
  maxOutput: number;
}

/**
 * Runs a binary with an argv array (never a shell), feeding `input` on stdin.
 * Rejects with an errno-style error when it cannot start (ENOENT, EACCES), runs
 * past the timeout (ETIMEDOUT) or prints too much (E2BIG); resolves otherwise,
 * whatever the exit code.
 */
export function runCommand(file: string, args: readonly string[], options: CommandOptions): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const signal = AbortSignal.timeout(options.timeoutMs);
    const child = spawn(file, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      signal,
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
    });
    let stdout = '';
    let stderr = '';
    let failure: NodeJS.ErrnoException | undefined;
    const fail = (err: NodeJS.ErrnoException) => {
      failure ??= err;
      child.kill('SIGKILL');
    };
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (stdout.length > options.maxOutput)
        fail(Object.assign(new Error(`${file} printed more than ${options.maxOutput} bytes`), { code: 'E2BIG' }));
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      if (stderr.length < 8192) stderr += chunk;
    });
    let settled = false;
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.name === 'AbortError')
        fail(Object.assign(new Error(`${file} did not finish within ${options.timeoutMs}ms`), { code: 'ETIMEDOUT' }));
      else if (err.syscall?.startsWith('spawn') && !settled) {
        settled = true; // never started: no 'close' to wait for
        reject(err);
      } else fail(err);
    });
    child.stdin.on('error', () => {}); // EPIPE when the child exits early: its exit code tells
    child.stdin.end(options.input ?? '');
    child.on('close', (code, signal) => {
      if (settled) return;
      settled = true;
      if (failure) reject(failure);
      else resolve({ code, signal, stdout, stderr: stderr.trim() });
    });
  });
}

/** An error carrying the command's own words, coded for the writer's hint. */
export function commandError(tool: string, result: CommandResult): NodeJS.ErrnoException {
  const ended = result.signal ? `killed by ${result.signal}` : `exit code ${result.code}`;
  const text = result.signal
    ? `${ended}${result.stderr ? `: ${result.stderr}` : ''}`
    : result.stderr || result.stdout.trim() || ended;
  const code = /does not exist|No such file or directory|doesn't exist/i.test(text)
    ? 'ENOENT'
    : /Operation not permitted|Permission denied|must be root/i.test(text)
      ? 'EPERM'
      : 'EFAILED';
  return Object.assign(new Error(`${tool}: ${text.split('\n')[0]}`), { code });
}

/** What a command-line writer (ipset, nft) tells the operator about its errors. */
export interface CommandHintText {
  /** The tool's name in messages: `ipset`. */
  tool: string;
  /** The binary as configured, and the key that sets it: `writer.ipsetPath`. */
  path: string;
  pathKey: string;
  /** The package to install: `nftables`. */
  install: string;
  /** What ENOENT means and what to do: the set is missing, load the rules. */
  missing: string;
}

/** The hint of a writer that runs a tool: it cannot start, the set is missing, no CAP_NET_ADMIN, else its own words. */
export function commandHint(error: NodeJS.ErrnoException, text: CommandHintText): string {
  if (error.syscall?.startsWith('spawn'))
    return `cannot run ${text.path}: install ${text.install} or set ${text.pathKey}`;
  switch (error.code) {
    case 'ENOENT':
      return `${text.missing}, in nf-healthd's network namespace`;
    case 'EPERM':
    case 'EACCES':
      return `${text.tool} needs CAP_NET_ADMIN: run as root or with AmbientCapabilities=CAP_NET_ADMIN`;
    default:
      return `${error.message}; retrying on every check`;
  }
}
