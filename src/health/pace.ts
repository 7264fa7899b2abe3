/**
 * When to check a backend next, as a pure function (HAProxy's inter, fastinter and
 * downinter): fastInterval while results disagree with the state, downInterval once
 * a backend has been down for at least downInterval, interval otherwise. A backend
 * held down by flap damping is checked at interval: its successes only count once
 * the hold ends.
 */
import type { Daemon } from '../observer.js';
import { type Health, isSettling } from './hysteresis.js';

export interface Pacing {
  interval: number;
  fastInterval: number;
  downInterval: number;
}

export interface PaceInput {
  health: Health;
  /** Epoch ms of the latest state change. */
  since: number;
  /** Epoch ms until which flap damping holds the backend down. */
  heldUntil?: number | undefined;
}

export function nextCheckDelay(b: PaceInput, t: Pacing, now: number): number {
  if (b.heldUntil !== undefined && now < b.heldUntil)
    return Math.min(t.interval, Math.max(t.fastInterval, b.heldUntil - now));
  if (isSettling(b.health)) return t.fastInterval;
  if (b.health.state === 'down' && now - b.since >= t.downInterval) return t.downInterval;
  return t.interval;
}

/**
 * The longest a healthy daemon goes between two completed checks of one backend: the
 * slowest period (downInterval for long-dead ones, never below interval) plus its
 * timeout. 0 without backends. What /healthz and the systemd watchdog measure against.
 */
export function longestCheckGap(backends: Iterable<{ spec: Pacing & { timeout: number } }>): number {
  let longest = 0;
  for (const { spec } of backends)
    longest = Math.max(longest, Math.max(spec.interval, spec.downInterval) + spec.timeout);
  return longest;
}

/** Milliseconds since the scheduler last did something: a check completed or a run started. */
export function msSinceProgress(daemon: Pick<Daemon, 'lastProgressAt' | 'scheduler'>, now = performance.now()): number {
  return now - Math.max(daemon.lastProgressAt(), daemon.scheduler().lastRunAt());
}
