import { afterEach, describe, expect, it } from 'vitest';
import {
  backend2First,
  buildLab,
  cleanupLabs,
  connect,
  crashScenario,
  daemonStory,
  echoes,
  establishedToVip,
  FRONT,
  hold,
  type LabOptions,
  LENIENT_TIMING,
  MASTER_DOWN_MS,
  MOVE_BOUND_MS,
  stopAll,
} from './support/pair-lab.js';

// The pair of test/pair.test.ts without state sync: what a consistent hash does for
// established connections. Same lab (test/support/pair-lab.ts): namespaces, real
// keepalived from Debian, nf-healthd with the nft writer on both balancers, real SMTP
// backends that greet with their own name, real connections counted. Then the same two
// balancers active/active behind an ECMP route (no keepalived): the route moves flows
// from one balancer to the other.

/**
 * The flow hash: jhash of client address and port, VIP and port. Both balancers compute
 * the same table slot for slot and the same seed (from the service name), and see the
 * client's packets unchanged, so they pick the same backend for a connection; the ports
 * spread one client's connections over the backends (`hash: source` would pin them all
 * to one).
 */
const MAGLEV = { scheduler: 'maglev', hash: 'flow' };

afterEach(cleanupLabs);

const tally = (words: string[]) =>
  Object.fromEntries([...new Set(words)].map((w) => [w, words.filter((x) => x === w).length]));

/** The ECMP scenario: 50 flows over both balancers, then the route sends all of them to lbB. */
async function ecmpScenario(options: LabOptions) {
  const lab = await buildLab({ timing: LENIENT_TIMING, ...options, mode: 'ecmp' });
  const { A, B } = lab.lbs;
  try {
    const held = await hold(lab, 50);
    const backends = tally(held.map((h) => h.banner));
    const before = await echoes(held, 5000);
    expect(before.kept).toBe(50);
    // The route really spread them: each balancer carries some.
    const carried = { A: await establishedToVip(lab, A), B: await establishedToVip(lab, B) };
    expect(carried.A + carried.B).toBe(50);
    expect(carried.A).toBeGreaterThan(0);
    expect(carried.B).toBeGreaterThan(0);

    // All weight to lbB.
    const movedAt = performance.now();
    await lab.client.run(['ip', 'route', 'replace', `${lab.vip}/32`, 'nexthop', 'via', FRONT.B]);
    const after = await echoes(backend2First(held), 5000);
    const echoedMs = performance.now() - movedAt;
    const newOnes = await connect(lab, 10);
    return {
      backends,
      carried,
      kept: after.kept,
      broken: after.outcomes.filter((o) => o.error).length,
      errors: tally(after.outcomes.flatMap((o) => (o.error ? [o.error] : []))),
      outcomes: after.outcomes,
      onB: await establishedToVip(lab, B),
      echoedMs,
      newOnes,
    };
  } catch (err) {
    console.log(daemonStory(lab));
    throw err;
  } finally {
    await stopAll(lab);
  }
}

describe('a pair of nf-healthd balancers: maglev without state sync, nf_conntrack_tcp_loose, ECMP (namespaces, real keepalived)', () => {
  it('crash of the master, maglev flow hash, no conntrackd: the 5 established connections keep echoing', async () => {
    const r = await crashScenario({ conntrackd: false, timing: LENIENT_TIMING, service: MAGLEV });
    console.log(
      `pair crash without conntrackd (maglev, hash flow): VIP on lbB ${Math.round(r.moveMs)}ms after the crash (master-down ${Math.round(MASTER_DOWN_MS)}ms, bound ${Math.round(MOVE_BOUND_MS)}ms); ${r.kept}/5 established connections kept; backends ${JSON.stringify(r.banners)}`,
    );
    expect(r.kept).toBe(5);
  }, 120_000);

  it('the same crash with nf_conntrack_tcp_loose=0 on lbB: lbB does not pick the connections up, they are reset', async () => {
    const r = await crashScenario({ conntrackd: false, timing: LENIENT_TIMING, service: MAGLEV, looseOnB: 0 });
    const reset = r.outcomes.filter((o) => o.error).length;
    console.log(
      `pair crash without conntrackd (maglev, hash flow), nf_conntrack_tcp_loose=0 on lbB: VIP on lbB ${Math.round(r.moveMs)}ms after the crash; ${r.kept}/5 established connections kept, ${reset} reset; ${JSON.stringify(r.outcomes)}`,
    );
    expect(r.kept).toBe(0);
    expect(reset).toBe(5);
  }, 120_000);

  it('with conntrackd instead, nf_conntrack_tcp_loose=0 on lbB: the synced connections need no pick-up', async () => {
    const r = await crashScenario({ conntrackd: true, timing: LENIENT_TIMING, looseOnB: 0 });
    console.log(
      `pair crash with conntrackd (round robin), nf_conntrack_tcp_loose=0 on lbB: VIP on lbB ${Math.round(r.moveMs)}ms after the crash; ${r.kept}/5 established connections kept; ${JSON.stringify(r.outcomes)}`,
    );
    expect(r.kept).toBe(5);
  }, 120_000);

  it('active/active over ECMP, maglev: the route moves every flow to lbB, each keeps its backend (50/50)', async () => {
    const r = await ecmpScenario({ service: MAGLEV });
    console.log(
      `ECMP maglev (hash flow): 50 flows, lbA carried ${r.carried.A} and lbB ${r.carried.B}, backends ${JSON.stringify(r.backends)}; route to lbB only: ${r.kept}/50 kept their backend, ${r.broken} broken, all answered within ${Math.round(r.echoedMs)}ms; lbB now holds ${r.onB}`,
    );
    expect(r.kept).toBe(50);
    expect(r.onB).toBe(50);
    expect(r.newOnes.failures).toEqual([]);
  }, 180_000);

  it('active/active over ECMP, round robin: some flows lbA carried break when the route moves them', async () => {
    const r = await ecmpScenario({});
    console.log(
      `ECMP round robin: 50 flows, lbA carried ${r.carried.A} and lbB ${r.carried.B}, backends ${JSON.stringify(r.backends)}; route to lbB only: ${r.kept}/50 kept their backend, ${r.broken} broken ${JSON.stringify(r.errors)}`,
    );
    // lbB's own flows are in its table; of lbA's, its round robin sends some to the other backend.
    expect(r.kept).toBeGreaterThanOrEqual(r.carried.B);
    expect(r.broken).toBeGreaterThanOrEqual(1);
    expect(r.kept + r.broken).toBe(50);
    expect(r.newOnes.failures).toEqual([]);
  }, 180_000);
});
