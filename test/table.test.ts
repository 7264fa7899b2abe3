import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config/load.js';
import {
  apportion,
  type BackendWant,
  changedSlots,
  computeTable,
  nextRampStep,
  rampAt,
  type ServiceTable,
} from '../src/kernel/table.js';
import { parseNftMapsJson, tableCommands } from '../src/kernel/writers/nft.js';
import type { ServicePlan } from '../src/plan/compile.js';
import { parsePlan } from '../src/plan/load.js';

// The balancing table as a pure function: no kernel, just the Plan and wanted states.

function service(backends: string, extra = ''): ServicePlan {
  const plan = parsePlan(`
writer: { type: nft }
services:
  - name: svc
    vip: 10.0.0.1
    port: 25
${extra}
    backends:
${backends}
`);
  return plan.services[0]!;
}

const three = (extra = '') =>
  service(['a', 'b', 'c'].map((n, i) => `      - { name: ${n}, address: 192.168.0.${i + 1} }`).join('\n'), extra);

/** Wanted states by name; missing names are up. */
const states =
  (s: Record<string, BackendWant | boolean>) =>
  (b: { name: string }): BackendWant => {
    const w = s[b.name];
    return w === undefined ? { up: true } : typeof w === 'boolean' ? { up: w } : w;
  };

const share = (t: ServiceTable) => Object.fromEntries(t.shares);

describe('balancing table', () => {
  it("splits three equal backends evenly; a dead one's slots spread over both survivors; back, it gets its own slots", () => {
    const svc = three();
    expect(svc.balancing.slots).toBe(300);
    const all = computeTable(svc, states({}));
    expect(share(all)).toEqual({ a: 100, b: 100, c: 100 });
    // Interleaved: every window of 3 consecutive slots has one of each.
    expect(Array.from(all.slots.slice(0, 6))).toEqual([0x101, 0x102, 0x103, 0x101, 0x102, 0x103]);
    const aDown = computeTable(svc, states({ a: false }));
    expect(aDown.mode).toBe('normal');
    expect(share(aDown)).toEqual({ b: 150, c: 150 });
    // Only a's slots moved, and they went to both b and c.
    const moved = changedSlots(all.slots, aDown.slots);
    expect(moved.length).toBe(100);
    expect(moved.every((k) => all.slots[k] === 0x101)).toBe(true);
    // Any 60 consecutive slots split 30/30 (±2): short runs of new connections stay even.
    for (let start = 0; start + 60 <= 300; start += 7) {
      const window = Array.from(aDown.slots.slice(start, start + 60));
      expect(Math.abs(window.filter((m) => m === 0x102).length - 30)).toBeLessThanOrEqual(2);
    }
    const back = computeTable(svc, states({}));
    expect(changedSlots(all.slots, back.slots)).toEqual([]);
  });

  it('applies weights to the split, also after a failure', () => {
    const svc = service(
      [1, 2, 3].map((w, i) => `      - { name: w${w}, address: 192.168.0.${i + 1}, weight: ${w} }`).join('\n'),
    );
    expect(svc.balancing.slots).toBe(600);
    expect(share(computeTable(svc, states({})))).toEqual({ w1: 100, w2: 200, w3: 300 });
    expect(share(computeTable(svc, states({ w2: false })))).toEqual({ w1: 150, w3: 450 });
    expect(share(computeTable(svc, states({ w3: false })))).toEqual({ w1: 200, w2: 400 });
  });

  it('keeps every live backend within 1 % of its exact share, whatever is live', () => {
    const svc = service(
      [1, 3, 4, 7, 2].map((w, i) => `      - { name: n${i}, address: 192.168.0.${i + 1}, weight: ${w} }`).join('\n'),
    );
    const weights = [1, 3, 4, 7, 2];
    for (let mask = 1; mask < 32; mask++) {
      const live = (i: number) => (mask & (1 << i)) !== 0;
      const t = computeTable(svc, (b) => ({ up: live(Number(b.name.slice(1))) }));
      const total = weights.reduce((a, w, i) => a + (live(i) ? w : 0), 0);
      weights.forEach((w, i) => {
        const got = (t.shares.get(`n${i}`) ?? 0) / svc.balancing.slots;
        const exact = live(i) ? w / total : 0;
        expect(Math.abs(got - exact)).toBeLessThanOrEqual(exact / 100 + 1e-12);
      });
    }
  });

  it("maglev: only the dead backend's slots move, and the table depends on names, not positions", () => {
    const lines = ['a', 'b', 'c'].map((n, i) => `      - { name: ${n}, address: 192.168.0.${i + 1} }`);
    const svc = service(lines.join('\n'), '    scheduler: maglev');
    expect(svc.balancing.slots).toBe(509);
    const all = computeTable(svc, states({}));
    expect(share(all)).toEqual({ a: 170, b: 170, c: 169 });
    const bDown = computeTable(svc, states({ b: false }));
    const moved = changedSlots(all.slots, bDown.slots);
    expect(moved.every((k) => all.slots[k] === 0x102)).toBe(true);
    expect(moved.length).toBe(170);
    // The same backends listed in another order (marks differ): each slot goes to the same name.
    const reordered = service([lines[2], lines[0], lines[1]].join('\n'), '    scheduler: maglev');
    const other = computeTable(reordered, states({ b: false }));
    const nameOf = (s: ServicePlan, mark: number) => s.backends.find((b) => b.kernel.mark === mark)?.name;
    for (let k = 0; k < 509; k++) expect(nameOf(reordered, other.slots[k]!)).toBe(nameOf(svc, bDown.slots[k]!));
  });

  it('slow start: a returning backend ramps from 10 % to its weight in steps, keeping its earlier slots', () => {
    const svc = three();
    expect(rampAt(0, 10_000)).toBeCloseTo(0.1);
    expect(rampAt(5_000, 10_000)).toBeCloseTo(0.55);
    expect(rampAt(10_000, 10_000)).toBeUndefined();
    expect(nextRampStep(0, 10_000)).toBe(1000);
    expect(nextRampStep(9_999, 10_000)).toBe(10_000);
    let previous = 0;
    for (let t = 0; t <= 10_000; t += 1000) {
      const ramp = rampAt(t, 10_000);
      const table = computeTable(svc, states({ c: { up: true, ramp } }));
      const c = table.shares.get('c') ?? 0;
      expect(c).toBeGreaterThan(previous);
      previous = c;
    }
    expect(previous).toBe(100);
    const first = computeTable(svc, states({ c: { up: true, ramp: 0.1 } }));
    // 10 % of its weight: 1/(2 + 0.1) of the connections.
    expect(first.shares.get('c')).toBe(Math.round(300 * (0.1 / 2.1)));
  });

  it('backup: no slots while a primary is up; all of them when none is; a config of only backups is refused', () => {
    const svc = service(
      [
        '      - { name: p1, address: 192.168.0.1 }',
        '      - { name: p2, address: 192.168.0.2 }',
        '      - { name: spare, address: 192.168.0.3, backup: true }',
      ].join('\n'),
    );
    expect(share(computeTable(svc, states({})))).toEqual({ p1: 150, p2: 150 });
    expect(share(computeTable(svc, states({ p1: false })))).toEqual({ p2: 300 });
    const backup = computeTable(svc, states({ p1: false, p2: false }));
    expect(backup.mode).toBe('backup');
    expect(share(backup)).toEqual({ spare: 300 });
    const none = computeTable(svc, states({ p1: false, p2: false, spare: false }));
    expect(none.mode).toBe('reject');
    expect(none.slots.every((m) => m === 0)).toBe(true);
    expect(() => service('      - { name: only, address: 192.168.0.1, backup: true }')).toThrow(ConfigError);
  });

  it('panic: below the threshold every primary that is not administratively out serves', () => {
    const svc = three('    panicThreshold: 50');
    expect(computeTable(svc, states({ a: false })).mode).toBe('normal');
    const panic = computeTable(svc, states({ a: false, b: false }));
    expect(panic.mode).toBe('panic');
    expect(share(panic)).toEqual({ a: 100, b: 100, c: 100 });
    const out = computeTable(svc, states({ a: false, b: { up: false, adminOut: true } }));
    expect(share(out)).toEqual({ a: 150, c: 150 });
    expect(computeTable(svc, states({ a: false, b: false, c: false })).mode).toBe('panic');
    // No threshold: all down means reject.
    expect(computeTable(three(), states({ a: false, b: false, c: false })).mode).toBe('reject');
  });

  it('apportions exactly, remainders to the largest fractions', () => {
    expect(apportion(10, [1, 1, 1])).toEqual([4, 3, 3]);
    expect(apportion(7, [0, 2, 1])).toEqual([0, 5, 2]);
    expect(apportion(5, [0, 0])).toEqual([0, 0]);
  });

  it('refuses what the table cannot do, saying where and why', () => {
    const problems = (backends: string, extra = '') => {
      try {
        service(backends, extra);
      } catch (err) {
        if (err instanceof ConfigError) return err.problems.map((p) => p.message);
        throw err;
      }
      return [];
    };
    expect(problems('      - { name: only, address: 192.168.0.1, backup: true }')).toEqual([
      expect.stringContaining('every backend of this service is a backup'),
    ]);
    expect(problems('      - { name: a, address: 192.168.0.1 }', '    hash: flow')).toEqual([
      'hash applies to the maglev scheduler only (this service uses roundrobin)',
    ]);
    const far = [
      '      - { name: a, address: 192.168.0.1, weight: 1 }',
      '      - { name: b, address: 192.168.0.2, weight: 1000 }',
    ];
    expect(problems(far.join('\n'))).toEqual([expect.stringContaining('need 100100 slots to split within 1 %')]);
  });

  it('nft: writes only the moved slots, or flushes and fills when more than half move; reads maps back', () => {
    const target = { key: 'slots_svc', label: 'nft map inet nfh slots_svc' };
    const known = Uint32Array.from([0x101, 0x102, 0x103, 0x101, 0x102, 0x103]);
    const slots = Uint32Array.from([0x102, 0x102, 0x103, 0x103, 0x102, 0x103]);
    expect(tableCommands('inet nfh', { target, slots, known })).toEqual([
      'delete element inet nfh slots_svc { 0, 3 }',
      'add element inet nfh slots_svc { 0 : 0x102, 3 : 0x103 }',
    ]);
    expect(tableCommands('inet nfh', { target, slots, known: slots })).toEqual([]);
    const flushed = tableCommands('inet nfh', { target, slots, known: undefined });
    expect(flushed[0]).toBe('flush map inet nfh slots_svc');
    expect(flushed[1]).toBe(
      'add element inet nfh slots_svc { 0 : 0x102, 1 : 0x102, 2 : 0x103, 3 : 0x103, 4 : 0x102, 5 : 0x103 }',
    );
    expect(() => tableCommands('inet nfh', { target: { ...target, key: 'x; flush ruleset' }, slots, known })).toThrow(
      /refusing nft map name/,
    );
    const listing =
      '{"nftables": [{"metainfo": {}}, {"set": {"name": "up", "elem": [257]}}, {"map": {"name": "slots_svc", "elem": [[0, 257], [1, 258], [{"elem": {"val": 2}}, 259]]}}]}';
    expect([...parseNftMapsJson(listing).get('slots_svc')!]).toEqual([
      [0, 257],
      [1, 258],
      [2, 259],
    ]);
  });
});
