import { createTimerHeap, type TimerEntry } from '../timer-heap.js';

/**
 * Runs each job once per period, start to start, never two runs of one job at once, with
 * jitter so that a thousand backends do not fire in one burst. All jobs wait on one timer
 * heap (one Node timer, every job due in the same millisecond started in one wake-up),
 * not a timer each; it is driven by setTimeout and performance.now(), so vitest's fake
 * timers drive it in tests.
 */
export interface Job {
  readonly id: string;
  /** One run; the scheduler waits for it before planning the next. */
  run(): Promise<void>;
  /** Milliseconds until the next run, decided after each run (interval or fastInterval). */
  nextDelay(): number;
}

export interface SchedulerOptions {
  /** Fraction of a delay removed at random: 0.1 runs a 2 s job every 1.8 to 2 s. */
  jitter?: number;
  random?: () => number;
  /** Called when a run throws: jobs are expected not to, but one bad job must not stop the others. */
  onError?: (job: Job, err: unknown) => void;
}

interface Entry extends TimerEntry {
  job: Job;
  running?: Promise<void>;
  removed: boolean;
}

export interface Scheduler {
  /** Starts a job; its first run after `firstDelay` ms. */
  add(job: Job, firstDelay: number): void;
  /** Stops a job; resolves when a run in progress has finished. */
  remove(id: string): Promise<void>;
  has(id: string): boolean;
  ids(): string[];
  /** Stops every job; resolves when runs in progress have finished. */
  stop(): Promise<void>;
  /** Milliseconds by which the latest run started late, for progress and lag reporting. */
  lastLagMs(): number;
  /** performance.now() of the latest run start, for watchdogs. */
  lastRunAt(): number;
  /** Calls `listener` at every run start with how late it started (metrics, benchmarks). */
  onRunStart(listener: (id: string, lagMs: number) => void): void;
}

export function createScheduler(options: SchedulerOptions = {}): Scheduler {
  const jitter = options.jitter ?? 0.1;
  const random = options.random ?? Math.random;
  const entries = new Map<string, Entry>();
  let lag = 0;
  let lastRun = performance.now();
  const startListeners: ((id: string, lagMs: number) => void)[] = [];
  const heap = createTimerHeap({ batchMs: 1 });

  const plan = (entry: Entry, delay: number) => {
    if (entry.removed) return;
    entry.due = performance.now() + Math.max(0, delay);
    heap.add(entry);
  };

  const fire = (entry: Entry) => {
    if (entry.removed) return;
    const now = performance.now();
    lag = Math.max(0, now - entry.due);
    lastRun = now;
    for (const listener of startListeners) {
      try {
        listener(entry.job.id, lag);
      } catch (err) {
        options.onError?.(entry.job, err);
      }
    }
    const ran = () => {
      entry.running = undefined;
      // The period runs from start to start (HAProxy's inter): a check that took its
      // whole timeout does not push the next one back by that much. One that overran
      // the period is followed at once, never overlapped.
      const took = performance.now() - now;
      if (!entry.removed) plan(entry, entry.job.nextDelay() * (1 - jitter * random()) - took);
    };
    // One then() for both outcomes: one promise per run, not a catch() and a finally() too.
    entry.running = entry.job.run().then(ran, (err: unknown) => {
      try {
        options.onError?.(entry.job, err);
      } finally {
        ran();
      }
    });
  };

  const removeEntry = async (entry: Entry) => {
    entry.removed = true;
    heap.remove(entry);
    entries.delete(entry.job.id);
    await entry.running;
  };

  return {
    add(job, firstDelay) {
      if (entries.has(job.id)) throw new Error(`job ${job.id} is scheduled already`);
      const entry: Entry = { job, removed: false, due: 0, slot: -1, fire: () => fire(entry) };
      entries.set(job.id, entry);
      plan(entry, firstDelay);
    },
    async remove(id) {
      const entry = entries.get(id);
      if (entry) await removeEntry(entry);
    },
    has: (id) => entries.has(id),
    ids: () => [...entries.keys()],
    async stop() {
      await Promise.all([...entries.values()].map(removeEntry));
    },
    lastLagMs: () => lag,
    lastRunAt: () => lastRun,
    onRunStart: (listener) => void startListeners.push(listener),
  };
}
