/**
 * At most `concurrency` checks at once; the rest wait in order. p-limit's job with one
 * settled-promise hook per task instead of half a dozen promises and closures: at
 * thousands of checks a second those were a visible share of the garbage.
 */
export interface Limiter {
  /** Runs `task` now if a slot is free, else when one is; settles as the task does. */
  run<T>(task: () => Promise<T>): Promise<T>;
  /** Slots; raising it starts waiting tasks at once. */
  concurrency: number;
  readonly activeCount: number;
  readonly pendingCount: number;
}

export function createLimiter(initial: number): Limiter {
  let concurrency = initial;
  let active = 0;
  let waiting: (() => void)[] = [];
  let head = 0;

  const release = () => {
    active--;
    startWaiting();
  };
  const start = <T>(task: () => Promise<T>): Promise<T> => {
    active++;
    let running: Promise<T>;
    try {
      running = task();
    } catch (err) {
      running = Promise.reject(err);
    }
    running.then(release, release);
    return running;
  };
  const startWaiting = () => {
    while (active < concurrency && head < waiting.length) {
      const next = waiting[head]!;
      head++;
      next();
    }
    if (head === waiting.length) {
      waiting = [];
      head = 0;
    }
  };

  return {
    run(task) {
      if (active < concurrency && head === waiting.length) return start(task);
      return new Promise((resolve, reject) => waiting.push(() => start(task).then(resolve, reject)));
    },
    get concurrency() {
      return concurrency;
    },
    set concurrency(value: number) {
      concurrency = value;
      startWaiting();
    },
    get activeCount() {
      return active;
    },
    get pendingCount() {
      return waiting.length - head;
    },
  };
}
