import { steadyNow } from '../health/clock.js';
import { type CountWindow, createCountWindow, type PassiveCounts, passiveReadPeriod } from '../health/passive.js';
import type { Logger } from '../log.js';
import type { BackendPlan, Plan } from '../plan/compile.js';

/**
 * Reads the passive counters (docs/passive.md): one `nft -j reset counters table` per
 * period for every backend of every service with `passive`, so the cost does not grow with
 * the checks. Each read's counts go into the backend's sliding window; `onCounts` gets the
 * read's counts and the window's sum. A failed read is logged once per episode.
 */
export interface PassiveReader {
  setPlan(plan: Plan): void;
  stop(): void;
}

export interface PassiveReaderOptions {
  log: Logger;
  /** The writer's counters by name, read and zeroed; undefined: the writer keeps none. */
  read(): Promise<Map<string, number>> | undefined;
  onCounts(spec: BackendPlan, read: PassiveCounts, window: PassiveCounts, now: number): void;
}

export function createPassiveReader(options: PassiveReaderOptions): PassiveReader {
  const { log } = options;
  let specs: BackendPlan[] = [];
  const windows = new Map<string, { ms: number; window: CountWindow }>();
  let timer: NodeJS.Timeout | undefined;
  let period: number | undefined;
  let reading = false;
  let failing: string | undefined;

  const tick = async () => {
    if (reading) return; // a slow read: skip a beat rather than pile up nft processes
    reading = true;
    let counters: Map<string, number> | undefined;
    try {
      counters = await options.read();
      if (failing !== undefined) {
        failing = undefined;
        log.info({ event: 'passive_read_recovered' }, 'the passive counters can be read again');
      }
    } catch (err) {
      const detail = err instanceof Error ? err.message : String(err);
      if (failing !== detail) {
        failing = detail;
        log.error(
          { event: 'passive_read_failed', detail },
          `cannot read the passive counters: ${detail}: no passive verdicts until it works (are the rules loaded? nf-healthd rules --format nft)`,
        );
      }
    } finally {
      reading = false;
    }
    if (!counters) return;
    const now = steadyNow();
    for (const spec of specs) {
      const names = spec.passive!;
      const counts = {
        new: counters.get(names.new) ?? 0,
        answered: counters.get(names.answered) ?? 0,
        reset: counters.get(names.reset) ?? 0,
      };
      const w = windows.get(spec.id)!;
      w.window.add(now, counts);
      options.onCounts(spec, counts, w.window.sum(now), now);
    }
  };

  return {
    setPlan(plan) {
      specs = plan.backends.filter((b) => b.passive !== undefined);
      const ids = new Set(specs.map((b) => b.id));
      for (const id of windows.keys()) if (!ids.has(id)) windows.delete(id);
      for (const spec of specs) {
        const ms = serviceWindow(plan, spec);
        if (windows.get(spec.id)?.ms !== ms) windows.set(spec.id, { ms, window: createCountWindow(ms) });
      }
      const next = passiveReadPeriod(plan.services.flatMap((s) => (s.passive ? [s.passive.window] : [])));
      if (next === period) return;
      clearInterval(timer);
      timer = undefined;
      period = next;
      if (period === undefined) return;
      timer = setInterval(() => void tick(), period);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
      timer = undefined;
    },
  };
}

function serviceWindow(plan: Plan, spec: BackendPlan): number {
  return plan.services.find((s) => s.name === spec.service)!.passive!.window;
}
