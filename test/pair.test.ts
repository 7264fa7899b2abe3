import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import {
  BACKENDS,
  buildLab,
  cleanupLabs,
  connect,
  crashScenario,
  LENIENT_TIMING,
  MASTER_DOWN_MS,
  MOVE_BOUND_MS,
  startNfHealthd,
  stopAll,
  vipHeld,
  waitState,
  waitTrackValue,
} from './support/pair-lab.js';

// Two balancers on a real kernel: lbA and lbB each run nf-healthd (same config, nft
// writer) and the real keepalived from Debian with config/keepalived-pair.conf (only its
// definitions of addresses, interfaces and paths replaced), and in one case the real
// conntrackd with config/conntrackd-pair.conf. A client and two SMTP backends sit on
// bridges in a switch namespace; the balancers share a dedicated sync link
// (test/support/pair-lab.ts). Everything lives in namespaces made there; every process
// is killed by pid at the end.

/**
 * The vrrp_script (pgrep) runs every second and fails once: FAULT within a second or two,
 * then lbB's master-down on the same loaded keepalived timers as a crash (MOVE_BOUND_MS).
 */
const DEATH_BOUND_MS = 2 * 1000 + MOVE_BOUND_MS;

/** lbA's packets to the backends dropped: lbA alone loses them. */
const CUT_BACKENDS = `table inet cut {
  chain out { type filter hook output priority 0; ip daddr { ${BACKENDS.join(', ')} } drop; }
}
`;

afterEach(cleanupLabs);

describe('a keepalived pair of nf-healthd balancers (namespaces, real keepalived and conntrackd)', () => {
  it('crash of the master with conntrackd: the VIP moves, the 5 established connections keep echoing', async () => {
    const r = await crashScenario({ conntrackd: true, timing: LENIENT_TIMING });
    console.log(
      `pair crash with conntrackd: VIP on lbB ${Math.round(r.moveMs)}ms after the crash (master-down ${Math.round(MASTER_DOWN_MS)}ms, bound ${Math.round(MOVE_BOUND_MS)}ms); ${r.kept}/5 established connections kept`,
    );
    expect(r.kept).toBe(5);
  }, 120_000);

  it('crash of the master without conntrackd, round robin: new connections work, established ones are reset', async () => {
    const r = await crashScenario({ conntrackd: false, timing: LENIENT_TIMING });
    console.log(
      `pair crash without conntrackd (round robin): VIP on lbB ${Math.round(r.moveMs)}ms after the crash; ${r.kept}/5 established connections kept; ${JSON.stringify(r.outcomes)}`,
    );
    // Both backends held connections, and the first one lbB saw went to the other backend.
    expect(new Set(r.banners).size).toBe(2);
    expect(r.kept).toBeLessThan(5);
    expect(r.outcomes.filter((o) => o.error).length).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it('the track file moves the VIP: backends unreachable from lbA only, nf-healthd stopped, nf-healthd killed', async () => {
    const lab = await buildLab({ conntrackd: false });
    const { A, B } = lab.lbs;
    try {
      // lbA cut from both backends by a firewall rule (its links stay up, so only the
      // track file can tell keepalived), while lbB still reaches them.
      let mark = B.keepalived!.log.items.length;
      let since = performance.now();
      await A.ns.run(['nft', '-f', '-'], CUT_BACKENDS);
      await waitTrackValue(A, '-254');
      const trackMs = (await waitState(B, 'MASTER', mark)) - since;
      expect(readFileSync(B.trackFile, 'utf8').trim()).toBe('0');
      await waitState(A, 'FAULT');
      expect(A.keepalived!.log.items.some((l) => l.includes('tracked file nf_healthd_capacity'))).toBe(true);
      expect(await vipHeld(B, true)).toBe(true);
      expect(await vipHeld(A, false)).toBe(false);
      expect((await connect(lab, 6)).failures).toEqual([]);

      // Reachable again: lbA sees its backends, preempts (priority 150 > 100).
      mark = A.keepalived!.log.items.length;
      await A.ns.run(['nft', 'delete', 'table', 'inet', 'cut']);
      await waitTrackValue(A, '0');
      await waitState(A, 'MASTER', mark);

      // nf-healthd stopped on the master: its last word is FAULT.
      mark = B.keepalived!.log.items.length;
      since = performance.now();
      A.daemon!.kill('SIGTERM');
      expect((await A.daemon!.exited).code).toBe(0);
      const stopMs = (await waitState(B, 'MASTER', mark)) - since;
      expect(readFileSync(A.trackFile, 'utf8').trim()).toBe('-254');
      expect(A.daemon!.lines.some((l) => l.event === 'vrrp_track_value' && l.value === -254)).toBe(true);

      // Started again: lbA takes the VIP back.
      mark = A.keepalived!.log.items.length;
      startNfHealthd(A);
      await waitTrackValue(A, '0');
      await waitState(A, 'MASTER', mark);

      // nf-healthd killed (no last word): the track file still says 0, but keepalived's
      // vrrp_script (pgrep on the daemon's command line) fails and the instance is FAULT.
      mark = B.keepalived!.log.items.length;
      since = performance.now();
      A.daemon!.kill('SIGKILL');
      await A.daemon!.exited;
      const killMs = (await waitState(B, 'MASTER', mark, DEATH_BOUND_MS + 5000)) - since;
      expect(readFileSync(A.trackFile, 'utf8').trim()).toBe('0');
      expect(killMs).toBeLessThanOrEqual(DEATH_BOUND_MS);
      expect(await vipHeld(B, true)).toBe(true);
      expect((await connect(lab, 6)).failures).toEqual([]);
      console.log(
        `pair track file: backends cut from lbA -> VIP on lbB in ${Math.round(trackMs)}ms; nf-healthd stopped -> ${Math.round(stopMs)}ms; nf-healthd killed -> ${Math.round(killMs)}ms (bound ${DEATH_BOUND_MS}ms)`,
      );
    } catch (err) {
      console.log(`lbA keepalived: ${A.keepalived!.log.items.slice(-15).join('\n')}`);
      console.log(
        `lbA daemon: ${A.daemon!.lines.slice(-8)
          .map((l) => l.msg)
          .join('\n')}`,
      );
      throw err;
    } finally {
      await stopAll(lab);
    }
  }, 180_000);
});
