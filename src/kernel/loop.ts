import type { Logger } from '../log.js';
import { changedSlots } from './table.js';
import type { ReadOutcome, TableChange, TableTarget, Writer, WriterTarget } from './writers/types.js';

/** What one target's latest kernel operation gave, for the observers (state file, metrics). */
export interface SyncOutcome {
  /** The kernel now holds the wanted value (written, or read back). */
  confirmed: boolean;
  wrote: boolean;
  /** What the kernel held before a repair, when something had changed it behind our back. */
  drift?: string;
  error?: NodeJS.ErrnoException;
}

/** The writer loop's own health, for the liveness measure. performance.now() times. */
export interface WriterHealth {
  /** Since when one writer call has been running (undefined: idle). */
  busySince: number | undefined;
  /** Since when writes or reads have been failing (undefined: the latest one worked). */
  failingSince: number | undefined;
  /** The latest failure, in the writer's words, while failing. */
  lastError: string | undefined;
  /** Targets whose wanted value is not known to be in the kernel. */
  pending: number;
}

export interface KernelLoopOptions {
  writer: Writer;
  log: Logger;
  /** Period of the read-back that finds and repairs drift: one writer.read of every target. */
  readBackMs: number;
  /** One writer call running longer than this is logged as stalled (once, and its end once). */
  stallAfterMs: number;
  /** Called per target after every write or read-back that concerned it. */
  onOutcome?(key: string, up: boolean, outcome: SyncOutcome): void;
  /** Called per balancing table after every write or read-back that concerned it. */
  onTableOutcome?(key: string, outcome: SyncOutcome): void;
}

/**
 * The kernel side's own loop. Health decisions call `want` and go on: nothing on the
 * check path waits for a child process. Wanted changes are applied as they come, one
 * writer.write (one `nft -f -` / `ipset restore` transaction) per burst; once per
 * `readBackMs` everything is read back in one call and drift is repaired. A failed
 * write is logged once per episode, retried with backoff, and reported by `health()`.
 */
export interface KernelLoop {
  /** Records the wanted value of a target; applied soon, without waiting. */
  want(target: WriterTarget, up: boolean): void;
  /** The target is no longer driven (backend removed): left as it is in the kernel. */
  forget(key: string): void;
  /**
   * Records the wanted content of a balancing table (writers with `readTables`; the
   * others ignore it). Written in the same transaction as the set changes of the burst.
   */
  wantTable(target: TableTarget, slots: Uint32Array): void;
  forgetTable(key: string): void;
  /** A new writer (reload changed `writer:`): everything wanted is applied again through it. */
  setWriter(writer: Writer): Promise<void>;
  setReadBack(ms: number): void;
  /** One read through the writer between the loop's own operations (`initialState: kernel`). */
  read(targets: readonly WriterTarget[]): Promise<Map<string, ReadOutcome>>;
  /** The writer's passive counters, read and zeroed in one call (undefined: this writer has none). */
  readCounters(): Promise<Map<string, number>> | undefined;
  /** Resolves once every change wanted before the call has been tried once (applied or failed). */
  settled(): Promise<void>;
  health(): WriterHealth;
  /** Finishes the operation under way and one last attempt at what is pending; stops the timers. */
  stop(): Promise<void>;
}

const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 30_000;

export function createKernelLoop(options: KernelLoopOptions): KernelLoop {
  const { log } = options;
  let writer = options.writer;
  let readBackMs = options.readBackMs;
  const wanted = new Map<string, { target: WriterTarget; up: boolean }>();
  /** What we know the kernel holds, per key; absent: unknown. */
  const known = new Map<string, boolean>();
  const dirty = new Set<string>();
  /** Keys whose write failed: back to `dirty` when the backoff ends (or a new value is wanted). */
  const retrying = new Set<string>();
  /** Error signature per failing key: one log line per episode. */
  const failing = new Map<string, string>();
  let busy: Promise<void> | undefined;
  let busySince: number | undefined;
  let failingSince: number | undefined;
  let lastError: string | undefined;
  let kicked = false;
  let stopped = false;
  let retryTimer: NodeJS.Timeout | undefined;
  let retries = 0;
  let readBackTimer: NodeJS.Timeout | undefined;
  let readBackDue = false;
  /** Waiters of settled(): each resolves when the attempt counter passes its mark. */
  let attempts = 0;
  let requested = 0;
  const waiters: { mark: number; resolve: () => void }[] = [];
  /** Balancing tables: wanted content, what the kernel is known to hold, which to write. */
  const wantedTables = new Map<string, { target: TableTarget; slots: Uint32Array }>();
  const knownTables = new Map<string, Uint32Array>();
  const dirtyTables = new Set<string>();
  const retryingTables = new Set<string>();
  const driftedTables = new Map<string, string>();
  const tablesOn = () => writer.readTables !== undefined;
  const sameSlots = (a: Uint32Array | undefined, b: Uint32Array) => a !== undefined && changedSlots(a, b).length === 0;
  const pendingWrites = () => dirty.size + (tablesOn() ? dirtyTables.size : 0);

  const outcome = (key: string, up: boolean, o: SyncOutcome) => options.onOutcome?.(key, up, o);

  /** One writer call, timed: `busySince` while it runs, one log line if it runs past `stallAfterMs` and one when it ends. */
  const timed = async <T>(call: () => Promise<T>): Promise<T> => {
    const since = performance.now();
    busySince = since;
    let stalled = false;
    const stallTimer = setTimeout(() => {
      stalled = true;
      log.error(
        { event: 'writer_stalled', afterMs: options.stallAfterMs },
        `the kernel writer has been busy for ${options.stallAfterMs} ms: checks go on, changes wait for it`,
      );
    }, options.stallAfterMs);
    stallTimer.unref();
    try {
      return await call();
    } finally {
      clearTimeout(stallTimer);
      busySince = undefined;
      const busyMs = Math.round(performance.now() - since);
      if (stalled) log.info({ event: 'writer_resumed', busyMs }, `the kernel writer answered again after ${busyMs} ms`);
    }
  };

  const failed = (target: WriterTarget, up: boolean, error: NodeJS.ErrnoException) => {
    const sig = `${error.code ?? error.message}`;
    if (failing.get(target.key) !== sig) {
      failing.set(target.key, sig);
      log.error(
        { event: 'write_failed', target: target.label, code: error.code, want: up ? 'up' : 'down' },
        `cannot write ${target.label}: ${error.code ?? error.message}: ${writer.hint(error, target)}`,
      );
    }
    failingSince ??= performance.now();
    lastError = `${target.label}: ${error.code ?? error.message}`;
    outcome(target.key, up, { confirmed: false, wrote: false, error });
  };

  const recovered = (target: WriterTarget) => {
    if (failing.delete(target.key))
      log.info({ event: 'write_recovered', target: target.label }, `writing ${target.label} works again`);
  };

  /** Drift found by the read-back, reported once the repair is written. */
  const drifted = new Map<string, string>();

  /** Keys never confirmed (start, a new writer, after a failure) are read first: what already holds is not rewritten. */
  const alreadyThere = async (
    batch: { target: WriterTarget; up: boolean }[],
  ): Promise<{ batch: typeof batch; hung?: NodeJS.ErrnoException }> => {
    const unknown = batch.filter((w) => !known.has(w.target.key) && !drifted.has(w.target.key));
    if (unknown.length === 0) return { batch };
    const read = await timed(() => writer.read(unknown.map((w) => w.target)));
    // A tool that hung on the read hangs on the write too: the attempt ends here, not a
    // second timeout later (a hung nft would hold READY=1 and every retry twice as long).
    for (const r of read.values()) if ('error' in r && r.error.code === 'ETIMEDOUT') return { batch, hung: r.error };
    const left = batch.filter((w) => {
      const r = read.get(w.target.key);
      if (known.has(w.target.key) || drifted.has(w.target.key) || !r || 'error' in r || r.up !== w.up) return true;
      known.set(w.target.key, w.up);
      recovered(w.target);
      outcome(w.target.key, w.up, { confirmed: true, wrote: false });
      return false;
    });
    return { batch: left };
  };

  /** A table read as complete content, or undefined when a slot is missing or the read failed. */
  const complete = (slots: (number | undefined)[] | undefined, size: number): Uint32Array | undefined =>
    slots && slots.length === size && slots.every((m) => m !== undefined) ? Uint32Array.from(slots) : undefined;

  /**
   * The tables to write. One whose kernel content is unknown (start, a new writer, after a
   * failure) is not read first: it is flushed and filled in the same transaction, which
   * costs less than listing it (BENCHMARKS.md, "Balancing table").
   */
  const tableBatch = (): TableChange[] => {
    if (!tablesOn()) return [];
    const wantedNow = [...dirtyTables].map((key) => wantedTables.get(key)).filter((w) => w !== undefined);
    dirtyTables.clear();
    const batch: TableChange[] = [];
    for (const w of wantedNow) {
      const known = knownTables.get(w.target.key);
      if (sameSlots(known, w.slots) && !driftedTables.has(w.target.key)) {
        tableRecovered(w.target);
        options.onTableOutcome?.(w.target.key, { confirmed: true, wrote: false });
        continue;
      }
      batch.push({ target: w.target, slots: w.slots, known });
    }
    return batch;
  };

  const tableRecovered = (target: TableTarget) => {
    if (failing.delete(target.key))
      log.info({ event: 'write_recovered', target: target.label }, `writing ${target.label} works again`);
  };

  const tableWritten = (tables: readonly TableChange[], errors: Map<string, NodeJS.ErrnoException>) => {
    let anyFailed = false;
    for (const t of tables) {
      const error = errors.get(t.target.key);
      if (error) {
        anyFailed = true;
        knownTables.delete(t.target.key);
        if (wantedTables.has(t.target.key)) retryingTables.add(t.target.key);
        const sig = `${error.code ?? error.message}`;
        if (failing.get(t.target.key) !== sig) {
          failing.set(t.target.key, sig);
          log.error(
            { event: 'write_failed', target: t.target.label, code: error.code },
            `cannot write ${t.target.label}: ${error.code ?? error.message}: ${writer.hint(error, t.target)}`,
          );
        }
        failingSince ??= performance.now();
        lastError = `${t.target.label}: ${error.code ?? error.message}`;
        options.onTableOutcome?.(t.target.key, { confirmed: false, wrote: false, error });
        continue;
      }
      tableRecovered(t.target);
      if (log.isLevelEnabled('debug'))
        log.debug(
          {
            event: 'table_written',
            target: t.target.label,
            moved: t.known ? changedSlots(t.known, t.slots).length : t.slots.length,
          },
          `wrote ${t.target.label}`,
        );
      knownTables.set(t.target.key, t.slots);
      const found = driftedTables.get(t.target.key);
      driftedTables.delete(t.target.key);
      if (found !== undefined) {
        log.warn(
          { event: 'drift_repaired', target: t.target.label, found },
          `${t.target.label} held ${found} behind our back (rules reloaded or written by hand); wrote the table back`,
        );
      }
      options.onTableOutcome?.(t.target.key, {
        confirmed: true,
        wrote: true,
        ...(found === undefined ? {} : { drift: found }),
      });
    }
    return anyFailed;
  };

  const write = async () => {
    const wantedNow = [...dirty].map((key) => wanted.get(key)).filter((w) => w !== undefined);
    dirty.clear();
    const tables = tableBatch();
    if (wantedNow.length === 0 && tables.length === 0) return;
    const { batch, hung } = wantedNow.length > 0 ? await alreadyThere(wantedNow) : { batch: [] };
    if (batch.length === 0 && tables.length === 0) return;
    const errors = hung
      ? new Map([...batch.map((w) => w.target.key), ...tables.map((t) => t.target.key)].map((key) => [key, hung]))
      : await timed(() =>
          writer.write(
            batch.map((w) => ({ target: w.target, up: w.up })),
            tables,
          ),
        );
    let anyFailed = tableWritten(tables, errors);
    for (const w of batch) {
      const current = wanted.get(w.target.key);
      const error = errors.get(w.target.key);
      if (error) {
        anyFailed = true;
        known.delete(w.target.key);
        if (current) retrying.add(w.target.key);
        failed(w.target, w.up, error);
        continue;
      }
      recovered(w.target);
      known.set(w.target.key, w.up);
      const found = drifted.get(w.target.key);
      drifted.delete(w.target.key);
      if (found !== undefined) {
        log.warn(
          { event: 'drift_repaired', target: w.target.label, found, want: w.up ? 'up' : 'down' },
          `${w.target.label} held ${found} behind our back (rules reloaded or written by hand); set it back to ${w.up ? 'up' : 'down'}`,
        );
      }
      outcome(w.target.key, w.up, { confirmed: true, wrote: true, ...(found === undefined ? {} : { drift: found }) });
    }
    if (anyFailed) scheduleRetry();
    else {
      retries = 0;
      if (failing.size === 0) {
        failingSince = undefined;
        lastError = undefined;
      }
    }
  };

  /** Big tables take long to list (a 25,000-slot map ~4 s on a busy machine): read them back at most 10 % of the time. */
  let tableReadMs = 0;
  let tableReadAt = Number.NEGATIVE_INFINITY;
  /** `now`: drift was just found elsewhere (a rules reload resets the maps too): read them whatever the budget. */
  const readBackTables = async (now: boolean) => {
    // Changed meanwhile, or failing already: the write decides (and no listing is spent on them).
    const all = [...wantedTables.values()].filter(
      (w) => !dirtyTables.has(w.target.key) && !retryingTables.has(w.target.key),
    );
    if (!tablesOn() || all.length === 0) return;
    if (!now && performance.now() - tableReadAt < 10 * tableReadMs) return;
    tableReadAt = performance.now();
    const read = await timed(() => writer.readTables!(all.map((w) => w.target)));
    tableReadMs = performance.now() - tableReadAt;
    for (const w of all) {
      const key = w.target.key;
      if (wantedTables.get(key) !== w || dirtyTables.has(key) || retryingTables.has(key)) continue;
      const r = read.get(key);
      const held = r && 'slots' in r ? complete(r.slots, w.slots.length) : undefined;
      if (!r || 'error' in r) {
        knownTables.delete(key);
        dirtyTables.add(key);
      } else if (!sameSlots(held, w.slots)) {
        knownTables.delete(key);
        if (held) knownTables.set(key, held);
        const moved = held ? changedSlots(held, w.slots).length : w.slots.length;
        driftedTables.set(key, held ? `${moved} of ${w.slots.length} slots changed` : 'slots missing');
        dirtyTables.add(key);
      } else if (!sameSlots(knownTables.get(key), w.slots)) {
        knownTables.set(key, w.slots);
        options.onTableOutcome?.(key, { confirmed: true, wrote: false });
      }
    }
  };

  const readBack = async () => {
    const all = [...wanted.values()];
    if (all.length === 0) return readBackTables(false);
    const read = await timed(() => writer.read(all.map((w) => w.target)));
    let drift = false;
    for (const w of all) {
      // Changed meanwhile, or failing already: the write decides.
      if (wanted.get(w.target.key) !== w || dirty.has(w.target.key) || retrying.has(w.target.key)) continue;
      const r = read.get(w.target.key);
      if (!r || 'error' in r) {
        // Unreadable: write it, and let the write's error (with its hint) tell the operator.
        known.delete(w.target.key);
        dirty.add(w.target.key);
        drift = true;
      } else if (r.up !== w.up) {
        known.delete(w.target.key);
        drifted.set(w.target.key, r.raw.trim() || '(empty)');
        dirty.add(w.target.key);
        drift = true;
      } else if (known.get(w.target.key) !== w.up) {
        known.set(w.target.key, w.up);
        outcome(w.target.key, w.up, { confirmed: true, wrote: false });
      }
    }
    // Sets first: the element that drifted and the map slots it steers go back in one transaction.
    await readBackTables(drift);
  };

  const scheduleRetry = () => {
    if (stopped || retryTimer) return;
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** retries);
    retries++;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      retryNow();
    }, delay);
    retryTimer.unref();
  };

  const turn = async () => {
    const mark = requested;
    try {
      if (pendingWrites() > 0) await write();
      if (readBackDue) {
        readBackDue = false;
        await readBack();
        if (pendingWrites() > 0) await write();
      }
    } catch (err) {
      // Writers never reject; a bug here must not stop the loop.
      log.error({ event: 'writer_bug', err }, 'writer failed unexpectedly');
      failingSince ??= performance.now();
      lastError = String(err);
      scheduleRetry();
    } finally {
      attempts = Math.max(attempts, mark);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i]!.mark <= attempts) waiters.splice(i, 1)[0]!.resolve();
      }
    }
  };

  const run = () => {
    kicked = false;
    if (busy) return;
    busy = turn().finally(() => {
      busy = undefined;
      if (pendingWrites() > 0 || readBackDue || waiters.length > 0) kick();
    });
  };

  function retryNow() {
    clearTimeout(retryTimer);
    retryTimer = undefined;
    for (const key of retrying) dirty.add(key);
    retrying.clear();
    for (const key of retryingTables) dirtyTables.add(key);
    retryingTables.clear();
    kick();
  }

  function kick() {
    if (kicked || (stopped && pendingWrites() === 0)) return;
    kicked = true;
    setImmediate(run);
  }

  const startReadBack = () => {
    clearInterval(readBackTimer);
    readBackTimer = setInterval(() => {
      readBackDue = true;
      kick();
    }, readBackMs);
    readBackTimer.unref();
  };
  startReadBack();

  return {
    want(target, up) {
      const before = wanted.get(target.key);
      if (before && before.up === up && before.target.label === target.label) return;
      wanted.set(target.key, { target, up });
      drifted.delete(target.key);
      requested++;
      if (known.get(target.key) === up) return; // already there
      retrying.delete(target.key);
      dirty.add(target.key);
      kick();
    },
    wantTable(target, slots) {
      const before = wantedTables.get(target.key);
      if (before && sameSlots(before.slots, slots) && before.target.label === target.label) return;
      wantedTables.set(target.key, { target, slots });
      driftedTables.delete(target.key);
      requested++;
      if (sameSlots(knownTables.get(target.key), slots)) return;
      retryingTables.delete(target.key);
      dirtyTables.add(target.key);
      kick();
    },
    forgetTable(key) {
      wantedTables.delete(key);
      knownTables.delete(key);
      dirtyTables.delete(key);
      retryingTables.delete(key);
      driftedTables.delete(key);
      failing.delete(key);
    },
    forget(key) {
      wanted.delete(key);
      known.delete(key);
      dirty.delete(key);
      retrying.delete(key);
      drifted.delete(key);
      failing.delete(key);
    },
    async setWriter(next) {
      while (busy) await busy;
      await writer.close?.();
      writer = next;
      failing.clear();
      known.clear();
      clearTimeout(retryTimer);
      retryTimer = undefined;
      retries = 0;
      retrying.clear();
      for (const key of wanted.keys()) dirty.add(key);
      knownTables.clear();
      retryingTables.clear();
      for (const key of wantedTables.keys()) dirtyTables.add(key);
      requested++;
      kick();
    },
    setReadBack(ms) {
      if (ms === readBackMs) return;
      readBackMs = ms;
      startReadBack();
    },
    async read(targets) {
      while (busy) await busy;
      return writer.read(targets);
    },
    readCounters: () => writer.readCounters?.(),
    settled() {
      const mark = requested;
      const retryingAny = retrying.size + (tablesOn() ? retryingTables.size : 0) > 0;
      if (attempts >= mark && pendingWrites() === 0 && !retryingAny) return Promise.resolve();
      return new Promise((resolve) => {
        waiters.push({ mark, resolve });
        // A retry waiting out its backoff: the caller asked for one attempt now.
        if (retryingAny) retryNow();
        else kick();
      });
    },
    health: () => ({
      busySince,
      failingSince,
      lastError,
      pending:
        [...wanted].filter(([key, w]) => known.get(key) !== w.up).length +
        (tablesOn() ? [...wantedTables].filter(([key, w]) => !sameSlots(knownTables.get(key), w.slots)).length : 0),
    }),
    async stop() {
      clearInterval(readBackTimer);
      clearTimeout(retryTimer);
      retryTimer = undefined;
      readBackDue = false;
      while (busy) await busy;
      for (const key of retrying) dirty.add(key);
      retrying.clear();
      for (const key of retryingTables) dirtyTables.add(key);
      retryingTables.clear();
      if (pendingWrites() > 0) await write();
      stopped = true;
      clearTimeout(retryTimer);
      await writer.close?.();
      for (const w of waiters.splice(0)) w.resolve();
    },
  };
}
