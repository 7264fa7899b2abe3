import type { WriterConfig } from '../config/writers.js';
import type { Daemon } from '../observer.js';
import { longestCheckGap, msSinceProgress } from './pace.js';

/** Slack on top of the longest check gap before the checks count as stalled. */
const PROGRESS_SLACK_MS = 1000;
/** How long a writer call may run past its own timeout before the writer counts as stalled. */
export const WRITER_SLACK_MS = 1000;
/** How long writes may keep failing before the writer counts as stalled. */
const WRITER_FAILING_MS = 5000;

export type LivenessState = 'starting' | 'ok' | 'checks-stalled' | 'writer-stalled';

export interface Liveness {
  state: LivenessState;
  /** One sentence for /healthz, STATUS= and logs. */
  detail: string;
}

/** What the measure reads of the daemon. */
export type Watched = Pick<Daemon, 'backends' | 'lastProgressAt' | 'scheduler' | 'writerHealth' | 'config'>;

/** The longest one writer command may run: `writer.commandTimeout`, 5 s by default. */
export function writerTimeout(writer: WriterConfig): number {
  return ('commandTimeout' in writer ? writer.commandTimeout : undefined) ?? 5000;
}

/**
 * The one liveness measure, read by /healthz and the systemd watchdog alike:
 * - checks stalled: no check completed (nor started) within twice the longest period a
 *   backend waits (downInterval and timeout included) plus a second;
 * - writer stalled: one writer call running past its timeout, or writes failing for 5 s.
 * The watchdog stops pinging only when the checks stall (a restart helps a stuck
 * scheduler; it does not help a hung nft or missing rules); /healthz is 503 for both.
 */
export function assessLiveness(daemon: Watched, ready: boolean, now = performance.now()): Liveness {
  if (!ready) return { state: 'starting', detail: 'starting: the first round of checks is not done' };
  const backends = daemon.backends();
  if (backends.length > 0) {
    const limit = 2 * longestCheckGap(backends) + PROGRESS_SLACK_MS;
    const idle = msSinceProgress(daemon, now);
    if (idle > limit)
      return {
        state: 'checks-stalled',
        detail: `no check has completed for ${(idle / 1000).toFixed(1)}s (limit ${(limit / 1000).toFixed(1)}s): the scheduler is stuck`,
      };
  }
  const writer = daemon.writerHealth();
  const timeout = writerTimeout(daemon.config().writer);
  if (writer.busySince !== undefined && now - writer.busySince > timeout + WRITER_SLACK_MS)
    return {
      state: 'writer-stalled',
      detail: `writer stalled: one kernel write has been running for ${((now - writer.busySince) / 1000).toFixed(1)}s (timeout ${(timeout / 1000).toFixed(1)}s); checks go on`,
    };
  if (writer.failingSince !== undefined && now - writer.failingSince > WRITER_FAILING_MS)
    return {
      state: 'writer-stalled',
      detail: `writer stalled: kernel writes failing for ${((now - writer.failingSince) / 1000).toFixed(1)}s (${writer.lastError ?? 'unknown error'}); checks go on`,
    };
  const age = msSinceProgress(daemon, now);
  return {
    state: 'ok',
    detail: backends.length === 0 ? 'ok: no backends configured' : `ok: latest check ${(age / 1000).toFixed(1)}s ago`,
  };
}
