import pLimit, { type LimitFunction } from 'p-limit';
import { formatDuration } from './config/duration.js';
import { ConfigError, formatProblem } from './config/load.js';
import type { WriterConfig } from './config/writers.js';
import { type AdminStatus, closestName, eligible } from './health/admin.js';
import { steadyNow } from './health/clock.js';
import { damp } from './health/damping.js';
import { type BackendState, initialHealth, isSettling, observe } from './health/hysteresis.js';
import { WRITER_SLACK_MS, writerTimeout } from './health/liveness.js';
import { nextCheckDelay } from './health/pace.js';
import {
  addCounts,
  describeVerdict,
  ejectionAllowed,
  ejectionLimit,
  NO_COUNTS,
  nextEjection,
  type PassiveCounts,
  passiveVerdict,
  tally,
} from './health/passive.js';
import { createScheduler } from './health/scheduler.js';
import { createBalancer } from './kernel/balancer.js';
import { createKernelLoop, type KernelLoop } from './kernel/loop.js';
import { createPassiveReader } from './kernel/passive-reader.js';
import { createWriter } from './kernel/writers/registry.js';
import type { Writer } from './kernel/writers/types.js';
import type { Logger } from './log.js';
import type { BackendStatus, Daemon, DaemonObserver, ResumedStatus } from './observer.js';
import type { BackendPlan, Plan } from './plan/compile.js';
import { diffPlans, readBackPeriod } from './plan/diff.js';
import { loadPlan } from './plan/load.js';
import { runCheck } from './probes/run.js';
import { prepareCaFiles } from './probes/tls-options.js';

export type { BackendStatus, Daemon, DaemonObserver, ResumedStatus };

export interface DaemonOptions {
  configPath: string;
  log: Logger;
  /** Used instead of reading configPath at start (tests, the demo). */
  plan?: Plan;
  observers?: DaemonObserver[];
  /** Replaces the writer from the config (tests of failure paths). */
  writerFactory?: (writer: WriterConfig) => Writer;
  random?: () => number;
  /** At start: the saved status of an unchanged backend, to resume instead of initialState. */
  restore?: (spec: BackendPlan) => ResumedStatus | undefined;
  /** At start: the saved administrative state of a backend (kept whatever the state file's age). */
  restoreAdmin?: (spec: BackendPlan) => AdminStatus | undefined;
  /** Runs one check; the real probes by default (scheduling tests pass a scripted one). */
  runCheck?: typeof runCheck;
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
  /** Fans a callback out to every observer; one that throws is logged and the rest still run. */
  const emit = <K extends keyof DaemonObserver>(key: K, ...args: Parameters<NonNullable<DaemonObserver[K]>>) => {
    for (const o of observers) {
      try {
        (o[key] as ((...a: unknown[]) => void) | undefined)?.(...args);
      } catch (err) {
        log.error({ event: 'observer_failed', err }, `observer ${key} failed`);
      }
    }
  };
  let plan = options.plan ?? loadPlan(options.configPath);
  const makeWriter = options.writerFactory ?? createWriter;
  const runtimes = new Map<string, BackendStatus>();
  /** Kernel key -> backend, for the writer loop's outcomes. */
  const byKey = new Map<string, BackendStatus>();
  const kernel: KernelLoop = createKernelLoop({
    writer: makeWriter(plan.writer),
    log,
    readBackMs: readBackPeriod(plan),
    stallAfterMs: writerTimeout(plan.writer) + WRITER_SLACK_MS,
    onOutcome(key, up, outcome) {
      const b = byKey.get(key);
      if (!b) return;
      if (outcome.confirmed) b.written = { up, confirmed: true, at: steadyNow() };
      else if (b.written) b.written.confirmed = false;
      emit('onSync', b, outcome);
    },
  });
  /** The services' balancing tables (nft writer): recomputed on transitions, slow start steps and reloads. */
  const balancer = createBalancer({
    log,
    kernel,
    state: (spec) => {
      const b = runtimes.get(spec.id);
      // Drain and maint take a backend out of rotation for new connections, even in panic.
      return { up: b?.health.state === 'up', adminOut: b?.admin !== undefined && b.admin.state !== 'ready' };
    },
    onTable(service, table) {
      for (const spec of service.backends) {
        const b = runtimes.get(spec.id);
        if (b) b.share = { slots: table.shares.get(spec.name) ?? 0, of: table.slots.length, mode: table.mode };
      }
    },
  });
  const shutdown = new AbortController();
  const limit: LimitFunction = pLimit(plan.config.concurrency);
  const random = options.random ?? Math.random;
  const checkOnce = options.runCheck ?? runCheck;
  const scheduler = createScheduler({
    random,
    onError: (job, err) => log.error({ event: 'check_job_failed', err, backend: job.id }, 'check job failed'),
  });
  let progressAt = performance.now();

  /** Hands the backend's wanted state to the writer loop; never waits for the kernel. */
  const want = (b: BackendStatus) => kernel.want(b.spec.target, eligible(b.health.state === 'up', b.admin));

  const track = (b: BackendStatus) => {
    runtimes.set(b.spec.id, b);
    byKey.set(b.spec.target.key, b);
  };
  const untrack = (b: BackendStatus) => {
    runtimes.delete(b.spec.id);
    if (byKey.get(b.spec.target.key) === b) byKey.delete(b.spec.target.key);
  };

  const isCurrent = (b: BackendStatus) => runtimes.get(b.spec.id) === b;
  const inMaintenance = (b: BackendStatus) => b.admin?.state === 'maint';

  const check = async (b: BackendStatus) => {
    if (inMaintenance(b)) return; // maintenance: no connection attempts at all
    const spec = b.spec;
    // A check that waited for a slot past the backend's removal (a reload) never connects.
    const gone = () => !isCurrent(b);
    const result = await limit(() =>
      gone() ? undefined : checkOnce(spec.checks, spec.probe, spec.timeout, shutdown.signal),
    );
    if (!result) return;
    // Aborted checks are no verdict; nor is one that ran while an operator set maintenance.
    if (shutdown.signal.aborted || gone() || inMaintenance(b)) return;
    progressAt = performance.now();
    const now = steadyNow();
    b.last = { ...result, at: now };
    const damping = plan.config.damping;
    // Passively ejected: passes count only once its window is over (then `rise` of them).
    const passiveHeld = b.passive?.heldUntil !== undefined && now < b.passive.heldUntil;
    if (passiveHeld && result.up && log.isLevelEnabled('debug'))
      log.debug(
        { event: 'passive_suppressed', service: spec.service, backend: spec.name },
        `backend ${spec.name} passes its check but was ejected by passive health: counts from ${new Date(b.passive!.heldUntil!).toISOString()}`,
      );
    const damped = damp(observe(b.health, result.up && !passiveHeld, spec), b.damping, damping, now);
    const seen = damped.observation;
    b.damping = damping ? damped.damping : undefined; // turned off by a reload: no hold lingers
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
    emit('onCheck', b, result);
    if (seen.transition) {
      const { from, to } = seen.transition;
      let reason =
        to === 'down'
          ? `${seen.health.failures} consecutive failures: ${result.detail}`
          : `${seen.health.successes} consecutive successes: ${result.detail}`;
      if (holdReason) reason += `; ${holdReason}`;
      if (heldFor !== undefined && to === 'up') reason += ` (after a ${heldFor / 1000}s flap damping hold)`;
      transitioned(b, from, to, reason, now);
    } else if (log.isLevelEnabled('debug')) {
      // The check path: no log object is built unless someone reads debug.
      log.debug(
        { event: 'check', backend: spec.name, up: result.up, detail: result.detail, latencyMs: result.latencyMs },
        'check',
      );
    }
    want(b);
  };

  /** A state change: reason, log line, observers, the balancing table. */
  const transitioned = (b: BackendStatus, from: BackendState, to: BackendState, reason: string, now: number) => {
    const spec = b.spec;
    b.since = now;
    b.reason = reason;
    const line = {
      event: 'transition',
      service: spec.service,
      backend: spec.name,
      state: to,
      previous: from,
      reason,
      target: spec.target.label,
    };
    if (to === 'down') log.warn(line, `backend ${spec.name} is down: ${reason}`);
    else log.info(line, `backend ${spec.name} is up: ${reason}`);
    emit('onTransition', b, from, to);
    balancer.changed(spec, to);
  };

  const isOut = (b: BackendStatus | undefined) =>
    b === undefined || b.health.state !== 'up' || (b.admin !== undefined && b.admin.state !== 'ready');

  /**
   * One read of the passive counters for a backend (docs/passive.md). Failing traffic is
   * evidence: the backend is checked at fastInterval, and with `eject` it goes down at once
   * (as `fall` failed checks would) unless that leaves more than maxEjectPercent of its
   * service out. It comes back through `rise` passing checks once its window is over.
   */
  const passiveCounts = (spec: BackendPlan, read: PassiveCounts, window: PassiveCounts, now: number) => {
    const b = runtimes.get(spec.id);
    const service = plan.services.find((s) => s.name === spec.service);
    const config = service?.passive;
    if (!b || !service || !config) return;
    const verdict = passiveVerdict(window, config);
    const totals = addCounts(b.passive?.totals ?? NO_COUNTS, read);
    // Unanswered since start: monotonic, exact once every answer is in.
    const unanswered = Math.max(b.passive?.totals.unanswered ?? 0, tally(totals).unanswered);
    const p = (b.passive = {
      ...b.passive,
      totals: { ...tally(totals), unanswered },
      latest: verdict,
      windowMs: config.window,
    });
    const fields = { service: spec.service, backend: spec.name, ...verdict.tally };
    if (verdict.kind !== 'failing') {
      // A few connections are no verdict: the episode goes on until the traffic passes, or
      // stops altogether (an ejected backend gets none).
      if (p.failingSince === undefined || (verdict.kind === 'quiet' && verdict.tally.new > 0)) return;
      p.failingSince = undefined;
      p.capped = false;
      log.info(
        { event: 'passive_recovered', ...fields },
        verdict.kind === 'ok'
          ? `backend ${spec.name}: passive: real traffic passes again: ${describeVerdict(verdict, config.window)}`
          : `backend ${spec.name}: passive: no new connections in the latest ${formatDuration(config.window)}: nothing failing to see`,
      );
      return;
    }
    const what = describeVerdict(verdict, config.window);
    if (p.failingSince === undefined) {
      p.failingSince = now;
      log.warn(
        { event: 'passive_failing', ...fields, ratio: verdict.ratio, eject: config.eject },
        `backend ${spec.name}: passive: ${what}, at least ${config.failureRatio}: checking it at fastInterval${config.eject ? '' : ' (passive.eject is off: it stays in)'}`,
      );
    }
    if (!config.eject || isOut(b)) return;
    const out = service.backends.filter((s) => isOut(runtimes.get(s.id))).length;
    if (!ejectionAllowed(service.backends.length, out, config.maxEjectPercent)) {
      if (p.capped) return;
      p.capped = true;
      log.warn(
        { event: 'passive_eject_capped', ...fields, ratio: verdict.ratio, out, backends: service.backends.length },
        `backend ${spec.name}: passive: kept in although failing: ${out} of ${service.backends.length} backends of ${spec.service} are out already and maxEjectPercent ${config.maxEjectPercent} lets passive health take at most ${ejectionLimit(service.backends.length, config.maxEjectPercent)} out`,
      );
      return;
    }
    const previous =
      p.ejections !== undefined && p.heldUntil !== undefined
        ? { ejections: p.ejections, endedAt: p.heldUntil }
        : undefined;
    const ejection = nextEjection(previous, now, config.window, config.maxEjectionTime);
    p.ejections = ejection.ejections;
    p.heldUntil = now + ejection.holdMs;
    b.health = { state: 'down', successes: 0, failures: Math.max(b.health.failures, spec.fall) };
    const inARow = ejection.ejections > 1 ? ` (ejection ${ejection.ejections} in a row)` : '';
    transitioned(b, 'up', 'down', `passive: ${what}; out for ${formatDuration(ejection.holdMs)}${inARow}`, now);
    want(b);
  };
  const passive = createPassiveReader({ log, read: () => kernel.readCounters(), onCounts: passiveCounts });

  const schedule = (b: BackendStatus, firstDelay: number) => {
    scheduler.add(
      {
        id: b.spec.id,
        run: () => check(b),
        nextDelay: () => {
          const heldUntil = Math.max(b.damping?.heldUntil ?? 0, b.passive?.heldUntil ?? 0) || undefined;
          const delay = nextCheckDelay({ health: b.health, since: b.since, heldUntil }, b.spec, steadyNow());
          // Real traffic failing on a backend still in: check it at fastInterval (an ejected one waits out its window).
          const passiveFailing = b.passive?.failingSince !== undefined && b.health.state === 'up';
          return passiveFailing ? Math.min(delay, b.spec.fastInterval) : delay;
        },
      },
      firstDelay,
    );
  };

  /** Builds runtimes for new backends, adopting the kernel's values when asked to. */
  const newRuntimes = async (specs: readonly BackendPlan[], atStart = false): Promise<BackendStatus[]> => {
    const initialState = plan.config.initialState;
    let adopted = new Map<string, BackendState | undefined>();
    if (initialState === 'kernel' && specs.length > 0) {
      const read = await kernel.read(specs.map((s) => s.target));
      adopted = new Map(
        specs.map((s) => {
          const r = read.get(s.target.key);
          return [s.id, r && !('error' in r) && r.up !== undefined ? (r.up ? 'up' : 'down') : undefined];
        }),
      );
    }
    return specs.map((spec) => {
      const admin = atStart ? options.restoreAdmin?.(spec) : undefined;
      const resumed = atStart ? options.restore?.(spec) : undefined;
      if (resumed) return { spec, ...resumed, ...(admin ? { admin } : {}) };
      const found = adopted.get(spec.id);
      const state: BackendState = initialState === 'kernel' ? (found ?? 'up') : initialState;
      const reason =
        initialState !== 'kernel'
          ? `initial state ${state}`
          : found
            ? `adopted ${state} from ${spec.target.label}`
            : `${spec.target.label} unreadable or unset: assumed up`;
      return { spec, health: initialHealth(state), since: steadyNow(), reason, ...(admin ? { admin } : {}) };
    });
  };

  const daemon: Daemon = {
    async start() {
      await prepareCaFiles(plan.caFiles);
      const fresh = await newRuntimes(plan.backends, true);
      for (const b of fresh) {
        track(b);
        want(b);
      }
      balancer.setPlan(plan);
      passive.setPlan(plan);
      await Promise.all(fresh.map((b) => check(b)));
      if (shutdown.signal.aborted) return;
      await kernel.settled();
      if (shutdown.signal.aborted) return;
      const summary = summarize(fresh);
      log.info({ event: 'ready', backends: fresh.length, summary }, `nf-healthd ready: ${summary}`);
      // The scheduler starts now: the wait for the writer above (a commandTimeout per
      // attempt when the tool hangs) is the writer's to report, not a stalled scheduler.
      progressAt = performance.now();
      emit('onReady');
      for (const b of fresh) {
        // Spread the settled ones over one interval; a backend that is changing state goes on at fastInterval.
        schedule(b, isSettling(b.health) ? b.spec.fastInterval : random() * b.spec.interval);
      }
    },

    async reload() {
      emit('onReloading');
      let next: Plan;
      try {
        next = loadPlan(options.configPath);
      } catch (err) {
        const problems = err instanceof ConfigError ? err.problems.map(formatProblem) : [String(err)];
        for (const p of problems)
          log.error({ event: 'reload_rejected' }, `config rejected, keeping the running one: ${p}`);
        emit('onReloaded', false, problems);
        return false;
      }
      await prepareCaFiles(next.caFiles);
      const diff = diffPlans(plan, next);
      plan = next;
      if (diff.writerChanged) await kernel.setWriter(makeWriter(plan.writer));
      kernel.setReadBack(readBackPeriod(plan));
      if (limit.concurrency !== plan.config.concurrency) limit.concurrency = plan.config.concurrency;
      for (const spec of diff.removed) {
        const b = runtimes.get(spec.id);
        if (!b) continue;
        untrack(b);
        kernel.forget(b.spec.target.key);
        await scheduler.remove(spec.id);
        log.info(
          { event: 'backend_removed', backend: b.spec.name, service: b.spec.service, target: b.spec.target.label },
          `backend ${b.spec.name} removed from the config: no longer checked; ${b.spec.target.label} is left as it is`,
        );
      }
      for (const { after, moved } of diff.kept) {
        const b = runtimes.get(after.id);
        if (!b) continue;
        if (moved) {
          untrack(b);
          if (!diff.writerChanged) kernel.forget(b.spec.target.key);
        }
        b.spec = after; // the job reads b.spec on every run: new timing and check apply from the next run
        if (moved) {
          track(b);
          want(b);
        }
      }
      for (const b of await newRuntimes(diff.added)) {
        track(b);
        log.info(
          { event: 'backend_added', backend: b.spec.name, service: b.spec.service, state: b.health.state },
          `backend ${b.spec.name} added, starting ${b.health.state}`,
        );
        want(b);
        schedule(b, 0);
      }
      balancer.setPlan(plan);
      passive.setPlan(plan);
      for (const b of runtimes.values()) if (!b.spec.passive) delete b.passive;
      // As at start: READY=1 (and `reloaded`) once the new Plan's keys were attempted, so
      // `systemctl reload` returns with added backends and moved targets in the kernel.
      await kernel.settled();
      log.info(
        { event: 'reloaded', backends: runtimes.size, added: diff.added.length, removed: diff.removed.length },
        `configuration reloaded: ${runtimes.size} backends (${diff.added.length} added, ${diff.removed.length} removed)`,
      );
      emit('onReloaded', true, []);
      return true;
    },

    async stop() {
      emit('onStopping');
      shutdown.abort();
      await scheduler.stop();
      passive.stop();
      balancer.stop();
      await kernel.stop();
      emit('onStopped');
    },

    backends: () => [...runtimes.values()],
    isCurrent,
    plan: () => plan,
    config: () => plan.config,
    lastProgressAt: () => progressAt,
    scheduler: () => scheduler,
    writerHealth: () => kernel.health(),
    addObserver: (o) => observers.push(o),
    async setAdmin(id, state, deadlineMs) {
      const b = runtimes.get(id);
      if (!b) {
        const suggestion = closestName(id, runtimes.keys());
        return { ok: false, problem: `no backend ${id} in the running config`, ...(suggestion ? { suggestion } : {}) };
      }
      const previous = b.admin?.state ?? 'ready';
      const now = steadyNow();
      if (previous === 'maint' && state !== 'maint') {
        // Nothing was checked during maintenance: it has to earn `up` again, `rise` checks in a row.
        b.health = initialHealth('down');
        b.since = now;
        b.reason = `out of maintenance: up after ${b.spec.rise} passing checks`;
      }
      b.admin =
        state === 'ready'
          ? undefined
          : {
              state,
              since: now,
              ...(state === 'drain' && deadlineMs !== undefined ? { deadline: now + deadlineMs } : {}),
            };
      log.info(
        { event: 'admin_state', service: b.spec.service, backend: b.spec.name, state, previous, deadlineMs },
        `backend ${b.spec.name} set ${state} (was ${previous})${deadlineMs === undefined ? '' : `, flows left after ${deadlineMs / 1000}s are deleted`}`,
      );
      want(b);
      balancer.changed(b.spec);
      await kernel.settled();
      emit('onAdmin', b, previous);
      return { ok: true, backend: b, previous };
    },
    checksInFlight: () => ({ active: limit.activeCount, pending: limit.pendingCount }),
  };
  return daemon;
}
