import type { Logger } from '../log.js';
import type { Writer, WriterTarget } from './types.js';

export type SyncReason = 'start' | 'change' | 'check';

export interface SyncOutcome {
  /** The kernel now holds the wanted value (read back or written). */
  confirmed: boolean;
  wrote: boolean;
  /** What was there before a repair, when something had changed it behind our back. */
  drift?: string;
  error?: NodeJS.ErrnoException;
}

export interface ReconcilerEvents {
  onDrift?(target: WriterTarget, found: string, wantUp: boolean): void;
  onWriteError?(target: WriterTarget, error: NodeJS.ErrnoException): void;
}

export interface Reconciler {
  /** Makes the kernel hold `up` for this target: reads it back, writes when it differs. Batched per tick. */
  sync(target: WriterTarget, up: boolean, reason: SyncReason): Promise<SyncOutcome>;
  /** Waits for every write under way: called before exit, so no write is cut in half. */
  idle(): Promise<void>;
  setWriter(writer: Writer): void;
  /** Forget a target (backend removed), so a later failure episode starts afresh. */
  forget(key: string): void;
}

interface Pending {
  target: WriterTarget;
  up: boolean;
  reason: SyncReason;
  resolve: (o: SyncOutcome) => void;
}

/**
 * Reconciles desired states with the writer. Failures are logged once per episode
 * (with the writer's hint) and retried on the next sync; recovery is logged once.
 */
export function createReconciler(initial: Writer, log: Logger, events: ReconcilerEvents = {}): Reconciler {
  let writer = initial;
  let queue: Pending[] = [];
  let flushing: Promise<void> | undefined;
  let scheduled = false;
  const failing = new Map<string, string>();

  const flush = async (batch: Pending[]) => {
    // Last wish per key wins within one batch.
    const byKey = new Map<string, Pending[]>();
    for (const p of batch) byKey.set(p.target.key, [...(byKey.get(p.target.key) ?? []), p]);
    const wanted = [...byKey.values()].map((ps) => ps[ps.length - 1]!);
    const current = await writer.read(wanted.map((p) => p.target));
    const toWrite = wanted.filter((p) => {
      const c = current.get(p.target.key);
      return !c || 'error' in c || c.up !== p.up;
    });
    const failed =
      toWrite.length > 0 ? await writer.write(toWrite.map((p) => ({ target: p.target, up: p.up }))) : new Map();
    for (const p of wanted) {
      const c = current.get(p.target.key);
      const wrote = toWrite.includes(p);
      const error = failed.get(p.target.key);
      const outcome: SyncOutcome = { confirmed: !error, wrote: wrote && !error };
      if (error) {
        outcome.error = error;
        const sig = `${error.code ?? error.message}`;
        if (failing.get(p.target.key) !== sig) {
          failing.set(p.target.key, sig);
          log.error(
            { event: 'write_failed', target: p.target.label, code: error.code, want: p.up ? 'up' : 'down' },
            `cannot write ${p.target.label}: ${error.code ?? error.message}: ${writer.hint(error, p.target)}`,
          );
        }
        events.onWriteError?.(p.target, error);
      } else {
        if (failing.delete(p.target.key))
          log.info({ event: 'write_recovered', target: p.target.label }, `writing ${p.target.label} works again`);
        if (wrote && p.reason === 'check' && c && !('error' in c)) {
          outcome.drift = c.raw.trim() || '(empty)';
          log.warn(
            { event: 'drift_repaired', target: p.target.label, found: outcome.drift, want: p.up ? 'up' : 'down' },
            `${p.target.label} held ${outcome.drift} behind our back (rules reloaded or written by hand); set it back to ${p.up ? 'up' : 'down'}`,
          );
          events.onDrift?.(p.target, outcome.drift, p.up);
        }
      }
      for (const each of byKey.get(p.target.key)!) each.resolve(outcome);
    }
  };

  const run = () => {
    scheduled = false;
    if (flushing || queue.length === 0) return;
    const batch = queue;
    queue = [];
    flushing = flush(batch)
      .catch((err: unknown) => {
        log.error({ event: 'writer_bug', err }, 'writer failed unexpectedly');
        for (const p of batch) p.resolve({ confirmed: false, wrote: false, error: err as NodeJS.ErrnoException });
      })
      .finally(() => {
        flushing = undefined;
        if (queue.length > 0) kick();
      });
  };
  const kick = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(run);
  };

  return {
    sync(target, up, reason) {
      return new Promise((resolve) => {
        queue.push({ target, up, reason, resolve });
        kick();
      });
    },
    async idle() {
      while (flushing || queue.length > 0) {
        await (flushing ?? new Promise((r) => setImmediate(r)));
      }
    },
    setWriter(next) {
      writer = next;
      failing.clear();
    },
    forget(key) {
      failing.delete(key);
    },
  };
}
