import pLimit, { type LimitFunction } from 'p-limit';
import { ConfigError, formatProblem, loadConfig } from './config/load.js';
import { type BackendSpec, probeTarget, resolveBackends } from './config/resolve.js';
import type { Config } from './config/schema.js';
import { type DampingState, damp } from './health/damping.js';
import { type BackendState, type Health, initialHealth, isSettling, observe } from './health/hysteresis.js';
import { nextCheckDelay } from './health/pace.js';
import { createScheduler, type Scheduler } from './health/scheduler.js';
import type { Logger } from './log.js';
import { runCheck } from './probes/run.js';
import type { ProbeResult } from './probes/types.js';
import { createReconciler, type Reconciler, type SyncOutcome, type SyncReason } from './writers/reconciler.js';
import { createWriter } from './writers/registry.js';
import type { Writer } from './writers/types.js';

/** Everything the daemon knows about one backend right now. */
export interface BackendStatus {
  spec: BackendSpec;
  health: Health;
  /** Epoch ms of the latest state change (or of start). */
  since: number;
  /** Why the state is what it is, in words. */
  reason: string;
  last?: ProbeResult & { at: number };
  /** What the writer last made the kernel hold, and whether it was confirmed. */
  written?: { up: boolean; confirmed: boolean; at: number };
  /** Flap damping: recent changes and the hold, when `damping` is configured. */
  damping?: DampingState;
}

/** What a restart may resume for one backend (from the state file). */
export type ResumedStatus = Pick<BackendStatus, 'health' | 'since' | 'reason' | 'last' | 'damping'>;

/** Plain callbacks for the parts that watch the daemon (notify, metrics, state file, hooks). */
export interface DaemonObserver {
  onCheck?(backend: BackendStatus, result: ProbeResult): void;
  onTransition?(backend: BackendStatus, from: BackendState, to: BackendState): void;
  /** The first round of checks has been applied to the writer. */
  onReady?(): void;
  onReloading?(): void;
  /** After a reload was applied (ok) or rejected (the errors). */
  onReloaded?(ok: boolean, problems: string[]): void;
  onStopping?(): void;
  /** Checks and writes have finished: the last word (final state file, closing listeners). */
  onStopped?(): void;
  onSync?(backend: BackendStatus, outcome: SyncOutcome): void;
}

export interface DaemonOptions {
  configPath: string;
  log: Logger;
  /** Used instead of reading configPath at start (tests, the demo). */
  config?: Config;
  observers?: DaemonObserver[];
  /** Replaces the writer from the config (tests of failure paths). */
  writerFactory?: (config: Config) => Writer;
  random?: () => number;
  /** At start: the saved status of an unchanged backend, to resume instead of initialState. */
  restore?: (spec: BackendSpec) => ResumedStatus | undefined;
  /** Runs one check; the real probes by default (scheduling tests pass a scripted one). */
  runCheck?: typeof runCheck;
}

export interface Daemon {
  /** Resolves once the first round of checks has been applied to the writer. */
  start(): Promise<void>;
  /** Re-reads the config file; false (old config kept) when it is invalid. */
  reload(): Promise<boolean>;
  stop(): Promise<void>;
  backends(): BackendStatus[];
  config(): Config;
  /** performance.now() of the latest completed check, for watchdogs. */
  lastProgressAt(): number;
  scheduler(): Scheduler;
  addObserver(observer: DaemonObserver): void;
  /** Checks holding a concurrency slot now, and checks waiting for one. */
  checksInFlight(): { active: number; pending: number };
}

export function summarize(backends: readonly BackendStatus[]): string {
  const up = backends.filter((b) => b.health.state === 'up').length;
  const down = backends.filter((b) => b.health.state === 'down');
  const head = `${up}/${backends.length} up`;
  if (down.length === 0) return head;
  const time = (ms: number) => new Date(ms).toTimeString().slice(0, 8);
  const parts = down
    .slice(0, 3)
    .map((b) => `${b.spec.name} down since ${time(b.since)}: ${b.last?.detail ?? b.reason}`);
  return `${head}; ${parts.join('; ')}${down.length > 3 ? `; and ${down.length - 3} more` : ''}`;
}

export function createDaemon(options: DaemonOptions): Daemon {
  const { log } = options;
  const observers = [...(options.observers ?? [])];
  const notify = <K extends keyof DaemonObserver>(key: K, ...args: Parameters<NonNullable<DaemonObserver[K]>>) => {
    for (const o of observers) {
      try {
        (o[key] as ((...a: unknown[]) => void) | undefined)?.(...args);
      } catch (err) {
        log.error({ err }, `observer ${key} failed`);
      }
    }
  };
  let config = options.config ?? loadConfig(options.configPath);
  const makeWriter = options.writerFactory ?? ((c: Config) => createWriter(c.writer));
  let writer = makeWriter(config);
  const reconciler: Reconciler = createReconciler(writer, log);
  const shutdown = new AbortController();
  const limit: LimitFunction = pLimit(config.concurrency);
  const random = options.random ?? Math.random;
  const checkOnce = options.runCheck ?? runCheck;
  const scheduler = createScheduler({
    random,
    onError: (job, err) => log.error({ err, backend: job.id }, 'check job failed'),
  });
  const runtimes = new Map<string, BackendStatus>();
  let progressAt = performance.now();

  const sync = async (b: BackendStatus, reason: SyncReason) => {
    const up = b.health.state === 'up';
    const outcome = await reconciler.sync(b.spec.target, up, reason);
    if (outcome.confirmed || outcome.wrote) b.written = { up, confirmed: outcome.confirmed, at: Date.now() };
    else if (b.written) b.written.confirmed = false;
    notify('onSync', b, outcome);
    return outcome;
  };

  const check = async (b: BackendStatus) => {
    const spec = b.spec;
    const result = await limit(() => checkOnce(spec.checks, probeTarget(spec), spec.timeout, shutdown.signal));
    if (shutdown.signal.aborted || runtimes.get(spec.id) !== b) return; // aborted checks are no verdict
    progressAt = performance.now();
    const now = Date.now();
    b.last = { ...result, at: now };
    const damped = damp(observe(b.health, result.up, spec), b.damping, config.damping, now);
    const seen = damped.observation;
    b.damping = config.damping ? damped.damping : undefined; // turned off by a reload: no hold lingers
    b.health = seen.health;
    let holdReason: string | undefined;
    let heldFor: number | undefined;
    for (const e of damped.events) {
      const line = { event: `damping_${e.type}`, service: spec.service, backend: spec.name };
      if (e.type === 'hold' && !seen.transition) {
        b.reason = `${e.reason} (the check passed: ${result.detail})`;
        log.warn(
          { ...line, reason: b.reason, until: new Date(e.until).toISOString() },
          `backend ${spec.name} stays down: ${e.reason}`,
        );
      } else if (e.type === 'hold') holdReason = e.reason;
      else if (e.type === 'released') {
        heldFor = e.heldMs;
        log.info({ ...line, heldMs: e.heldMs }, `backend ${spec.name}: flap damping hold ended`);
      } else
        log.debug(
          { ...line, until: new Date(e.until).toISOString() },
          `backend ${spec.name} passes its checks but is held down: ${e.reason}`,
        );
    }
    notify('onCheck', b, result);
    if (seen.transition) {
      const { from, to } = seen.transition;
      b.since = now;
      b.reason =
        to === 'down'
          ? `${seen.health.failures} consecutive failures: ${result.detail}`
          : `${seen.health.successes} consecutive successes: ${result.detail}`;
      if (holdReason) b.reason += `; ${holdReason}`;
      if (heldFor !== undefined && to === 'up') b.reason += ` (after a ${heldFor / 1000}s flap damping hold)`;
      const line = {
        event: 'transition',
        service: spec.service,
        backend: spec.name,
        state: to,
        previous: from,
        reason: b.reason,
        target: spec.target.label,
      };
      if (to === 'down') log.warn(line, `backend ${spec.name} is down: ${b.reason}`);
      else log.info(line, `backend ${spec.name} is up: ${b.reason}`);
      notify('onTransition', b, from, to);
    } else if (log.isLevelEnabled('debug')) {
      // The check path: no log object is built unless someone reads debug.
      log.debug(
        { event: 'check', backend: spec.name, up: result.up, detail: result.detail, latencyMs: result.latencyMs },
        'check',
      );
    }
    await sync(b, seen.transition ? 'change' : 'check');
  };

  const schedule = (b: BackendStatus, firstDelay: number) => {
    scheduler.add(
      {
        id: b.spec.id,
        run: () => check(b),
        nextDelay: () =>
          nextCheckDelay({ health: b.health, since: b.since, heldUntil: b.damping?.heldUntil }, b.spec, Date.now()),
      },
      firstDelay,
    );
  };

  /** Builds runtimes for new backends, adopting the kernel's values when asked to. */
  const newRuntimes = async (specs: BackendSpec[], atStart = false): Promise<BackendStatus[]> => {
    let kernel = new Map<string, BackendState | undefined>();
    if (config.initialState === 'kernel' && specs.length > 0) {
      const read = await writer.read(specs.map((s) => s.target));
      kernel = new Map(
        specs.map((s) => {
          const r = read.get(s.target.key);
          return [s.id, r && !('error' in r) && r.up !== undefined ? (r.up ? 'up' : 'down') : undefined];
        }),
      );
    }
    return specs.map((spec) => {
      const resumed = atStart ? options.restore?.(spec) : undefined;
      if (resumed) return { spec, ...resumed };
      const adopted = kernel.get(spec.id);
      const state: BackendState = config.initialState === 'kernel' ? (adopted ?? 'up') : config.initialState;
      const reason =
        config.initialState !== 'kernel'
          ? `initial state ${state}`
          : adopted
            ? `adopted ${state} from ${spec.target.label}`
            : `${spec.target.label} unreadable or unset: assumed up`;
      return { spec, health: initialHealth(state), since: Date.now(), reason };
    });
  };

  const daemon: Daemon = {
    async start() {
      const fresh = await newRuntimes(resolveBackends(config), true);
      for (const b of fresh) runtimes.set(b.spec.id, b);
      await Promise.all(fresh.map((b) => sync(b, 'start')));
      await Promise.all(fresh.map((b) => check(b)));
      if (shutdown.signal.aborted) return;
      const summary = summarize(fresh);
      log.info({ event: 'ready', backends: fresh.length, summary }, `nf-healthd ready: ${summary}`);
      notify('onReady');
      for (const b of fresh) {
        // Spread the settled ones over one interval; a backend that is changing state goes on at fastInterval.
        schedule(b, isSettling(b.health) ? b.spec.fastInterval : random() * b.spec.interval);
      }
    },

    async reload() {
      notify('onReloading');
      let next: Config;
      try {
        next = loadConfig(options.configPath);
      } catch (err) {
        const problems = err instanceof ConfigError ? err.problems.map(formatProblem) : [String(err)];
        for (const p of problems)
          log.error({ event: 'reload_rejected' }, `config rejected, keeping the running one: ${p}`);
        notify('onReloaded', false, problems);
        return false;
      }
      const writerChanged = JSON.stringify(next.writer) !== JSON.stringify(config.writer);
      config = next;
      if (writerChanged) {
        await reconciler.idle();
        await writer.close?.();
        writer = makeWriter(config);
        reconciler.setWriter(writer);
      }
      if (limit.concurrency !== config.concurrency) limit.concurrency = config.concurrency;
      const specs = resolveBackends(config);
      const wanted = new Set(specs.map((s) => s.id));
      let removed = 0;
      for (const [id, b] of runtimes) {
        if (wanted.has(id)) continue;
        removed++;
        runtimes.delete(id);
        reconciler.forget(b.spec.target.key);
        await scheduler.remove(id);
        log.info(
          { event: 'backend_removed', backend: b.spec.name, service: b.spec.service, target: b.spec.target.label },
          `backend ${b.spec.name} removed from the config: no longer checked; ${b.spec.target.label} is left as it is`,
        );
      }
      const added = specs.filter((s) => !runtimes.has(s.id));
      for (const spec of specs) {
        const b = runtimes.get(spec.id);
        if (!b) continue;
        const moved = b.spec.target.key !== spec.target.key || writerChanged;
        b.spec = spec; // the job reads b.spec on every run: new timing and check apply from the next run
        if (moved) void sync(b, 'start');
      }
      for (const b of await newRuntimes(added)) {
        runtimes.set(b.spec.id, b);
        log.info(
          { event: 'backend_added', backend: b.spec.name, service: b.spec.service, state: b.health.state },
          `backend ${b.spec.name} added, starting ${b.health.state}`,
        );
        await sync(b, 'start');
        schedule(b, 0);
      }
      log.info(
        { event: 'reloaded', backends: runtimes.size, added: added.length, removed },
        `configuration reloaded: ${runtimes.size} backends (${added.length} added, ${removed} removed)`,
      );
      notify('onReloaded', true, []);
      return true;
    },

    async stop() {
      notify('onStopping');
      shutdown.abort();
      await scheduler.stop();
      await reconciler.idle();
      await writer.close?.();
      notify('onStopped');
    },

    backends: () => [...runtimes.values()],
    config: () => config,
    lastProgressAt: () => progressAt,
    scheduler: () => scheduler,
    addObserver: (o) => observers.push(o),
    checksInFlight: () => ({ active: limit.activeCount, pending: limit.pendingCount }),
  };
  return daemon;
}
