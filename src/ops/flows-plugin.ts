/**
 * The connection lifecycle around health and admin state, through conntrack:
 *
 * - counts each backend's open flows by its mark, one `conntrack -L` per interval for
 *   all backends (shown by status, /metrics);
 * - a draining backend whose count reaches 0 is `drained` (log line, notify.drained,
 *   nfh_drained_total); at its `--deadline` the flows still open are deleted;
 * - a backend that goes down by health loses its UDP flows and its unanswered SYNs at
 *   once (all its flows with `reapOnDown: all`), once the kernel stopped choosing it:
 *   otherwise a UDP client with a fixed source port stays DNATed to the dead backend.
 *
 * Unlike the other operating parts this one acts on the kernel, but only on conntrack
 * entries of flows the rules already steer away from; the balancing state stays the
 * writer loop's.
 */

import pLimit from 'p-limit';
import { steadyNow } from '../health/clock.js';
import { countFlows, deleteFlows, type FlowSelection } from '../kernel/conntrack.js';
import type { BackendStatus, DaemonPlugin } from '../observer.js';
import { runHook } from './hooks-plugin.js';
import { metricsFor } from './metrics.js';
import { shortestInterval } from './state-plugin.js';

const DELETES_AT_ONCE = 2;

export const flowsPlugin: DaemonPlugin = ({ daemon, log }) => {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let failing: 'missing' | 'failed' | undefined;
  const stop = new AbortController();
  const deadlines = new Map<string, NodeJS.Timeout>();
  /** Backends that went down by health and whose flows go once the kernel holds them down. */
  const toReap = new Set<BackendStatus>();
  const conntrack = () => daemon.config().conntrackPath;
  /**
   * `conntrack -D` calls at once: one backend going down costs two, and a switch failure
   * can take a thousand backends down in one interval; unbounded, that was two thousand
   * processes at once (each forked from the daemon).
   */
  const deleting = pLimit(DELETES_AT_ONCE);

  const conntrackFailed = (err: unknown, doing: string) => {
    const message = err instanceof Error ? err.message : String(err);
    // One line per episode, keyed by kind: the message names the call (-L, -D with a mark),
    // and a backend going down in a long episode must not log it again.
    const kind = message.endsWith(': ENOENT') ? 'missing' : 'failed';
    if (failing === kind) return;
    failing = kind;
    if (kind === 'missing') {
      // Not installed: a setup without marks or conntrack is valid, only these extras are off.
      log.info(
        { event: 'conntrack_missing', path: conntrack() },
        `${conntrack()} not found: no connection counts, drain deadlines or flow reaping (install conntrack to have them)`,
      );
      return;
    }
    log.error(
      { event: 'conntrack_failed', detail: message },
      `cannot ${doing}: ${message}: connection counts, drain deadlines and reaping wait for conntrack (package conntrack, CAP_NET_ADMIN)`,
    );
  };
  const conntrackWorks = () => {
    if (failing === undefined) return;
    failing = undefined;
    log.info({ event: 'conntrack_recovered' }, 'conntrack works again');
  };

  const drained = (b: BackendStatus, admin: NonNullable<BackendStatus['admin']>) => {
    admin.drainedAt = steadyNow();
    const { service, name: backend, address, port } = b.spec;
    const tookMs = admin.drainedAt - admin.since;
    log.info(
      { event: 'drained', service, backend, tookMs },
      `backend ${backend} is drained: no open connections left (${(tookMs / 1000).toFixed(1)}s after drain was set)`,
    );
    metricsFor(daemon).countDrained(b);
    const notify = daemon.config().notify;
    if (!notify?.drained) return;
    const env = {
      NFH_EVENT: 'drained',
      NFH_SERVICE: service,
      NFH_BACKEND: backend,
      NFH_ADDRESS: address,
      NFH_PORT: String(port),
    };
    runHook(notify.drained, env, notify.timeout, stop.signal).then((r) => {
      metricsFor(daemon).hookRuns.inc({ hook: 'drained', outcome: r.outcome });
      const line = {
        event: 'hook',
        hook: 'drained',
        backend,
        service,
        program: notify.drained![0],
        outcome: r.outcome,
      };
      if (r.outcome === 'ok') log.debug(line, `notify.drained for ${backend} ran`);
      else log.warn({ ...line, detail: r.detail }, `notify.drained for ${backend} failed: ${r.detail}`);
    });
  };

  let counting: Promise<void> | undefined;
  const count = () => {
    counting ??= (async () => {
      const backends = daemon.backends();
      try {
        const counts = await countFlows(conntrack(), new Set(backends.map((b) => b.spec.kernel.mark)));
        conntrackWorks();
        for (const b of backends) {
          b.connections = counts.get(b.spec.kernel.mark) ?? 0;
          if (b.admin?.state === 'drain' && b.connections === 0 && b.admin.drainedAt === undefined) drained(b, b.admin);
        }
      } catch (err) {
        conntrackFailed(err, 'count connections');
        for (const b of backends) delete b.connections;
      }
    })().finally(() => {
      counting = undefined;
    });
    return counting;
  };

  const tick = () => {
    if (stopped) return;
    count().finally(() => {
      if (stopped) return;
      timer = setTimeout(tick, shortestInterval(daemon));
      timer.unref();
    });
  };

  const remove = async (b: BackendStatus, selection: FlowSelection): Promise<number | undefined> => {
    try {
      // Checked when its turn comes: a reload may have removed the backend while it waited.
      const deleted = await deleting(() =>
        daemon.isCurrent(b) ? deleteFlows(conntrack(), b.spec.kernel.mark, selection) : Promise.resolve(0),
      );
      conntrackWorks();
      return deleted;
    } catch (err) {
      conntrackFailed(err, `delete the flows of ${b.spec.id}`);
      return undefined;
    }
  };

  const atDeadline = async (b: BackendStatus, admin: NonNullable<BackendStatus['admin']>) => {
    deadlines.delete(b.spec.id);
    if (stopped || b.admin !== admin) return; // set again since: that setting decides
    const deleted = await remove(b, 'all');
    if (deleted === undefined) return;
    admin.deadlineDoneAt = steadyNow();
    log.warn(
      { event: 'drain_deadline', service: b.spec.service, backend: b.spec.name, deleted },
      `backend ${b.spec.name}: drain deadline reached, ${deleted} flows deleted (their clients get a reset and reconnect elsewhere)`,
    );
    await count();
  };

  const armDeadline = (b: BackendStatus) => {
    clearTimeout(deadlines.get(b.spec.id));
    deadlines.delete(b.spec.id);
    const admin = b.admin;
    if (admin?.state !== 'drain' || admin.deadline === undefined || admin.deadlineDoneAt !== undefined) return;
    const t = setTimeout(() => void atDeadline(b, admin), Math.max(0, admin.deadline - steadyNow()));
    t.unref();
    deadlines.set(b.spec.id, t);
  };

  const reap = async (b: BackendStatus) => {
    toReap.delete(b);
    if (stopped || !daemon.isCurrent(b)) return; // removed by a reload meanwhile: not ours to reap
    const mode = daemon.config().services.find((s) => s.name === b.spec.service)?.reapOnDown ?? 'stale';
    if (mode === 'none') return;
    const all = mode === 'all';
    const selections: FlowSelection[] = all ? ['all'] : ['udp', 'syn-sent'];
    let deleted = 0;
    for (const selection of selections) {
      const n = await remove(b, selection);
      if (n === undefined) return;
      deleted += n;
    }
    // Nothing to delete is the common case of a TCP service: not worth a line at info.
    (deleted > 0 ? log.info : log.debug).call(
      log,
      { event: 'flows_reaped', service: b.spec.service, backend: b.spec.name, deleted, flows: all ? 'all' : 'stale' },
      `backend ${b.spec.name} is down: ${deleted} ${all ? '' : 'UDP and unanswered TCP '}flows deleted so their clients reach another backend`,
    );
  };

  /** The kernel holds the backend down (confirmed): new flows no longer go to it. */
  const heldDown = (b: BackendStatus) => b.written?.confirmed === true && !b.written.up;

  return {
    onReady() {
      for (const b of daemon.backends()) armDeadline(b);
      tick();
    },
    onAdmin(b) {
      armDeadline(b);
      void count();
    },
    onTransition(b, _from, to) {
      if (to !== 'down') {
        toReap.delete(b);
        return;
      }
      toReap.add(b);
      // Already held down (drain, maint): no write follows to wait for.
      if (heldDown(b)) void reap(b);
    },
    onSync(b) {
      if (toReap.has(b) && heldDown(b)) void reap(b);
    },
    onReloaded(ok) {
      if (!ok) return;
      // Backends a reload removed: not reaped, and not kept by a queue of conntrack calls.
      for (const b of toReap) if (!daemon.isCurrent(b)) toReap.delete(b);
    },
    onStopping() {
      stopped = true;
      stop.abort();
      clearTimeout(timer);
      for (const t of deadlines.values()) clearTimeout(t);
      deadlines.clear();
    },
  };
};
