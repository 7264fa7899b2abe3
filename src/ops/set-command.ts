/**
 * `nf-healthd set SERVICE/BACKEND ready|drain|maint [--deadline DURATION] [-c FILE]`:
 * asks the running daemon (through its control socket, found from the same config)
 * to change a backend's administrative state, and waits until the daemon has written
 * it to the kernel. Exit 0 applied, 3 no daemon, 65 unknown backend, 64 usage, 77 no
 * permission on the socket.
 */
import net from 'node:net';
import { ConfigError } from '../config/load.js';
import { controlSocketPath } from '../config/operations.js';
import { EXIT } from '../exit-codes.js';
import { ADMIN_STATES, type AdminState } from '../health/admin.js';
import { loadConfig } from '../plan/load.js';
import { type ControlAnswer, MAX_REQUEST_BYTES, parseDeadline, type SetRequest } from './control.js';
import type { StatusIo } from './status-command.js';

/** The daemon answers once the kernel write was tried; a wedged writer is reported, not waited on forever. */
const ANSWER_TIMEOUT_MS = 60_000;

/** Sends one request line and reads one answer line. */
export function ask(
  socketPath: string,
  request: SetRequest,
  timeoutMs = ANSWER_TIMEOUT_MS,
): Promise<ControlAnswer | NodeJS.ErrnoException> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    let buffer = '';
    const done = (value: ControlAnswer | NodeJS.ErrnoException) => {
      socket.destroy();
      resolve(value);
    };
    socket.setTimeout(timeoutMs, () =>
      done(Object.assign(new Error(`no answer within ${timeoutMs / 1000}s`), { code: 'ETIMEDOUT' })),
    );
    socket.once('error', (err: NodeJS.ErrnoException) => done(err));
    socket.once('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      const nl = buffer.indexOf('\n');
      if (nl >= 0) {
        try {
          done(JSON.parse(buffer.slice(0, nl)) as ControlAnswer);
        } catch {
          done(Object.assign(new Error('the daemon answered something that is not JSON'), { code: 'EPROTO' }));
        }
      } else if (buffer.length > MAX_REQUEST_BYTES * 4)
        done(Object.assign(new Error('the answer is too long'), { code: 'EPROTO' }));
    });
    socket.once('end', () =>
      done(Object.assign(new Error('the daemon closed the connection without answering'), { code: 'EPROTO' })),
    );
  });
}

export async function setCommand(
  io: StatusIo,
  configPath: string,
  args: readonly string[],
  deadline: string | undefined,
): Promise<number> {
  const usage = (message: string) => {
    io.err(`nf-healthd set: ${message}. Try 'nf-healthd --help'.\n`);
    return EXIT.usage;
  };
  if (args.length !== 2) return usage('expected SERVICE/BACKEND and a state (ready, drain or maint)');
  const [backend, state] = args as [string, string];
  if (!/^[^/\s]+\/[^/\s]+$/.test(backend)) return usage(`"${backend}" is not SERVICE/BACKEND`);
  if (!(ADMIN_STATES as readonly string[]).includes(state))
    return usage(`"${state}" is not a state: ready, drain or maint`);
  if (deadline !== undefined) {
    if (state !== 'drain') return usage('--deadline goes with drain only');
    const ms = parseDeadline(deadline);
    if (typeof ms === 'string') return usage(ms);
  }
  let socketPath: string;
  try {
    socketPath = controlSocketPath(loadConfig(configPath));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    io.err(`${err.message}\n`);
    return EXIT.config;
  }
  const request: SetRequest = { op: 'set', backend, state: state as AdminState, ...(deadline ? { deadline } : {}) };
  const answer = await ask(socketPath, request);
  if (answer instanceof Error) {
    switch (answer.code) {
      case 'ENOENT':
      case 'ECONNREFUSED':
        io.err(`nf-healthd is not running (nothing answers on ${socketPath})\n`);
        return EXIT.notRunning;
      case 'EACCES':
      case 'EPERM':
        io.err(`permission denied on ${socketPath}: run as root or as a member of the daemon's group\n`);
        return EXIT.noPermission;
      default:
        io.err(`nf-healthd set: ${socketPath}: ${answer.message}\n`);
        return EXIT.failure;
    }
  }
  if (!answer.ok) {
    const hint = answer.suggestion ? ` (did you mean ${answer.suggestion}?)` : '';
    io.err(`nf-healthd set: ${answer.message}${hint}\n`);
    return answer.error === 'unknown_backend' ? EXIT.unknown : answer.error === 'usage' ? EXIT.usage : EXIT.failure;
  }
  const flows = answer.connections === undefined ? '' : `; ${answer.connections} open connections`;
  const until = answer.deadline ? `; flows left at ${answer.deadline} are deleted` : '';
  if (!answer.applied) {
    io.err(
      `${answer.backend}: ${answer.state} (was ${answer.previous}), but the kernel write failed: the daemon retries it (see its log)\n`,
    );
    return EXIT.failure;
  }
  io.out(`${answer.backend}: ${answer.state} (was ${answer.previous}), applied to the kernel${flows}${until}\n`);
  return EXIT.ok;
}
