import { execFile } from 'node:child_process';
import type { Logger } from '../log.js';

/**
 * sd_notify(3) by way of systemd's own `systemd-notify` program rather than a native
 * socket (Node has no AF_UNIX datagram sockets) or the npm package of the same name
 * (READY/STATUS/MAINPID only, newlines passed through into extra fields). Called
 * without --no-block: its barrier keeps it alive until systemd has read the message,
 * so the message is attributed to our unit (see docs/design.md, "Why systemd-notify (the program)").
 */
export const SYSTEMD_NOTIFY = '/usr/bin/systemd-notify';

export type NotifyFields = Record<string, string | number>;

export interface Notifier {
  /** Queues one message; messages go out one at a time, in order. Never rejects. */
  send(fields: NotifyFields): Promise<void>;
  /** Resolves once every queued message has been handed over. */
  idle(): Promise<void>;
}

export interface NotifierOptions {
  log: Logger;
  env?: NodeJS.ProcessEnv;
  program?: string;
}

const KEY = /^[A-Z][A-Z0-9_]*$/;

/** `VAR=VALUE` arguments; a newline in a value would start a field of its own, so none survive. */
export function notifyArgs(fields: NotifyFields): string[] {
  return Object.entries(fields).map(([key, value]) => {
    if (!KEY.test(key)) throw new Error(`invalid sd_notify field name ${JSON.stringify(key)}`);
    return `${key}=${String(value)
      .replace(/[\r\n]+/g, ' ')
      .trim()}`;
  });
}

/** A notifier when systemd (or anything else) gave us NOTIFY_SOCKET; otherwise undefined: nothing to do. */
export function createNotifier(options: NotifierOptions): Notifier | undefined {
  const env = options.env ?? process.env;
  if (!env.NOTIFY_SOCKET) return undefined;
  const program = options.program ?? SYSTEMD_NOTIFY;
  const { log } = options;
  let queue = Promise.resolve();
  let failing = false;

  const deliver = (args: string[]) =>
    new Promise<void>((resolve) => {
      execFile(
        program,
        args,
        { env, timeout: 10_000, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 },
        (err, _stdout, stderr) => {
          if (err) {
            // Once per episode: a watchdog ping every few seconds must not flood the log.
            const how = err.signal
              ? `killed by ${err.signal}`
              : typeof err.code === 'number'
                ? `exit ${err.code}`
                : String(err.code ?? err.message);
            const words = String(stderr).trim() || how;
            // SIGTERM: the service manager is stopping the unit and swept its cgroup; nothing to report.
            if (err.signal === 'SIGTERM')
              log.debug({ event: 'sd_notify_stopped', args }, `systemd-notify ${args.join(' ')} stopped by SIGTERM`);
            else if (!failing)
              log.warn(
                { event: 'sd_notify_failed', args, code: err.code, signal: err.signal, stderr: String(stderr).trim() },
                `systemd-notify ${args.join(' ')} failed: ${words}`,
              );
            failing ||= err.signal !== 'SIGTERM';
          } else if (failing) {
            failing = false;
            log.info({ event: 'sd_notify_recovered' }, 'systemd-notify works again');
          }
          resolve();
        },
      );
    });

  return {
    send(fields) {
      const args = notifyArgs(fields);
      queue = queue.then(() => deliver(args));
      return queue;
    },
    idle: () => queue,
  };
}

/** WATCHDOG_USEC in ms when the watchdog is meant for this process (WATCHDOG_PID ours or unset). */
export function watchdogPeriodMs(env: NodeJS.ProcessEnv = process.env, pid = process.pid): number | undefined {
  const usec = Number(env.WATCHDOG_USEC);
  if (!env.WATCHDOG_USEC || !Number.isSafeInteger(usec) || usec <= 0) return undefined;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== pid) return undefined;
  return usec / 1000;
}

/** CLOCK_MONOTONIC in µs, what MONOTONIC_USEC wants (libuv's hrtime is CLOCK_MONOTONIC on Linux). */
export function monotonicUsec(): string {
  return (process.hrtime.bigint() / 1000n).toString();
}
