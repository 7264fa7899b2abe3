/**
 * Flap damping as a pure function of (observation, damping state, config, now).
 * Hysteresis counts consecutive results only; a backend that passes `rise` and then
 * fails `fall` over and over still bounces traffic. Damping counts state changes in
 * a sliding window and, past a threshold, holds the backend down for a hold time
 * that doubles with each hold and steps back down after calm periods.
 */
import { formatDuration } from '../config/duration.js';
import type { DampingConfig } from '../config/operations.js';
import { isSettling, type Observation } from './hysteresis.js';

export type { DampingConfig };

export interface DampingState {
  /** Epoch ms of the state changes inside the window. */
  changes: number[];
  /** Holds so far, minus decay steps: the next hold lasts hold × 2^level. */
  level: number;
  /** Epoch ms from which the next decay step is counted. */
  calmSince: number;
  /** Held down until this epoch ms. */
  heldUntil?: number;
  /** Why it is held, in words (for the log and `status`). */
  reason?: string;
}

export type DampingEvent =
  /** This change crossed the threshold: a hold starts now. */
  | { type: 'hold'; until: number; holdMs: number; reason: string }
  /** The backend would have gone up but is held. */
  | { type: 'suppressed'; until: number; reason: string }
  /** A hold ended (before this observation was applied). */
  | { type: 'released'; heldMs: number };

export interface Damped {
  observation: Observation;
  damping: DampingState;
  events: DampingEvent[];
}

export function initialDamping(now: number): DampingState {
  return { changes: [], level: 0, calmSince: now };
}

export function isHeld(state: DampingState | undefined, now: number): boolean {
  return state?.heldUntil !== undefined && now < state.heldUntil;
}

/** Hold time for the given level (1 = first hold). */
export function holdFor(level: number, config: DampingConfig): number {
  return Math.min(config.maxHold, config.hold * 2 ** Math.max(0, level - 1));
}

/** Ends an expired hold, forgets changes older than the window, applies decay steps. */
export function settle(
  state: DampingState,
  config: DampingConfig,
  now: number,
): { state: DampingState; released?: DampingEvent } {
  let next: DampingState = { ...state, changes: state.changes.filter((t) => now - t < config.window) };
  let released: DampingEvent | undefined;
  if (next.heldUntil !== undefined && now >= next.heldUntil) {
    released = { type: 'released', heldMs: holdFor(next.level, config) };
    next = { changes: next.changes, level: next.level, calmSince: next.heldUntil };
  }
  if (next.heldUntil === undefined && next.level > 0) {
    const steps = Math.min(next.level, Math.floor((now - next.calmSince) / config.decay));
    if (steps > 0) next = { ...next, level: next.level - steps, calmSince: next.calmSince + steps * config.decay };
  }
  return released ? { state: next, released } : { state: next };
}

/**
 * Applies damping to one hysteresis observation. Without a config it is the identity.
 * A held backend's up transition is turned into "still down" (successes keep counting,
 * so it goes up on the first success after the hold ends).
 */
export function damp(
  seen: Observation,
  current: DampingState | undefined,
  config: DampingConfig | undefined,
  now: number,
): Damped {
  const start = current ?? initialDamping(now);
  if (!config) return { observation: seen, damping: start, events: [] };
  const settled = settle(start, config, now);
  let state = settled.state;
  const events: DampingEvent[] = settled.released ? [settled.released] : [];
  const transition = seen.transition;
  if (!transition) return { observation: seen, damping: state, events };

  if (transition.to === 'up' && isHeld(state, now)) {
    events.push({ type: 'suppressed', until: state.heldUntil!, reason: state.reason ?? 'flapping' });
    return { observation: keepDown(seen), damping: state, events };
  }

  const changes = [...state.changes, now];
  // Any change interrupts the calm that decays the hold level.
  if (changes.length < config.changes)
    return { observation: seen, damping: { ...state, changes, calmSince: now }, events };

  const level = state.level + 1;
  const holdMs = holdFor(level, config);
  const until = now + holdMs;
  const reason = `flapping: ${changes.length} state changes in ${formatDuration(config.window)}; held down for ${formatDuration(holdMs)} (hold ${level})`;
  state = { changes: [], level, calmSince: until, heldUntil: until, reason };
  events.push({ type: 'hold', until, holdMs, reason });
  return { observation: transition.to === 'up' ? keepDown(seen) : seen, damping: state, events };
}

function keepDown(seen: Observation): Observation {
  const health = { ...seen.health, state: 'down' as const };
  return { health, settling: isSettling(health) };
}
