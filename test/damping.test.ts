import { describe, expect, it } from 'vitest';
import {
  type DampingConfig,
  type DampingState,
  damp,
  holdFor,
  initialDamping,
  isHeld,
  settle,
} from '../src/health/damping.js';
import { type Health, initialHealth, observe } from '../src/health/hysteresis.js';
import { nextCheckDelay } from '../src/health/pace.js';

const S = 1000;
/** Window 10s, 4 changes, first hold 5s doubling up to 20s, one decay step per 30s of calm. */
const CFG: DampingConfig = { window: 10 * S, changes: 4, hold: 5 * S, maxHold: 20 * S, decay: 30 * S };

/**
 * Feeds results one second apart ('o' success, 'x' failure, '.' no check, time
 * passes) with rise 1 / fall 1, so every result that disagrees is a change.
 * Returns per check: U up, D down, H down and held by damping.
 */
function run(
  results: string,
  config: DampingConfig | null = CFG,
  start: 'up' | 'down' = 'up',
  t = { rise: 1, fall: 1 },
) {
  let health: Health = initialHealth(start);
  let damping: DampingState = initialDamping(0);
  let states = '';
  const events: string[] = [];
  let transitions = 0;
  [...results].forEach((r, i) => {
    const now = i * S;
    if (r === '.') {
      states += '.';
      return;
    }
    const d = damp(observe(health, r === 'o', t), damping, config ?? undefined, now);
    health = d.observation.health;
    damping = d.damping;
    if (d.observation.transition) transitions++;
    for (const e of d.events) events.push(`${i}:${e.type}${e.type === 'hold' ? `:${e.holdMs / S}s` : ''}`);
    states += health.state === 'up' ? 'U' : isHeld(damping, now) ? 'H' : 'D';
  });
  return { states, events, transitions, damping };
}

describe('flap damping (window 10s, 4 changes, hold 5s doubling to 20s, decay 30s)', () => {
  it.each([
    // results, states after each check, damping events
    ['without damping config, every change passes', 'xoxoxo', 'DUDUDU', [], null],
    ['a steady backend is never held', 'oooooooooo', 'UUUUUUUUUU', []],
    ['three changes in the window: no hold', 'xoxxxxxx', 'DUDDDDDD', []],
    [
      'the 4th change (an up) is held down for 5s, then it goes up',
      'xoxoooooo',
      'DUDHHHHHU',
      ['3:hold:5s', '4:suppressed', '5:suppressed', '6:suppressed', '7:suppressed', '8:released'],
      { ...CFG, changes: 4 },
    ],
    [
      'crossing on a down change: it stays down for the hold',
      'xoxoooooo',
      'DUHHHHHUU',
      ['2:hold:5s', '3:suppressed', '4:suppressed', '5:suppressed', '6:suppressed', '7:released'],
      { ...CFG, changes: 3 },
    ],
    ['failures while held change nothing', 'xoxoxxxxxo', 'DUDHHHHHDU', ['3:hold:5s', '8:released']],
    [
      'changes further apart than the window never add up',
      'x.....o.....x.....o.....x',
      'D.....U.....D.....U.....D',
      [],
    ],
  ] as const)('%s', (_name, results, states, events, config: DampingConfig | null = CFG) => {
    const got = run(results, config);
    expect(got.states).toBe(states);
    expect(got.events).toEqual([...events]);
  });

  it('hold time doubles with each hold and is capped at maxHold', () => {
    // hold 1 at t3 (5s, up at t8); changes t8, t9, t10, t11 -> hold 2 at t11 (10s) ...
    const got = run(`xoxooooooxox${'o'.repeat(11)}xox${'o'.repeat(21)}xox${'o'.repeat(21)}`);
    expect(got.events.filter((e) => e.includes('hold'))).toEqual([
      '3:hold:5s',
      '11:hold:10s',
      '25:hold:20s',
      '49:hold:20s',
    ]);
    expect(holdFor(1, CFG)).toBe(5 * S);
    expect(holdFor(2, CFG)).toBe(10 * S);
    expect(holdFor(3, CFG)).toBe(20 * S);
    expect(holdFor(9, CFG)).toBe(20 * S);
  });

  it('decays one step per `decay` of calm: after a long calm the next hold is short again', () => {
    const calm = '.'.repeat(61); // two decay periods after the first hold ended (t8)
    const got = run(`xoxoooooo${calm}xoxoooooo`);
    expect(got.events.filter((e) => e.includes('hold'))).toEqual(['3:hold:5s', '73:hold:5s']);
    const shortCalm = '.'.repeat(20); // less than one decay period: the next hold doubles
    const again = run(`xoxoooooo${shortCalm}xoxoooooo`);
    expect(again.events.filter((e) => e.includes('hold'))).toEqual(['3:hold:5s', '32:hold:10s']);
  });

  it('settle() decays level steps and moves calmSince by whole steps only', () => {
    const held: DampingState = { changes: [1 * S], level: 2, calmSince: 0, heldUntil: 10 * S, reason: 'flapping' };
    const during = settle(held, CFG, 9 * S);
    expect(during.released).toBeUndefined();
    expect(during.state.heldUntil).toBe(10 * S);
    const after = settle(held, CFG, 10 * S + 45 * S); // hold ended at 10s, then 45s calm: one step
    expect(after.released).toEqual({ type: 'released', heldMs: 10 * S });
    expect(after.state).toEqual({ changes: [], level: 1, calmSince: 40 * S });
    expect(settle(after.state, CFG, 100 * S).state.level).toBe(0);
  });

  it('the reason says how many changes in what window and for how long it is held', () => {
    const got = run('xoxo');
    expect(got.damping.reason).toBe('flapping: 4 state changes in 10s; held down for 5s (hold 1)');
  });

  it('with rise 2 the held backend goes up on the first success after the hold ends', () => {
    const got = run('xxooxxoo' + 'ooooooo', CFG, 'up', { rise: 2, fall: 2 });
    // changes: t1 down, t3 up, t5 down, t7 up (4th: held until t12)
    expect(got.states).toBe('UDDUUDDHHHHHUUU');
  });
});

describe('check pacing (interval 2s, fastInterval 200ms, downInterval 30s)', () => {
  const T = { interval: 2 * S, fastInterval: 200, downInterval: 30 * S };
  const now = 100 * S;
  it.each([
    ['settled up', { state: 'up', successes: 5, failures: 0 }, now - 60 * S, undefined, 2 * S],
    ['up with a failure: fastInterval', { state: 'up', successes: 0, failures: 1 }, now - 60 * S, undefined, 200],
    ['down with a success: fastInterval', { state: 'down', successes: 1, failures: 0 }, now - 60 * S, undefined, 200],
    [
      'down for less than downInterval: interval',
      { state: 'down', successes: 0, failures: 9 },
      now - 29 * S,
      undefined,
      2 * S,
    ],
    [
      'down for downInterval or longer: downInterval',
      { state: 'down', successes: 0, failures: 20 },
      now - 30 * S,
      undefined,
      30 * S,
    ],
    ['held, 10s left: interval', { state: 'down', successes: 3, failures: 0 }, now - 5 * S, now + 10 * S, 2 * S],
    [
      'held, 1s left: when the hold ends',
      { state: 'down', successes: 3, failures: 0 },
      now - 5 * S,
      now + 1 * S,
      1 * S,
    ],
    [
      'held, 50ms left: fastInterval at least',
      { state: 'down', successes: 3, failures: 0 },
      now - 5 * S,
      now + 50,
      200,
    ],
    [
      'hold over, successes pending: fastInterval',
      { state: 'down', successes: 3, failures: 0 },
      now - 5 * S,
      now - 1,
      200,
    ],
  ] as const)('%s', (_name, health, since, heldUntil, delay) => {
    expect(nextCheckDelay({ health: { ...health }, since, heldUntil }, T, now)).toBe(delay);
  });
});
