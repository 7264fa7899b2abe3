import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config/load.js';
import {
  createCountWindow,
  describeVerdict,
  ejectionAllowed,
  ejectionLimit,
  nextEjection,
  passiveReadPeriod,
  passiveVerdict,
  tally,
} from '../src/health/passive.js';
import { renderRules } from '../src/kernel/rules/command.js';
import { parseNftCountersJson } from '../src/kernel/writers/nft.js';
import { parsePlan } from '../src/plan/load.js';

// Passive health's rules as pure functions, and its config: no kernel, no root.

const config = { minConnections: 20, failureRatio: 0.5 };

describe('passive verdict', () => {
  it('derives unanswered connections; resets first, then answers up to what is left', () => {
    expect(tally({ new: 10, answered: 7, reset: 1 })).toEqual({ new: 10, answered: 7, reset: 1, unanswered: 2 });
    // A retransmitted SYN-ACK counts twice in the kernel: never more answers than connections.
    expect(tally({ new: 10, answered: 12, reset: 0 })).toEqual({ new: 10, answered: 10, reset: 0, unanswered: 0 });
    // Answered, then reset: a failure, counted once.
    expect(tally({ new: 10, answered: 10, reset: 4 })).toEqual({ new: 10, answered: 6, reset: 4, unanswered: 0 });
    expect(tally({ new: 0, answered: 3, reset: 2 })).toEqual({ new: 0, answered: 0, reset: 0, unanswered: 0 });
  });

  it('ejects for window times the ejections in a row, at most maxEjectionTime; each window back in takes one off', () => {
    const w = 5000;
    const max = 300_000;
    expect(nextEjection(undefined, 0, w, max)).toEqual({ ejections: 1, holdMs: 5000 });
    // Ejected again 1 s after the first ejection ended: the second in a row.
    expect(nextEjection({ ejections: 1, endedAt: 5000 }, 6000, w, max)).toEqual({ ejections: 2, holdMs: 10_000 });
    expect(nextEjection({ ejections: 2, endedAt: 20_000 }, 24_999, w, max)).toEqual({ ejections: 3, holdMs: 15_000 });
    // Two whole windows in service since: two off the count.
    expect(nextEjection({ ejections: 3, endedAt: 0 }, 10_000, w, max)).toEqual({ ejections: 2, holdMs: 10_000 });
    // A long calm starts over at one window.
    expect(nextEjection({ ejections: 9, endedAt: 0 }, 3_600_000, w, max)).toEqual({ ejections: 1, holdMs: 5000 });
    // The cap, and a cap below the window (one window then).
    expect(nextEjection({ ejections: 99, endedAt: 0 }, 1, w, max)).toEqual({ ejections: 100, holdMs: 300_000 });
    expect(nextEjection({ ejections: 4, endedAt: 0 }, 1, w, 1000)).toEqual({ ejections: 5, holdMs: 5000 });
  });

  it('gives no verdict below minConnections, fails at failureRatio and above', () => {
    expect(passiveVerdict({ new: 19, answered: 0, reset: 0 }, config).kind).toBe('quiet');
    expect(passiveVerdict({ new: 20, answered: 10, reset: 0 }, config)).toMatchObject({ kind: 'failing', ratio: 0.5 });
    expect(passiveVerdict({ new: 20, answered: 11, reset: 0 }, config)).toMatchObject({ kind: 'ok', ratio: 0.45 });
    expect(passiveVerdict({ new: 40, answered: 20, reset: 20 }, config)).toMatchObject({ kind: 'failing', ratio: 0.5 });
    expect(
      passiveVerdict({ new: 100, answered: 100, reset: 0 }, { minConnections: 1, failureRatio: 0.01 }),
    ).toMatchObject({ kind: 'ok', ratio: 0 });
    expect(describeVerdict(passiveVerdict({ new: 40, answered: 12, reset: 3 }, config), 2000)).toBe(
      '25 of 40 new connections in the latest 2s unanswered, 3 reset (ratio 0.70)',
    );
    expect(describeVerdict(passiveVerdict({ new: 3, answered: 0, reset: 0 }, config), 10_000)).toBe(
      '3 of 3 new connections in the latest 10s unanswered, 0 reset',
    );
  });

  it('caps ejection at maxEjectPercent of the backends, counting every one already out', () => {
    expect(ejectionLimit(3, 50)).toBe(1);
    expect(ejectionLimit(4, 50)).toBe(2);
    expect(ejectionLimit(1, 50)).toBe(0);
    expect(ejectionLimit(10, 100)).toBe(10);
    expect(ejectionLimit(10, 0)).toBe(0);
    expect(ejectionLimit(3, 33.34)).toBe(1);
    expect(ejectionAllowed(3, 0, 50)).toBe(true);
    expect(ejectionAllowed(3, 1, 50)).toBe(false);
    expect(ejectionAllowed(4, 1, 50)).toBe(true);
    expect(ejectionAllowed(4, 2, 50)).toBe(false);
    expect(ejectionAllowed(1, 0, 50)).toBe(false);
  });

  it('sums the reads of the latest window only', () => {
    const w = createCountWindow(2000);
    w.add(0, { new: 5, answered: 5, reset: 0 });
    w.add(1000, { new: 5, answered: 0, reset: 1 });
    expect(w.sum(1000)).toEqual({ new: 10, answered: 5, reset: 1 });
    w.add(2000, { new: 1, answered: 0, reset: 0 });
    expect(w.sum(2000)).toEqual({ new: 6, answered: 0, reset: 1 });
    expect(w.sum(3500)).toEqual({ new: 1, answered: 0, reset: 0 });
    expect(w.sum(10_000)).toEqual({ new: 0, answered: 0, reset: 0 });
  });

  it('reads a quarter of the shortest window, within bounds; no passive service, no reads', () => {
    expect(passiveReadPeriod([])).toBeUndefined();
    expect(passiveReadPeriod([10_000, 2000])).toBe(500);
    expect(passiveReadPeriod([100])).toBe(250);
    expect(passiveReadPeriod([3_600_000])).toBe(10_000);
  });

  it('parses the named counters of `nft -j reset counters`', () => {
    const listing =
      '{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "inet", "name": "pn_0x101", "table": "nfh", "handle": 2, "packets": 12, "bytes": 720}}, {"counter": {"family": "inet", "name": "pa_0x101", "table": "nfh", "handle": 3, "packets": 11, "bytes": 660}}]}';
    expect([...parseNftCountersJson(listing)]).toEqual([
      ['pn_0x101', 12],
      ['pa_0x101', 11],
    ]);
  });
});

const yaml = (writer: string, passive: string) => `
writer: ${writer}
services:
  - name: mail
    vip: 10.0.0.1
    port: 25
    passive: ${passive}
    backends:
      - { name: a, address: 192.168.0.1 }
      - { name: b, address: 192.168.0.2 }
`;

const problems = (text: string) => {
  try {
    parsePlan(text);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
};

describe('passive config', () => {
  it('fills the defaults and names the counters by mark', () => {
    const plan = parsePlan(yaml('{ type: nft }', '{}'));
    expect(plan.services[0]!.passive).toEqual({
      window: 10_000,
      minConnections: 20,
      failureRatio: 0.5,
      maxEjectPercent: 50,
      maxEjectionTime: 300_000,
      eject: false,
    });
    expect(plan.backends[1]!.passive).toEqual({ new: 'pn_0x102', answered: 'pa_0x102', reset: 'pr_0x102' });
    const rules = renderRules(plan, 'nft');
    expect(rules).toContain('counter name meta mark map @passive_new');
    expect(rules).toContain('elements = { 0x101 : "pa_0x101", 0x102 : "pa_0x102" }');
    expect(rules).toContain('type filter hook forward priority filter; policy accept;');
    // Without passive the table has none of it.
    const plain = renderRules(parsePlan(yaml('{ type: nft }', '{}').replace('    passive: {}\n', '')), 'nft');
    expect(plain).not.toContain('passive');
  });

  it('refuses passive with the condition and ipset writers, and values out of range, saying why', () => {
    expect(problems(yaml('{ type: condition, dir: /tmp/x }', '{}'))).toEqual([
      'services[0].passive: passive needs the nft writer (this config uses condition): the counters it reads are named nft counters, read and zeroed in one call (docs/passive.md)',
    ]);
    expect(problems(yaml('{ type: ipset }', '{}'))).toEqual([
      'services[0].passive: passive needs the nft writer (this config uses ipset): the counters it reads are named nft counters, read and zeroed in one call (docs/passive.md)',
    ]);
    expect(problems(yaml('{ type: nft }', '{ failureRatio: 0 }'))).toEqual([
      expect.stringMatching(/^services\[0\]\.passive\.failureRatio: /),
    ]);
    expect(problems(yaml('{ type: nft }', '{ maxEjectPercent: 150 }'))).toEqual([
      expect.stringMatching(/^services\[0\]\.passive\.maxEjectPercent: /),
    ]);
    expect(problems(yaml('{ type: nft }', '{ window: 10 }'))).toEqual([
      expect.stringMatching(/^services\[0\]\.passive\.window: /),
    ]);
    expect(problems(yaml('{ type: nft }', '{ ejekt: true }'))).toEqual([expect.stringMatching(/ejekt/)]);
  });
});
