/**
 * Keeps the state file current: soon after every change (coalesced, so a burst of
 * transitions is one write) and otherwise once per heartbeat (writePeriod); a final
 * write marked `stoppedAt` when the daemon stops. One write at a time, never blocking
 * checks.
 */
import type { Daemon, DaemonPlugin } from '../observer.js';
import { snapshot } from './snapshot.js';
import { writeStateFile } from './state-file.js';

/** Shortest interval of any backend (at least 100 ms): how often per-interval work runs. */
export function shortestInterval(daemon: Pick<Daemon, 'backends' | 'config'>): number {
  let shortest = daemon.config().defaults.interval ?? 2000;
  for (const b of daemon.backends()) if (b.spec.interval < shortest) shortest = b.spec.interval;
  return Math.max(100, shortest);
}

/** Heartbeat of the state file per backend in it, and the longest heartbeat. */
export const HEARTBEAT_MS_PER_BACKEND = 1;
export const MAX_HEARTBEAT_MS = 10_000;

/**
 * The state file's heartbeat: the shortest interval, or 1 ms per backend up to 10 s when
 * that is longer. Changes are written when they happen; the heartbeat only tells readers
 * the daemon is alive (their staleness bound is made from it, see staleAfter), so a big
 * farm does not rewrite its whole snapshot (about 650 bytes a backend) every second.
 */
export function writePeriod(daemon: Pick<Daemon, 'backends' | 'config'>): number {
  const bySize = Math.min(MAX_HEARTBEAT_MS, daemon.backends().length * HEARTBEAT_MS_PER_BACKEND);
  return Math.max(shortestInterval(daemon), bySize);
}

export const stateFilePlugin: DaemonPlugin = ({ daemon, log, configPath }) => {
  let chain: Promise<void> = Promise.resolve();
  let queued = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let failing: string | undefined;

  const writeNow = async (final: boolean) => {
    const file = daemon.config().stateFile;
    try {
      await writeStateFile(file, snapshot(daemon, { configPath, writePeriodMs: writePeriod(daemon), stopped: final }));
      if (failing) log.info({ event: 'state_file_recovered', file }, `writing the state file ${file} works again`);
      failing = undefined;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const code = e.code ?? e.message;
      // Once per episode: the checks and the kernel side go on regardless.
      if (failing !== code)
        log.error(
          { event: 'state_file_failed', file, code },
          `cannot write the state file ${file}: ${code}: status and restarts will not see the current state`,
        );
      failing = code;
    }
  };

  /** Coalesces requests: at most one write queued behind the one under way. */
  const request = () => {
    if (stopped || queued) return;
    queued = true;
    chain = chain.then(() => {
      queued = false;
      return stopped ? undefined : writeNow(false);
    });
  };

  const tick = () => {
    request();
    timer = setTimeout(tick, writePeriod(daemon));
    timer.unref();
  };

  return {
    onReady() {
      if (!timer && !stopped) tick();
    },
    onTransition: request,
    // An operator's decision must survive a restart that comes right after it.
    onAdmin: request,
    onSync(_b, outcome) {
      if (outcome.wrote || outcome.error || outcome.drift) request();
    },
    onReloaded: request,
    onStopping() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
    onStopped() {
      // After the last check and write: what a restart resumes from.
      chain = chain.then(() => writeNow(true));
    },
  };
};
