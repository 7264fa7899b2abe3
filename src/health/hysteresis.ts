/**
 * Rise/fall hysteresis as a pure state machine: the only place that decides
 * whether a backend is up. No clocks, no I/O, so it is tested by tables.
 */
export type BackendState = 'up' | 'down';

export interface Health {
  state: BackendState;
  /** Consecutive successful checks (0 after a failure). */
  successes: number;
  /** Consecutive failed checks (0 after a success). */
  failures: number;
}

export interface Thresholds {
  rise: number;
  fall: number;
}

export interface Observation {
  health: Health;
  /** Set when this check flipped the state. */
  transition?: { from: BackendState; to: BackendState };
  /** True while the latest results disagree with the state: check at fastInterval. */
  settling: boolean;
}

export function initialHealth(state: BackendState): Health {
  return { state, successes: 0, failures: 0 };
}

export function isSettling(h: Health): boolean {
  return h.state === 'up' ? h.failures > 0 : h.successes > 0;
}

export function observe(h: Health, ok: boolean, t: Thresholds): Observation {
  const successes = ok ? h.successes + 1 : 0;
  const failures = ok ? 0 : h.failures + 1;
  let state = h.state;
  if (state === 'up' && failures >= t.fall) state = 'down';
  else if (state === 'down' && successes >= t.rise) state = 'up';
  const health = { state, successes, failures };
  const result: Observation = { health, settling: isSettling(health) };
  if (state !== h.state) result.transition = { from: h.state, to: state };
  return result;
}
