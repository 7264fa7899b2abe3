import { isDeepStrictEqual } from 'node:util';
import type { BackendPlan, Plan } from './compile.js';

/** What a reload changes: backends by id, and whether the kernel mechanism itself changed. */
export interface PlanDiff {
  added: BackendPlan[];
  removed: BackendPlan[];
  /** In both plans; `moved` when its kernel key changed (so the old key is left and the new one written). */
  kept: { before: BackendPlan; after: BackendPlan; moved: boolean }[];
  /** `writer:` differs: a new writer is made and every target written through it. */
  writerChanged: boolean;
}

export function diffPlans(before: Plan, after: Plan): PlanDiff {
  const writerChanged = !isDeepStrictEqual(before.writer, after.writer);
  const added: BackendPlan[] = [];
  const kept: PlanDiff['kept'] = [];
  for (const b of after.backends) {
    const old = before.byId.get(b.id);
    if (!old) added.push(b);
    else kept.push({ before: old, after: b, moved: writerChanged || old.target.key !== b.target.key });
  }
  const removed = before.backends.filter((b) => !after.byId.has(b.id));
  return { added, removed, kept, writerChanged };
}

/** How often the writer loop reads the kernel back: the shortest check interval, within 250 ms to 60 s. */
export function readBackPeriod(plan: Plan): number {
  let shortest = Number.POSITIVE_INFINITY;
  for (const b of plan.backends) shortest = Math.min(shortest, b.interval);
  return Math.min(60_000, Math.max(250, Number.isFinite(shortest) ? shortest : 2000));
}
