/**
 * When to check a backend next, as a pure function (HAProxy's inter, fastinter and
 * downinter): fastInterval while results disagree with the state, downInterval once
 * a backend has been down for at least downInterval, interval otherwise. A backend
 * held down by flap damping is checked at interval: its successes only count once
 * the hold ends.
 */
import { isSettling, type Health } from './hysteresis.js';

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
  if (b.heldUntil !== undefined && now < b.heldUntil) return Math.min(t.interval, Math.max(t.fastInterval, b.heldUntil - now));
  if (isSettling(b.health)) return t.fastInterval;
  if (b.health.state === 'down' && now - b.since >= t.downInterval) return t.downInterval;
  return t.interval;
}
