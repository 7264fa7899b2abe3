/**
 * Passive health as pure functions (docs/passive.md): the kernel's per-backend counts of
 * new connections, SYN-ACKs and resets, summed over a sliding window, give a verdict.
 * No clocks, no I/O, so the rules are tested by tables.
 */
import { formatDuration } from '../config/duration.js';
import type { PassiveConfig } from '../config/passive.js';

/** What the kernel counted for one backend: new connections, answers (SYN-ACK, first UDP reply), resets. */
export interface PassiveCounts {
  new: number;
  answered: number;
  reset: number;
}

/** Counts with the unanswered ones derived: every new connection is answered, reset or unanswered. */
export interface PassiveTally extends PassiveCounts {
  unanswered: number;
}

export const NO_COUNTS: PassiveCounts = Object.freeze({ new: 0, answered: 0, reset: 0 });

export function addCounts(a: PassiveCounts, b: PassiveCounts): PassiveCounts {
  return { new: a.new + b.new, answered: a.answered + b.answered, reset: a.reset + b.reset };
}

/**
 * A retransmitted SYN-ACK counts twice and a connection that was answered and later reset
 * counts in both: resets first (up to the new connections), then answers up to what is
 * left; the rest was never answered.
 */
export function tally(c: PassiveCounts): PassiveTally {
  const reset = Math.min(c.reset, c.new);
  const answered = Math.min(c.answered, c.new - reset);
  return { new: c.new, answered, reset, unanswered: c.new - reset - answered };
}

export type PassiveVerdict =
  /** Fewer new connections than minConnections: no verdict. */
  { kind: 'quiet'; tally: PassiveTally } | { kind: 'ok' | 'failing'; tally: PassiveTally; ratio: number };

export function passiveVerdict(
  counts: PassiveCounts,
  config: Pick<PassiveConfig, 'minConnections' | 'failureRatio'>,
): PassiveVerdict {
  const t = tally(counts);
  if (t.new < config.minConnections) return { kind: 'quiet', tally: t };
  const ratio = (t.unanswered + t.reset) / t.new;
  return { kind: ratio >= config.failureRatio ? 'failing' : 'ok', tally: t, ratio };
}

/** How many of a service's backends passive ejection may leave out: maxEjectPercent of them, rounded down. */
export function ejectionLimit(backends: number, maxEjectPercent: number): number {
  return Math.floor((backends * maxEjectPercent) / 100 + 1e-9);
}

/** Whether one more backend may go out when `out` of `backends` are out already (by any cause). */
export function ejectionAllowed(backends: number, out: number, maxEjectPercent: number): boolean {
  return out + 1 <= ejectionLimit(backends, maxEjectPercent);
}

/**
 * How long an ejection lasts, as Envoy's outlier detection does it: `window` times the
 * number of ejections in a row, never more than `maxEjectionTime` (nor less than one
 * `window`). Each whole `window` the backend stayed in since its previous ejection ended
 * takes one off the count (Envoy takes one off its multiplier per healthy interval), so a
 * backend that keeps failing real traffic while passing its checks is let back less and
 * less often, and one that fails once in a long while is out for one window.
 */
export function nextEjection(
  previous: { ejections: number; endedAt: number } | undefined,
  now: number,
  windowMs: number,
  maxEjectionMs: number,
): { ejections: number; holdMs: number } {
  const calm = previous ? Math.floor(Math.max(0, now - previous.endedAt) / windowMs) : 0;
  const ejections = Math.max(0, (previous?.ejections ?? 0) - calm) + 1;
  return { ejections, holdMs: Math.min(windowMs * ejections, Math.max(windowMs, maxEjectionMs)) };
}

/** A sliding window of reads: each read's counts with its time; the sum covers the latest `windowMs`. */
export interface CountWindow {
  add(at: number, counts: PassiveCounts): void;
  sum(now: number): PassiveCounts;
}

export function createCountWindow(windowMs: number): CountWindow {
  const reads: { at: number; counts: PassiveCounts }[] = [];
  const prune = (now: number) => {
    while (reads.length > 0 && reads[0]!.at <= now - windowMs) reads.shift();
  };
  return {
    add(at, counts) {
      reads.push({ at, counts });
      prune(at);
    },
    sum(now) {
      prune(now);
      return reads.reduce((total, r) => addCounts(total, r.counts), NO_COUNTS);
    },
  };
}

/** How often the counters are read: a quarter of the shortest window, between 250 ms and 10 s. */
export function passiveReadPeriod(windows: readonly number[]): number | undefined {
  if (windows.length === 0) return undefined;
  return Math.min(10_000, Math.max(250, Math.min(...windows) / 4));
}

/** A backend's passive health as the daemon keeps it (status, metrics). */
export interface PassiveStatus {
  /** Everything counted since start (for the metrics' counters). */
  totals: PassiveTally;
  /** The latest verdict, over the latest window. */
  latest: PassiveVerdict;
  windowMs: number;
  /** Epoch ms since which its traffic has been failing; undefined: not failing. */
  failingSince?: number | undefined;
  /** Ejected: passing checks count again from this epoch ms on. */
  heldUntil?: number | undefined;
  /** Ejections in a row (see nextEjection): the latest one lasted `window` times this. */
  ejections?: number;
  /** The cap kept it in during this episode (logged once). */
  capped?: boolean;
}

/** "12 of 40 new connections in the latest 2s unanswered, 3 reset (ratio 0.38)". */
export function describeVerdict(v: PassiveVerdict, windowMs: number): string {
  const t = v.tally;
  const head = `${t.unanswered} of ${t.new} new connections in the latest ${formatDuration(windowMs)} unanswered, ${t.reset} reset`;
  return v.kind === 'quiet' ? head : `${head} (ratio ${v.ratio.toFixed(2)})`;
}
