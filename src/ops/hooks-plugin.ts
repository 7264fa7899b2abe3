/**
 * Notify hooks: `notify.up`, `notify.down` and `notify.change` run (argv, no shell)
 * on transitions, with the facts in NFH_* environment variables.
 *
 * Never blocking checks: a transition only queues work. No fork storm: at most
 * `maxConcurrent` hook processes run at once, and each backend has at most one
 * pending notification: while its hooks wait or run, newer transitions of that
 * backend are coalesced into that pending one (the latest state wins; NFH_COALESCED
 * says how many transitions it stands for). Hooks of one backend run in order.
 */
import { execFile } from 'node:child_process';
import pLimit from 'p-limit';
import type { NotifyConfig } from '../config/operations.js';
import type { BackendState } from '../health/hysteresis.js';
import type { Logger } from '../log.js';
import type { BackendStatus, DaemonPlugin } from '../observer.js';
import { metricsFor } from './metrics.js';

export interface Notification {
  service: string;
  backend: string;
  address: string;
  port: number;
  target: string;
  state: BackendState;
  previous: BackendState;
  reason: string;
  since: number;
  /** Transitions this notification stands for (1 unless coalesced). */
  coalesced: number;
}

export type HookName = 'up' | 'down' | 'change';
export type HookOutcome = 'ok' | 'failed' | 'timeout' | 'coalesced';

export function hookEnvironment(n: Notification, hook: HookName): Record<string, string> {
  return {
    NFH_EVENT: hook,
    NFH_SERVICE: n.service,
    NFH_BACKEND: n.backend,
    NFH_ADDRESS: n.address,
    NFH_PORT: String(n.port),
    NFH_TARGET: n.target,
    NFH_STATE: n.state,
    NFH_PREVIOUS: n.previous,
    NFH_REASON: n.reason,
    NFH_SINCE: new Date(n.since).toISOString(),
    NFH_COALESCED: String(n.coalesced),
  };
}

/** Bytes of a hook's output kept for the log. */
const OUTPUT_LIMIT = 16 * 1024;

export function runHook(
  argv: readonly string[],
  env: Record<string, string>,
  timeoutMs: number,
  stop: AbortSignal,
): Promise<{ outcome: 'ok' | 'failed' | 'timeout'; detail: string }> {
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = AbortSignal.any([timeout, stop]);
  return new Promise((resolve) => {
    execFile(
      argv[0]!,
      argv.slice(1),
      {
        // Only the facts and a PATH: the daemon's own environment (credentials a unit or a
        // shell handed it) is not the hook's business.
        env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env },
        signal,
        killSignal: 'SIGKILL',
        maxBuffer: OUTPUT_LIMIT,
        encoding: 'utf8',
        windowsHide: true,
      },
      (err, _stdout, stderr) => {
        if (!err) return resolve({ outcome: 'ok', detail: 'exit 0' });
        const e = err as NodeJS.ErrnoException & { code?: string | number; signal?: string };
        const tail = String(stderr ?? '')
          .trim()
          .split('\n')
          .slice(-3)
          .join(' | ')
          .slice(0, 500);
        if (timeout.aborted) return resolve({ outcome: 'timeout', detail: `killed after ${timeoutMs}ms` });
        if (stop.aborted) return resolve({ outcome: 'failed', detail: 'killed: daemon stopping' });
        const why =
          typeof e.code === 'number' ? `exit ${e.code}` : e.signal ? `killed by ${e.signal}` : `${e.code ?? e.message}`;
        resolve({ outcome: 'failed', detail: tail ? `${why}: ${tail}` : why });
      },
    );
  });
}

export interface HookRunner {
  /** Queues the hooks for one transition (the latest per backend wins while one runs). */
  run(n: Omit<Notification, 'coalesced'>): void;
  /** Resolves when nothing is queued or running. */
  idle(): Promise<void>;
  stop(): void;
}

export function createHookRunner(options: {
  config: () => NotifyConfig | undefined;
  log: Logger;
  count?: (hook: HookName, outcome: HookOutcome) => void;
}): HookRunner {
  const { log } = options;
  const count = options.count ?? (() => undefined);
  const stop = new AbortController();
  const limit = pLimit(options.config()?.maxConcurrent ?? 4);
  /** Per backend: the notification waiting to run (at most one), and whether its hooks are running. */
  const waiting = new Map<string, Notification>();
  const running = new Set<string>();
  const busy = new Set<Promise<void>>();

  const hooksFor = (n: Notification, config: NotifyConfig): [HookName, string[]][] => {
    const list: [HookName, string[]][] = [];
    const specific = n.state === 'up' ? config.up : config.down;
    if (specific) list.push([n.state, specific]);
    if (config.change) list.push(['change', config.change]);
    return list;
  };

  const drain = (key: string) => {
    if (running.has(key) || stop.signal.aborted) return;
    const n = waiting.get(key);
    if (!n) return;
    waiting.delete(key);
    running.add(key);
    const config = options.config();
    const work = (async () => {
      if (!config) return;
      if (limit.concurrency !== config.maxConcurrent) limit.concurrency = config.maxConcurrent;
      for (const [hook, argv] of hooksFor(n, config)) {
        const result = await limit(() => runHook(argv, hookEnvironment(n, hook), config.timeout, stop.signal));
        count(hook, result.outcome);
        const line = {
          event: 'hook',
          hook,
          backend: n.backend,
          service: n.service,
          state: n.state,
          program: argv[0],
          outcome: result.outcome,
        };
        if (result.outcome === 'ok') log.debug(line, `notify.${hook} for ${n.backend} ran`);
        else
          log.warn(
            { ...line, detail: result.detail },
            `notify.${hook} for ${n.backend} ${result.outcome === 'timeout' ? 'timed out' : 'failed'}: ${result.detail}`,
          );
      }
    })()
      .catch((err: unknown) => log.error({ err, event: 'hook_bug' }, 'notify hook bug'))
      .finally(() => {
        running.delete(key);
        busy.delete(work);
        drain(key);
      });
    busy.add(work);
  };

  return {
    run(fresh) {
      const config = options.config();
      if (!config || (!config.up && !config.down && !config.change) || stop.signal.aborted) return;
      const key = `${fresh.service}/${fresh.backend}`;
      const earlier = waiting.get(key);
      if (earlier) {
        // Latest state wins; "previous" stays what the hooks last heard about.
        waiting.set(key, { ...fresh, previous: earlier.previous, coalesced: earlier.coalesced + 1 });
        count('change', 'coalesced');
      } else waiting.set(key, { ...fresh, coalesced: 1 });
      drain(key);
    },
    async idle() {
      while (busy.size > 0) await Promise.all([...busy]);
    },
    stop() {
      stop.abort();
      waiting.clear();
    },
  };
}

export const hooksPlugin: DaemonPlugin = ({ daemon, log }) => {
  const hooks = createHookRunner({
    config: () => daemon.config().notify,
    log,
    count: (hook, outcome) => metricsFor(daemon).hookRuns.inc({ hook, outcome }),
  });
  return {
    onTransition(b: BackendStatus, from, to) {
      hooks.run({
        service: b.spec.service,
        backend: b.spec.name,
        address: b.spec.address,
        port: b.spec.port,
        target: b.spec.target.label,
        state: to,
        previous: from,
        reason: b.reason,
        since: b.since,
      });
    },
    onStopped() {
      // Hooks still running are killed with the daemon rather than orphaned.
      hooks.stop();
    },
  };
};
