import { execFile } from 'node:child_process';
import { BIN } from './daemon.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The built CLI once, to its exit: the code and both outputs (no systemd notify socket inherited). */
export function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve) =>
    execFile(
      process.execPath,
      [BIN, ...args],
      { encoding: 'utf8', env: { ...process.env, NOTIFY_SOCKET: '', JOURNAL_STREAM: '', ...env } },
      (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: unknown }).code) : 0, stdout, stderr }),
    ),
  );
}
