/**
 * Many deadlines on one Node timer: a binary min-heap of entries ordered by `due`
 * (performance.now() milliseconds) with one setTimeout armed for the earliest. Checks
 * and scheduled runs put their deadlines here instead of a Timeout object each; when
 * the timer fires, every entry due within `batchMs` runs in that one wake-up.
 */
export interface TimerEntry {
  /** performance.now() at which `fire` is due. */
  due: number;
  /** Position in the heap; -1 when not in it (set by the heap, start it at -1). */
  slot: number;
  fire(): void;
}

export interface TimerHeap {
  add(entry: TimerEntry): void;
  /** Takes an entry out if it is in; harmless otherwise. */
  remove(entry: TimerEntry): void;
  readonly size: number;
}

export interface TimerHeapOptions {
  /** Entries due this soon after the earliest run in the same wake-up (default 1 ms). */
  batchMs?: number;
  /** The clock (default performance.now). */
  now?: () => number;
  /** Called when an entry's fire() throws: the other entries still run (default: rethrown, as from a timer). */
  onError?: (err: unknown) => void;
}

export function createTimerHeap(options: TimerHeapOptions = {}): TimerHeap {
  const batchMs = options.batchMs ?? 1;
  const now = options.now ?? (() => performance.now());
  const heap: TimerEntry[] = [];
  let timer: NodeJS.Timeout | undefined;
  /** The `due` the timer is armed for. */
  let armedFor = Number.POSITIVE_INFINITY;

  const place = (entry: TimerEntry, slot: number) => {
    heap[slot] = entry;
    entry.slot = slot;
  };
  const up = (slot: number) => {
    const entry = heap[slot]!;
    while (slot > 0) {
      const parent = (slot - 1) >> 1;
      if (heap[parent]!.due <= entry.due) break;
      place(heap[parent]!, slot);
      slot = parent;
    }
    place(entry, slot);
  };
  const down = (slot: number) => {
    const entry = heap[slot]!;
    const n = heap.length;
    for (;;) {
      let child = 2 * slot + 1;
      if (child >= n) break;
      if (child + 1 < n && heap[child + 1]!.due < heap[child]!.due) child++;
      if (heap[child]!.due >= entry.due) break;
      place(heap[child]!, slot);
      slot = child;
    }
    place(entry, slot);
  };
  const removeAt = (slot: number) => {
    const entry = heap[slot]!;
    const last = heap.pop()!;
    entry.slot = -1;
    if (last === entry) return;
    place(last, slot);
    if (slot > 0 && heap[(slot - 1) >> 1]!.due > last.due) up(slot);
    else down(slot);
  };

  const arm = () => {
    const first = heap[0];
    if (first === undefined) {
      if (timer) clearTimeout(timer);
      timer = undefined;
      armedFor = Number.POSITIVE_INFINITY;
      return;
    }
    // Re-armed only when the earliest moved earlier (or the timer fired): most entries
    // join behind the earliest and cost no timer call at all.
    if (timer && first.due >= armedFor) return;
    if (timer) clearTimeout(timer);
    armedFor = first.due;
    timer = setTimeout(wake, Math.max(0, first.due - now()));
  };

  const wake = () => {
    timer = undefined;
    // A Node timer may fire a fraction of a millisecond before performance.now() says it is due.
    const until = Math.max(now(), armedFor) + batchMs;
    armedFor = Number.POSITIVE_INFINITY;
    while (heap.length > 0 && heap[0]!.due <= until) {
      const entry = heap[0]!;
      removeAt(0);
      try {
        entry.fire();
      } catch (err) {
        if (options.onError) options.onError(err);
        else
          queueMicrotask(() => {
            throw err;
          });
      }
    }
    arm();
  };

  return {
    add(entry) {
      if (entry.slot >= 0) removeAt(entry.slot);
      heap.push(entry);
      up(heap.length - 1);
      arm();
    },
    remove(entry) {
      if (entry.slot < 0 || heap[entry.slot] !== entry) return;
      removeAt(entry.slot);
      // The timer stays armed for a removed earliest: it wakes once and finds nothing due.
      if (heap.length === 0) arm();
    },
    get size() {
      return heap.length;
    },
  };
}
