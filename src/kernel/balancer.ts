import type { Logger } from '../log.js';
import type { BackendPlan, Plan, ServicePlan } from '../plan/compile.js';
import { formatMark } from '../plan/kernel-names.js';
import type { KernelLoop } from './loop.js';
import { type BackendWant, computeTable, nextRampStep, rampAt, type ServiceTable, type TableMode } from './table.js';

/**
 * Keeps every service's balancing table (src/kernel/table.ts) in step with the backends'
 * wanted states and hands it to the writer loop: on a state change, on a slow start step
 * (its own timers, never a check), on a reload. Says in the log where a dead backend's
 * share went and when a service panics or falls back on its backups. Active only with a
 * writer that keeps tables (nft); with the others the rules' own split applies.
 */
export interface Balancer {
  /** The Plan at start or after a reload: every table computed again; maps of removed services forgotten. */
  setPlan(plan: Plan): void;
  /** A backend's wanted state changed (`to`: its new health state, for slow start and the log line). */
  changed(backend: BackendPlan, to?: 'up' | 'down'): void;
  /** The table in force for a service (undefined: no table kept). */
  table(service: string): ServiceTable | undefined;
  stop(): void;
}

export interface BalancerOptions {
  log: Logger;
  kernel: Pick<KernelLoop, 'wantTable' | 'forgetTable'>;
  /** A backend's wanted state now: health, and (later) admin state. */
  state(backend: BackendPlan): Omit<BackendWant, 'ramp'>;
  /** After each new table, for status and metrics. */
  onTable?(service: ServicePlan, table: ServiceTable): void;
  now?: () => number;
}

const MODE_EVENTS: Record<TableMode, { event: string; text: (s: ServicePlan) => string }> = {
  normal: {
    event: 'balancing_normal',
    text: (s) => `service ${s.name}: new connections go to its live primary backends again`,
  },
  backup: {
    event: 'backup_active',
    text: (s) => `service ${s.name}: no primary backend is up; its backup backends take the new connections`,
  },
  panic: {
    event: 'panic_started',
    text: (s) =>
      `service ${s.name} panics: the live primary weight is below ${s.balancing.panicThreshold} %, so new connections spread over every backend not taken out by hand, live or not`,
  },
  reject: {
    event: 'service_rejecting',
    text: (s) => `service ${s.name}: no backend can serve; new connections get a TCP reset from the balancer`,
  },
};

export function createBalancer(options: BalancerOptions): Balancer {
  const { log } = options;
  const now = options.now ?? Date.now;
  let plan: Plan | undefined;
  let active = false;
  const tables = new Map<string, ServiceTable>();
  /** When a backend came up, while it ramps (slow start). */
  const rampFrom = new Map<string, number>();
  const timers = new Map<string, NodeJS.Timeout>();
  const target = (s: ServicePlan) => {
    const w = plan!.writer;
    const where = w.type === 'nft' ? `${w.family} ${w.table} ` : '';
    return { key: s.balancing.map, label: `nft map ${where}${s.balancing.map}` };
  };

  const wantOf =
    (at: number) =>
    (b: BackendPlan): BackendWant => {
      const state = options.state(b);
      const from = rampFrom.get(b.id);
      if (from === undefined) return state;
      const ramp = rampAt(at - from, b.slowStart);
      if (ramp === undefined) rampFrom.delete(b.id);
      return ramp === undefined ? state : { ...state, ramp };
    };

  const scheduleRamp = (s: ServicePlan, at: number) => {
    clearTimeout(timers.get(s.name));
    timers.delete(s.name);
    let next = Number.POSITIVE_INFINITY;
    for (const b of s.backends) {
      const from = rampFrom.get(b.id);
      if (from === undefined) continue;
      const step = nextRampStep(at - from, b.slowStart);
      if (step !== undefined) next = Math.min(next, from + step);
    }
    if (!Number.isFinite(next)) return;
    const timer = setTimeout(
      () => {
        timers.delete(s.name);
        update(s);
      },
      Math.max(0, next - at),
    );
    timer.unref();
    timers.set(s.name, timer);
  };

  /** "a 100 slots to b (50), c (50)": where the slots that changed hands went. */
  const movement = (s: ServicePlan, before: ServiceTable, after: ServiceTable): string => {
    const nameOf = new Map(s.backends.map((b) => [b.kernel.mark, b.name]));
    const flows = new Map<string, Map<string, number>>();
    for (let k = 0; k < after.slots.length; k++) {
      if (before.slots[k] === after.slots[k]) continue;
      const from = nameOf.get(before.slots[k]!) ?? formatMark(before.slots[k]!);
      const to = nameOf.get(after.slots[k]!) ?? 'reset';
      const row = flows.get(from) ?? new Map<string, number>();
      row.set(to, (row.get(to) ?? 0) + 1);
      flows.set(from, row);
    }
    return [...flows]
      .map(([from, row]) => {
        const total = [...row.values()].reduce((a, b) => a + b, 0);
        return `${total} slots of ${from === '0x0' ? 'nobody' : from} to ${[...row].map(([to, n]) => `${to} (${n})`).join(', ')}`;
      })
      .join('; ');
  };

  const update = (s: ServicePlan, cause?: { backend: BackendPlan; to: 'up' | 'down' }) => {
    const at = now();
    const table = computeTable(s, wantOf(at));
    const before = tables.get(s.name);
    tables.set(s.name, table);
    scheduleRamp(s, at);
    options.kernel.wantTable(target(s), table.slots);
    options.onTable?.(s, table);
    if (before && before.mode !== table.mode) {
      const { event: name, text } = MODE_EVENTS[table.mode];
      const line = { event: name, service: s.name, mode: table.mode, previous: before.mode };
      if (table.mode === 'normal') log.info(line, text(s));
      else if (table.mode === 'reject') log.error(line, text(s));
      else log.warn(line, text(s));
      if (before.mode === 'panic')
        log.info({ event: 'panic_ended', service: s.name, mode: table.mode }, `service ${s.name} no longer panics`);
    }
    if (before && cause) {
      const moved = movement(s, before, table);
      if (moved === '') return;
      const share = (name: string) => `${table.shares.get(name) ?? 0}/${table.slots.length}`;
      const head =
        cause.to === 'down'
          ? `backend ${cause.backend.name} is down`
          : `backend ${cause.backend.name} is up (${share(cause.backend.name)} slots${rampFrom.has(cause.backend.id) ? ', slow start begins' : ''})`;
      log.info(
        {
          event: 'table_changed',
          service: s.name,
          backend: cause.backend.name,
          mode: table.mode,
          shares: Object.fromEntries(table.shares),
        },
        `service ${s.name}: ${head}: ${moved}`,
      );
    }
  };

  return {
    setPlan(next) {
      const before = plan;
      plan = next;
      active = next.writer.type === 'nft';
      const names = new Set(next.services.map((s) => s.name));
      for (const s of before?.services ?? []) {
        if (names.has(s.name) && active) continue;
        options.kernel.forgetTable(s.balancing.map);
        tables.delete(s.name);
        clearTimeout(timers.get(s.name));
        timers.delete(s.name);
      }
      if (!active) return;
      for (const s of next.services) update(s);
    },
    changed(backend, to) {
      if (!active || !plan) return;
      const s = plan.services.find((x) => x.name === backend.service);
      if (!s) return;
      if (to === 'up' && backend.slowStart > 0) rampFrom.set(backend.id, now());
      else if (to === 'down') rampFrom.delete(backend.id);
      update(s, to ? { backend, to } : undefined);
    },
    table: (service) => tables.get(service),
    stop() {
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
    },
  };
}
