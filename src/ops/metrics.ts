/**
 * Prometheus metrics on a private prom-client Registry (never the global one, so
 * tests and several daemons in one process do not collide). Labels are service,
 * backend, check type, outcome and state only: bounded by the config, never a detail
 * string. Series of backends removed by a reload are dropped.
 */
import { Counter, collectDefaultMetrics, Gauge, type Histogram, Registry } from 'prom-client';
import { steadyNow } from '../health/clock.js';
import { isHeld } from '../health/damping.js';
import type { BackendStatus, Daemon, DaemonObserver } from '../observer.js';
import { checkLabel } from '../probes/run.js';
import { type CheckRecord, createCheckCounters } from './check-counters.js';
import { registerPassiveMetrics } from './passive-metrics.js';

export interface Metrics {
  registry: Registry;
  observer: DaemonObserver;
  /** Notify hook runs, by hook (up, down, change) and outcome (ok, failed, timeout, coalesced). */
  hookRuns: Counter<'hook' | 'outcome'>;
  /** Counts a draining backend whose last open flow went away (its series goes with the backend on reload). */
  countDrained(b: BackendStatus): void;
}

type Series = { metric: Counter<string> | Histogram<string>; labels: Record<string, string> };
type Tracked = { name: string; metric: Counter<string> | Histogram<string> };

const byDaemon = new WeakMap<object, Metrics>();

/** One set of metrics per daemon, shared by the HTTP listener and the hooks. */
export function metricsFor(daemon: Daemon): Metrics {
  let m = byDaemon.get(daemon);
  if (!m) {
    m = createMetrics(daemon);
    byDaemon.set(daemon, m);
  }
  return m;
}

export function createMetrics(daemon: Daemon, options: { processMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const backendLabels = ['service', 'backend'] as const;

  // Per check: plain numbers, made into series at scrape time (check-counters.ts).
  const checkCounters = createCheckCounters();
  for (const metric of checkCounters.metrics) registry.registerMetric(metric);
  const transitions = new Counter({
    name: 'nfh_transitions_total',
    help: 'Backend state changes, by the state entered',
    labelNames: [...backendLabels, 'to'],
    registers,
  });
  const writeFailures = new Counter({
    name: 'nfh_writer_failures_total',
    help: 'Failed attempts to make the kernel hold a backend state (retried on the next check)',
    labelNames: backendLabels,
    registers,
  });
  const drifts = new Counter({
    name: 'nfh_drifts_repaired_total',
    help: 'Times the kernel held another value than ours (rules reloaded, written by hand) and we set it back',
    labelNames: backendLabels,
    registers,
  });
  const reloads = new Counter({
    name: 'nfh_reloads_total',
    help: 'Configuration reloads, by outcome',
    labelNames: ['outcome'],
    registers,
  });
  const hookRuns = new Counter({
    name: 'nfh_notify_hook_runs_total',
    help: 'Notify hook runs, by hook and outcome',
    labelNames: ['hook', 'outcome'],
    registers,
  });

  registerPassiveMetrics(registers, daemon);
  new Gauge({
    name: 'nfh_backend_up',
    help: 'Backend state as written to the kernel side: 1 up, 0 down',
    labelNames: backendLabels,
    registers,
    collect() {
      this.reset();
      for (const b of daemon.backends())
        this.set({ service: b.spec.service, backend: b.spec.name }, b.health.state === 'up' ? 1 : 0);
    },
  });
  const drained = new Counter({
    name: 'nfh_drained_total',
    help: 'Times a draining backend reached 0 open connections',
    labelNames: backendLabels,
    registers,
  });
  new Gauge({
    name: 'nfh_backend_connections',
    help: "Open flows in conntrack carrying the backend's mark (not TIME_WAIT or CLOSE), at the latest count",
    labelNames: backendLabels,
    registers,
    collect() {
      this.reset();
      for (const b of daemon.backends())
        if (b.connections !== undefined) this.set({ service: b.spec.service, backend: b.spec.name }, b.connections);
    },
  });
  for (const [name, state, help] of [
    ['nfh_backend_draining', 'drain', '1 while an operator drains the backend (no new connections)'],
    ['nfh_backend_maintenance', 'maint', '1 while the backend is in maintenance (no new connections, no checks)'],
  ] as const)
    new Gauge({
      name,
      help,
      labelNames: backendLabels,
      registers,
      collect() {
        this.reset();
        for (const b of daemon.backends())
          this.set({ service: b.spec.service, backend: b.spec.name }, b.admin?.state === state ? 1 : 0);
      },
    });
  new Gauge({
    name: 'nfh_backend_slots',
    help: "Slots of its service's balancing table the backend holds (nft writer): its share of new connections is this over nfh_service_slots",
    labelNames: backendLabels,
    registers,
    collect() {
      this.reset();
      for (const b of daemon.backends())
        if (b.share) this.set({ service: b.spec.service, backend: b.spec.name }, b.share.slots);
    },
  });
  new Gauge({
    name: 'nfh_service_slots',
    help: "Slots of the service's balancing table (nft writer)",
    labelNames: ['service'],
    registers,
    collect() {
      this.reset();
      for (const b of daemon.backends()) if (b.share) this.set({ service: b.spec.service }, b.share.of);
    },
  });
  new Gauge({
    name: 'nfh_service_mode',
    help: "1 for the mode the service's balancing table is in: normal, backup (no primary up), panic (below panicThreshold), reject (nobody to serve)",
    labelNames: ['service', 'mode'],
    registers,
    collect() {
      this.reset();
      const modes = new Map<string, string>();
      for (const b of daemon.backends()) if (b.share) modes.set(b.spec.service, b.share.mode);
      for (const [service, current] of modes)
        for (const mode of ['normal', 'backup', 'panic', 'reject'])
          this.set({ service, mode }, mode === current ? 1 : 0);
    },
  });
  new Gauge({
    name: 'nfh_backend_held',
    help: '1 while flap damping holds the backend down',
    labelNames: backendLabels,
    registers,
    collect() {
      this.reset();
      const now = steadyNow();
      for (const b of daemon.backends())
        this.set({ service: b.spec.service, backend: b.spec.name }, isHeld(b.damping, now) ? 1 : 0);
    },
  });
  new Gauge({
    name: 'nfh_backend_state_since_seconds',
    help: "Unix time of the backend's latest state change",
    labelNames: backendLabels,
    registers,
    collect() {
      this.reset();
      for (const b of daemon.backends()) this.set({ service: b.spec.service, backend: b.spec.name }, b.since / 1000);
    },
  });
  new Gauge({
    name: 'nfh_checks_in_flight',
    help: 'Checks holding a concurrency slot now',
    registers,
    collect() {
      this.set(daemon.checksInFlight().active);
    },
  });
  new Gauge({
    name: 'nfh_checks_waiting',
    help: 'Checks due but waiting for a concurrency slot',
    registers,
    collect() {
      this.set(daemon.checksInFlight().pending);
    },
  });
  new Gauge({
    name: 'nfh_scheduling_lag_seconds',
    help: 'How late the latest check started against its plan',
    registers,
    collect() {
      this.set(daemon.scheduler().lastLagMs() / 1000);
    },
  });
  new Gauge({
    name: 'nfh_last_check_age_seconds',
    help: 'Seconds since the latest completed check',
    registers,
    collect() {
      this.set(Math.max(0, (performance.now() - daemon.lastProgressAt()) / 1000));
    },
  });

  // Label sets used per backend, so a reload that removes a backend removes its series.
  const series = new Map<string, Map<string, Series>>();
  const track = ({ name, metric }: Tracked, id: string, labels: Record<string, string>) => {
    let mine = series.get(id);
    if (!mine) series.set(id, (mine = new Map()));
    const key = `${name}${JSON.stringify(labels)}`;
    if (!mine.has(key)) mine.set(key, { metric, labels });
  };

  /** Each backend plan's check record: a reload gives kept backends new plans, looked up again by id. */
  const recordOf = new WeakMap<BackendStatus['spec'], CheckRecord>();

  const observer: DaemonObserver = {
    onCheck(b, result) {
      const spec = b.spec;
      let record = recordOf.get(spec);
      if (record === undefined) {
        record = checkCounters.record(spec.id, spec.service, spec.name, checkLabel(spec.checks));
        recordOf.set(spec, record);
      }
      checkCounters.observe(record, result.up, result.latencyMs / 1000);
    },
    onTransition(b, _from, to) {
      const labels = { service: b.spec.service, backend: b.spec.name, to };
      transitions.inc(labels);
      track({ name: 'transitions', metric: transitions }, b.spec.id, labels);
    },
    onSync(b, outcome) {
      const labels = { service: b.spec.service, backend: b.spec.name };
      if (outcome.error) {
        writeFailures.inc(labels);
        track({ name: 'writeFailures', metric: writeFailures }, b.spec.id, labels);
      }
      if (outcome.drift) {
        drifts.inc(labels);
        track({ name: 'drifts', metric: drifts }, b.spec.id, labels);
      }
    },
    onReloaded(ok) {
      reloads.inc({ outcome: ok ? 'applied' : 'rejected' });
      if (!ok) return;
      const current = new Map(daemon.backends().map((b) => [b.spec.id, b]));
      checkCounters.retain((id, record) => {
        const b = current.get(id);
        return b !== undefined && record.type === checkLabel(b.spec.checks);
      });
      for (const [id, mine] of series) {
        const b = current.get(id);
        for (const [key, s] of mine) {
          // Gone, or renamed labels (a new check type): the old series would be reported forever.
          if (b && s.labels.type === undefined) continue;
          if (b && s.labels.type === checkLabel(b.spec.checks)) continue;
          s.metric.remove(s.labels);
          mine.delete(key);
        }
        if (mine.size === 0) series.delete(id);
      }
    },
  };
  const countDrained = (b: BackendStatus) => {
    const labels = { service: b.spec.service, backend: b.spec.name };
    drained.inc(labels);
    track({ name: 'drained', metric: drained }, b.spec.id, labels);
  };
  return { registry, observer, hookRuns, countDrained };
}
