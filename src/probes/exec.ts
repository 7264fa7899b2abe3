import { spawn } from 'node:child_process';
import { z } from 'zod';
import { abortedDuring, countRead } from './connection.js';
import { shorten } from './conversation.js';
import { CheckFailed, defineProbe } from './types.js';

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'expected an environment variable name');

/**
 * Runs a program (an argv array, never a shell) with the backend in its environment
 * (NFH_ADDRESS, NFH_PORT, NFH_BACKEND, NFH_SERVICE): exit 0 is up. The program gets
 * its own process group, which is killed whole at the timeout and again right after
 * the program exits, so no child it forked outlives the check. Output is read up to
 * `maxOutputBytes`; its first line is the detail.
 */
export const execProbe = defineProbe({
  type: 'exec',
  schema: z
    .strictObject({
      type: z.literal('exec'),
      command: z
        .array(z.string().min(1))
        .min(1, 'the program to run, then its arguments')
        .describe(
          'The program and its arguments, run directly (no shell) with `PATH`, `env` and NFH_ADDRESS, NFH_PORT, NFH_BACKEND, NFH_SERVICE.',
        ),
      env: z.record(envName, z.string()).default({}).describe("Variables added to the program's environment."),
      maxOutputBytes: z
        .number()
        .int()
        .min(1)
        .max(1024 * 1024)
        .default(4096)
        .describe('Output read from the program; past this it gets EPIPE. The first non-empty line is the detail.'),
    })
    .describe('Up when a program exits 0; its process group is killed at the timeout and when it exits.'),
  run(target, options, signal) {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(abortedDuring(signal, `starting ${options.command[0]}`));
      const [program, ...args] = options.command as [string, ...string[]];
      const child = spawn(program, args, {
        detached: true, // its own process group: kill(-pid) reaches everything it forked
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
          ...options.env,
          NFH_ADDRESS: target.address,
          NFH_PORT: String(target.port),
          NFH_BACKEND: target.backend,
          NFH_SERVICE: target.service,
        },
      });
      const killGroup = () => {
        if (child.pid === undefined) return;
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // ESRCH: the group is gone already.
        }
      };
      let output = '';
      let read = 0;
      const collect = (chunk: Buffer) => {
        const room = options.maxOutputBytes - read;
        read += chunk.length;
        countRead(signal, Math.min(chunk.length, Math.max(room, 0)));
        if (room > 0) output += chunk.subarray(0, room).toString('utf8');
        // Past the bound we stop reading: the program gets EPIPE instead of our memory.
        if (read >= options.maxOutputBytes) {
          child.stdout.destroy();
          child.stderr.destroy();
        }
      };
      child.stdout.on('data', collect);
      child.stderr.on('data', collect);
      let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
      const onAbort = () => {
        killGroup();
        settle(abortedDuring(signal, `running ${program}`));
      };
      let settled = false;
      const settle = (result: Error | { up: boolean; detail: string }) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        if (result instanceof Error) reject(result);
        else resolve(result);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      child.once('error', (err: NodeJS.ErrnoException) => {
        killGroup();
        settle(new CheckFailed(`exec ${program}: ${err.code ?? err.message}`));
      });
      child.once('exit', (code, sig) => {
        exit = { code, signal: sig };
        // Whatever it left running dies with it; that also closes pipes a grandchild held.
        killGroup();
      });
      child.once('close', () => {
        if (!exit) return;
        const firstLine =
          output
            .split('\n')
            .find((line) => line.trim() !== '')
            ?.trim() ?? '';
        const said = firstLine ? `: ${shorten(firstLine)}` : '';
        if (exit.code === 0) settle({ up: true, detail: `exit 0${said}` });
        else
          settle(new CheckFailed(exit.code !== null ? `exit ${exit.code}${said}` : `killed by ${exit.signal}${said}`));
      });
    });
  },
});
