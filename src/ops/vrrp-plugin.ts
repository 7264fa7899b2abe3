/**
 * keepalived integration: a `track_file` whose integer follows this balancer's live
 * capacity, so the VRRP pair keeps the VIP on the balancer that can still reach its
 * backends. keepalived (2.2) adds value * weight to the instance's priority and puts the
 * instance in FAULT when the result is below -253; with the track file's weight 1:
 *   every backend up        0
 *   some capacity lost      -ceil(penalty * lost share), between -1 and -penalty
 *   no capacity at all      -254: FAULT, the peer takes the VIP at once
 *   the daemon stopped      -254, written as its last word
 *   the daemon starting     -254 until its first round of checks is done
 * A daemon that dies without a last word is keepalived's vrrp_script's business
 * (pgrep on the daemon's command line): see docs/pair.md.
 */
import { VRRP_FAULT } from '../config/operations.js';
import type { BackendStatus, DaemonPlugin } from '../observer.js';
import { writeFileAtomically } from './state-file.js';

/** Share of the live capacity, 0 to 1: per service the weight of its up backends over all its weight, averaged over services. */
export function liveCapacity(backends: readonly BackendStatus[]): number {
  const services = new Map<string, { up: number; all: number }>();
  for (const b of backends) {
    const s = services.get(b.spec.service) ?? { up: 0, all: 0 };
    s.all += b.spec.weight;
    if (b.health.state === 'up') s.up += b.spec.weight;
    services.set(b.spec.service, s);
  }
  if (services.size === 0) return 0;
  let sum = 0;
  for (const s of services.values()) sum += s.up / s.all;
  return sum / services.size;
}

/** The track-file value for a capacity share (see the table above). */
export function trackValue(capacity: number, penalty: number): number {
  if (capacity <= 0) return VRRP_FAULT;
  if (capacity >= 1) return 0;
  // At least 1 below full: any lost backend shows in the priority.
  return -Math.max(1, Math.ceil(penalty * (1 - capacity) - 1e-9));
}

/** How long a failed write waits before it is tried again. */
const RETRY_MS = 1000;

export const vrrpPlugin: DaemonPlugin = ({ daemon, log }) => {
  if (!daemon.config().vrrp) return undefined;
  let chain: Promise<void> = Promise.resolve();
  let queued = false;
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;
  /** What the file holds as far as we know: path and value. */
  let written: { file: string; value: number } | undefined;
  let failing: string | undefined;

  const writeValue = async (value: number, why: string) => {
    const vrrp = daemon.config().vrrp;
    if (!vrrp) return;
    const file = vrrp.trackFile;
    if (written?.file === file && written.value === value) return;
    try {
      await writeFileAtomically(file, `${value}\n`);
      if (failing) log.info({ event: 'vrrp_file_recovered', file }, `writing the track file ${file} works again`);
      failing = undefined;
      written = { file, value };
      log.info(
        { event: 'vrrp_track_value', file, value, why },
        `track file ${file}: ${value}${value === VRRP_FAULT ? ' (FAULT: keepalived gives up the VIP)' : ''}: ${why}`,
      );
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const code = e.code ?? e.message;
      if (failing !== code)
        log.error(
          { event: 'vrrp_file_failed', file, code },
          `cannot write the track file ${file}: ${code}: keepalived does not see this balancer's capacity; retrying`,
        );
      failing = code;
      if (!stopped && !retry) {
        retry = setTimeout(() => {
          retry = undefined;
          request();
        }, RETRY_MS);
        retry.unref();
      }
    }
  };

  const current = (): [number, string] => {
    const capacity = liveCapacity(daemon.backends());
    const penalty = daemon.config().vrrp?.penalty ?? 0;
    return [trackValue(capacity, penalty), `live capacity ${Math.round(capacity * 1000) / 10}%`];
  };

  /** Coalesces requests: at most one write queued behind the one under way. */
  const request = () => {
    if (stopped || queued) return;
    queued = true;
    chain = chain.then(() => {
      queued = false;
      return stopped ? undefined : writeValue(...current());
    });
  };

  // Until the first round of checks, this balancer's view is unknown: it does not claim the VIP.
  chain = chain.then(() => writeValue(VRRP_FAULT, 'nf-healthd starting: no round of checks yet'));

  return {
    onReady: request,
    onTransition: request,
    onReloaded: request,
    onStopping() {
      stopped = true;
      if (retry) clearTimeout(retry);
    },
    onStopped() {
      // A stopped daemon no longer steers the kernel: the peer, whose daemon runs, should hold the VIP.
      chain = chain.then(() => writeValue(VRRP_FAULT, 'nf-healthd stopped'));
    },
  };
};
