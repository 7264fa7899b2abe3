import { describe, expect, it } from 'vitest';
import { type BackendState, type Health, initialHealth, isSettling, observe } from '../src/health/hysteresis.js';

const T = { rise: 2, fall: 3 };

/** Feeds a string of results ('o' success, 'x' failure) and returns the states after each. */
function run(start: BackendState, results: string, t = T): { states: string; settling: string; transitions: number } {
  let h: Health = initialHealth(start);
  let states = '';
  let settling = '';
  let transitions = 0;
  for (const r of results) {
    const o = observe(h, r === 'o', t);
    h = o.health;
    states += h.state === 'up' ? 'U' : 'D';
    settling += o.settling ? 'f' : '.';
    if (o.transition) transitions++;
  }
  return { states, settling, transitions };
}

describe('hysteresis (rise 2, fall 3)', () => {
  it.each([
    // start, results, states after each, fastInterval after each
    ['up', 'ooo', 'UUU', '...'],
    ['up', 'x', 'U', 'f'],
    ['up', 'xx', 'UU', 'ff'],
    ['up', 'xxx', 'UUD', 'ff.'],
    ['up', 'xxxx', 'UUDD', 'ff..'],
    ['up', 'xxo', 'UUU', 'ff.'],
    ['up', 'xxoxx', 'UUUUU', 'ff.ff'],
    ['up', 'xxoxxx', 'UUUUUD', 'ff.ff.'],
    ['down', 'o', 'D', 'f'],
    ['down', 'oo', 'DU', 'f.'],
    ['down', 'oxo', 'DDD', 'f.f'],
    ['down', 'xxx', 'DDD', '...'],
    ['up', 'xxxoo', 'UUDDU', 'ff.f.'],
    ['up', 'xxxoxoo', 'UUDDDDU', 'ff.f.f.'],
  ] as const)('%s then %s -> %s', (start, results, states, settling) => {
    const got = run(start, results);
    expect(got.states).toBe(states);
    expect(got.settling).toBe(settling);
  });

  it('reports exactly one transition per state change, with from and to', () => {
    let h = initialHealth('up');
    const seen: string[] = [];
    for (const ok of [false, false, false, true, true, false]) {
      const o = observe(h, ok, T);
      h = o.health;
      if (o.transition) seen.push(`${o.transition.from}->${o.transition.to}`);
    }
    expect(seen).toEqual(['up->down', 'down->up']);
  });

  it('counts consecutive results and resets the opposite count', () => {
    const a = observe(initialHealth('up'), false, T).health;
    expect(a).toEqual({ state: 'up', successes: 0, failures: 1 });
    const b = observe(a, true, T).health;
    expect(b).toEqual({ state: 'up', successes: 1, failures: 0 });
  });

  it('with rise 1 and fall 1 every result decides at once', () => {
    expect(run('up', 'xoxo', { rise: 1, fall: 1 })).toEqual({ states: 'DUDU', settling: '....', transitions: 4 });
  });

  // Exhaustive: every sequence of up to 8 results from both states agrees with a
  // direct reading of the rule "fall consecutive failures / rise consecutive successes".
  it('agrees with the rule on all 2x510 sequences of length 1 to 8', () => {
    for (const start of ['up', 'down'] as const) {
      for (let len = 1; len <= 8; len++) {
        for (let bits = 0; bits < 1 << len; bits++) {
          const results = [...Array(len)].map((_, i) => ((bits >> i) & 1 ? 'o' : 'x')).join('');
          let state: BackendState = start;
          let runOk = 0;
          let runFail = 0;
          for (const r of results) {
            if (r === 'o') {
              runOk++;
              runFail = 0;
            } else {
              runFail++;
              runOk = 0;
            }
            if (state === 'up' && runFail >= T.fall) state = 'down';
            if (state === 'down' && runOk >= T.rise) state = 'up';
          }
          const got = run(start, results);
          expect(got.states.at(-1), `${start} ${results}`).toBe(state === 'up' ? 'U' : 'D');
        }
      }
    }
  });

  it('isSettling is true only while results disagree with the state', () => {
    expect(isSettling({ state: 'up', successes: 3, failures: 0 })).toBe(false);
    expect(isSettling({ state: 'up', successes: 0, failures: 1 })).toBe(true);
    expect(isSettling({ state: 'down', successes: 0, failures: 5 })).toBe(false);
    expect(isSettling({ state: 'down', successes: 1, failures: 0 })).toBe(true);
  });
});
