import { createHash } from 'node:crypto';
import type { BackendPlan, ServicePlan } from '../plan/compile.js';
import { weightedSlots } from '../plan/kernel-names.js';

/**
 * The balancing table of a service: slot -> backend mark, `balancing.slots` slots, the
 * kernel's lookup (`numgen inc mod S map @slots_<service>`, or a jhash) picks a slot per
 * new connection. A pure function of the Plan and the backends' wanted states, so tests
 * and `nf-healthd rules` call it without a kernel, and two balancers with the same config
 * and the same states compute the same table.
 *
 * Every primary backend has "home" slots (its share when all are up: interleaved for
 * roundrobin/random, Maglev's population for maglev). A backend keeps as many of its
 * home slots as its current share allows; the slots left over (a dead backend's, a
 * ramping backend's unused ones) are dealt to the backends short of their share in
 * proportion to what they lack. So a dead backend's share spreads over every survivor
 * by weight, only its slots move, and it gets exactly its own slots back on return.
 */

/** What health (and, later, admin state) says about one backend. */
export interface BackendWant {
  /** Health: passes its checks. */
  up: boolean;
  /** Administratively out of rotation for new connections (drain, maint): no slots, not even in panic. */
  adminOut?: boolean;
  /** Slow start: the part of its weight it has now (0.1 .. 1); undefined: all of it. */
  ramp?: number;
}

/** normal: live primaries; backup: no primary up, the backups serve; panic: below the threshold, all serve; reject: nobody. */
export type TableMode = 'normal' | 'backup' | 'panic' | 'reject';

export interface ServiceTable {
  readonly service: string;
  readonly mode: TableMode;
  /** Mark per slot; 0: no backend (the rules answer with a TCP reset). */
  readonly slots: Uint32Array;
  /** Slots per backend name (backends with none are absent). */
  readonly shares: ReadonlyMap<string, number>;
}

/** Hamilton's method: `total` split in proportion to `weights`, remainders by size, ties to the earlier index. */
export function apportion(total: number, weights: readonly number[]): number[] {
  const sum = weights.reduce((a, b) => a + b, 0);
  if (sum <= 0) return weights.map(() => 0);
  const exact = weights.map((w) => (total * w) / sum);
  const counts = exact.map(Math.floor);
  let left = total - counts.reduce((a, b) => a + b, 0);
  const order = exact.map((e, i) => ({ i, r: e - Math.floor(e) })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of order) {
    if (left <= 0) break;
    counts[i]!++;
    left--;
  }
  return counts;
}

function hash32(tag: string, name: string): number {
  return createHash('sha256').update(`${tag}:${name}`).digest().readUInt32BE(0);
}

/**
 * Maglev's lookup-table population (Eisenbud et al., NSDI 2016, section 3.4): each
 * backend walks its own permutation of the slots (offset and skip from two hashes of its
 * NAME) and takes its next free slot in turn; a backend with more weight takes more turns
 * (smooth weighted round robin of the counts). `slots` must be prime. Returns, per backend,
 * its slots in the order it claimed them (its preference order).
 */
export function maglevPopulate(names: readonly string[], counts: readonly number[], slots: number): number[][] {
  const offset = names.map((n) => hash32('maglev-offset', n) % slots);
  const skip = names.map((n) => (hash32('maglev-skip', n) % (slots - 1)) + 1);
  const next = names.map(() => 0);
  const taken = new Uint8Array(slots);
  const claimed: number[][] = names.map(() => []);
  for (const i of weightedSlots(counts)) {
    let c: number;
    do {
      c = (offset[i]! + next[i]! * skip[i]!) % slots;
      next[i]!++;
    } while (taken[c]);
    taken[c] = 1;
    claimed[i]!.push(c);
  }
  return claimed;
}

/** Home slots per backend index of the service (primaries only; backups have none), cached per Plan object. */
const homes = new WeakMap<ServicePlan, number[][]>();

function homeSlots(service: ServicePlan): number[][] {
  const cached = homes.get(service);
  if (cached) return cached;
  const { slots, scheduler } = service.balancing;
  const order = processingOrder(service);
  const primary = order.filter((i) => !service.backends[i]!.backup);
  const counts = apportion(
    slots,
    primary.map((i) => service.backends[i]!.weight),
  );
  const result: number[][] = service.backends.map(() => []);
  if (scheduler === 'maglev') {
    const claimed = maglevPopulate(
      primary.map((i) => service.backends[i]!.name),
      counts,
      slots,
    );
    primary.forEach((bi, k) => {
      result[bi] = claimed[k]!;
    });
  } else {
    weightedSlots(counts).forEach((k, slot) => {
      result[primary[k]!]!.push(slot);
    });
  }
  homes.set(service, result);
  return result;
}

/** Config order, or name order for maglev: its table must not depend on where a backend is listed. */
function processingOrder(service: ServicePlan): number[] {
  const order = service.backends.map((_, i) => i);
  if (service.balancing.scheduler === 'maglev') {
    const names = service.backends.map((b) => b.name);
    order.sort((a, b) => (names[a]! < names[b]! ? -1 : names[a]! > names[b]! ? 1 : 0));
  }
  return order;
}

/** `take` of `list`, evenly spaced for roundrobin; the first `take` (most preferred) for maglev. */
function keepOf(list: readonly number[], take: number, preferFirst: boolean): number[] {
  if (take >= list.length) return [...list];
  if (preferFirst) return list.slice(0, take);
  const kept: number[] = [];
  for (let k = 0; k < list.length; k++) {
    if (Math.floor(((k + 1) * take) / list.length) > Math.floor((k * take) / list.length)) kept.push(list[k]!);
  }
  return kept;
}

/** Whom the service serves now, with which weight, and in which mode. */
function servingWeights(
  service: ServicePlan,
  want: (b: BackendPlan) => BackendWant,
): { mode: TableMode; weights: number[] } {
  const wants = service.backends.map(want);
  const eligible = (i: number) => wants[i]!.up && !wants[i]!.adminOut;
  const effective = (i: number) => service.backends[i]!.weight * Math.min(1, Math.max(0, wants[i]!.ramp ?? 1));
  const isPrimary = service.backends.map((b) => !b.backup);
  let primaryWeight = 0;
  let livePrimaryWeight = 0;
  service.backends.forEach((b, i) => {
    if (!isPrimary[i]) return;
    primaryWeight += b.weight;
    if (eligible(i)) livePrimaryWeight += b.weight;
  });
  const anyBackupUp = service.backends.some((_, i) => !isPrimary[i] && eligible(i));
  const threshold = service.balancing.panicThreshold;
  if (livePrimaryWeight === 0 && anyBackupUp)
    return {
      mode: 'backup',
      weights: service.backends.map((_, i) => (!isPrimary[i] && eligible(i) ? effective(i) : 0)),
    };
  if (threshold !== undefined && livePrimaryWeight * 100 < threshold * primaryWeight) {
    // Envoy's panic mode: spreading over all beats overloading the few (checks may be what is broken).
    const weights = service.backends.map((b, i) => (isPrimary[i] && !wants[i]!.adminOut ? b.weight : 0));
    if (weights.some((w) => w > 0)) return { mode: 'panic', weights };
  }
  if (livePrimaryWeight > 0)
    return {
      mode: 'normal',
      weights: service.backends.map((_, i) => (isPrimary[i] && eligible(i) ? effective(i) : 0)),
    };
  return { mode: 'reject', weights: service.backends.map(() => 0) };
}

/** The service's table for the backends' wanted states. */
export function computeTable(service: ServicePlan, want: (b: BackendPlan) => BackendWant): ServiceTable {
  const size = service.balancing.slots;
  const { mode, weights } = servingWeights(service, want);
  const table = new Uint32Array(size);
  const shares = new Map<string, number>();
  if (mode === 'reject') return { service: service.name, mode, slots: table, shares };
  const order = processingOrder(service);
  const targets = new Array<number>(service.backends.length).fill(0);
  apportion(
    size,
    order.map((i) => weights[i]!),
  ).forEach((count, k) => {
    targets[order[k]!] = count;
  });
  const home = homeSlots(service);
  const owner = new Int32Array(size).fill(-1);
  const preferFirst = service.balancing.scheduler === 'maglev';
  const lacking = targets.map((t) => t);
  service.backends.forEach((_, i) => {
    const kept = keepOf(home[i]!, targets[i]!, preferFirst);
    for (const slot of kept) owner[slot] = i;
    lacking[i] = targets[i]! - kept.length;
  });
  // The free slots in slot order, dealt by smooth weighted round robin of what each lacks:
  // exactly what each lacks, interleaved (short runs of roundrobin stay even).
  const deal = weightedSlots(order.map((i) => lacking[i]!));
  let next = 0;
  for (let slot = 0; slot < size; slot++) {
    if (owner[slot] === -1) owner[slot] = order[deal[next++]!]!;
  }
  for (let slot = 0; slot < size; slot++) {
    const b = service.backends[owner[slot]!]!;
    table[slot] = b.kernel.mark;
    shares.set(b.name, (shares.get(b.name) ?? 0) + 1);
  }
  return { service: service.name, mode, slots: table, shares };
}

/** Slots whose mark differs (every slot when `before` is unknown or of another size). */
export function changedSlots(before: Uint32Array | undefined, after: Uint32Array): number[] {
  const changed: number[] = [];
  for (let k = 0; k < after.length; k++) {
    if (!before || before.length !== after.length || before[k] !== after[k]) changed.push(k);
  }
  return changed;
}

/**
 * Slow start: the part of its weight a backend that came up `elapsed` ms ago has, from
 * 10 % to all of it over `period`, in SLOW_START_STEPS equal steps (each one table write).
 */
export const SLOW_START_STEPS = 10;
export function rampAt(elapsed: number, period: number): number | undefined {
  if (period <= 0 || elapsed >= period) return undefined;
  const step = Math.floor((Math.max(0, elapsed) / period) * SLOW_START_STEPS);
  return 0.1 + (0.9 * step) / SLOW_START_STEPS;
}

/** When the ramp next changes (ms after it started), or undefined once it is done. */
export function nextRampStep(elapsed: number, period: number): number | undefined {
  if (period <= 0 || elapsed >= period) return undefined;
  const step = Math.floor((Math.max(0, elapsed) / period) * SLOW_START_STEPS) + 1;
  return (step * period) / SLOW_START_STEPS;
}
