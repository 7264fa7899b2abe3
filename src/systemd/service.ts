import { type Daemon, type DaemonObserver, summarize } from '../daemon.js';
import { assessLiveness } from '../health/liveness.js';
import type { Logger } from '../log.js';
import { createNotifier, monotonicUsec, type Notifier, watchdogPeriodMs } from './notify.js';

export interface SystemdContext {
  daemon: Daemon;
  log: Logger;
  env?: NodeJS.ProcessEnv;
  /** Replaces the notifier from NOTIFY_SOCKET (unit tests of the wiring). */
  notifier?: Notifier;
}

const STATUS_MIN_GAP_MS = 1000;
/** Without a watchdog, how often the writer's state is looked at for STATUS=. */
const WRITER_WATCH_MS = 1000;

/**
 * The daemon as a systemd service: READY=1 once the first round is applied, STATUS=
 * kept current, RELOADING=1/READY=1 around a reload, STOPPING=1, and WATCHDOG=1 at half
 * the watchdog period while the scheduler makes progress. Without NOTIFY_SOCKET: nothing.
 */
export function systemdPlugin(context: SystemdContext): DaemonObserver | undefined {
  const { daemon, log } = context;
  const env = context.env ?? process.env;
  const notifier = context.notifier ?? createNotifier({ log, env });
  if (!notifier) return undefined;

  let ready = false;
  let stopping = false;
  let sentStatus = '';
  let sentAt = 0;
  let dirty = false;
  let timer: NodeJS.Timeout | undefined;
  let writerProblem: string | undefined;
  const status = () => {
    const summary = summarize(daemon.backends());
    return writerProblem ? `${summary}; ${writerProblem}` : summary;
  };
  const sendStatus = (fields: Record<string, string | number>, text: string) => {
    sentStatus = text;
    sentAt = performance.now();
    void notifier.send({ ...fields, STATUS: text });
  };
  // At most one STATUS= a second: summarize() walks every backend, and a thousand backends
  // changing at once must not mean a thousand systemd-notify runs. The timer also runs
  // after the check's synchronous part, when the transition's reason and time are set.
  const flush = () => {
    timer = undefined;
    if (!dirty || stopping) return;
    dirty = false;
    const now = status();
    if (now !== sentStatus) sendStatus({}, now);
  };
  const markDirty = () => {
    if (!ready || stopping) return;
    dirty = true;
    timer ??= setTimeout(flush, Math.max(0, sentAt + STATUS_MIN_GAP_MS - performance.now()));
  };

  const stopWatchdog = startWatchdog(daemon, log, env, notifier, (problem) => {
    writerProblem = problem;
    markDirty();
  });

  return {
    onReady() {
      ready = true;
      sendStatus({ READY: 1 }, status());
    },
    // A down backend's detail is part of the status and may change from check to check.
    onCheck: (backend) => {
      if (backend.health.state === 'down') markDirty();
    },
    onTransition: markDirty,
    onReloading() {
      void notifier.send({ RELOADING: 1, MONOTONIC_USEC: monotonicUsec() });
    },
    onReloaded(ok, problems) {
      const now = status();
      sendStatus(
        { READY: 1 },
        ok ? now : `${now}; config rejected, running the previous one: ${problems[0] ?? 'invalid'}`,
      );
    },
    onStopping() {
      stopping = true;
      clearTimeout(timer);
      stopWatchdog();
      void notifier.send({ STOPPING: 1, STATUS: 'stopping' });
    },
  };
}

/**
 * WATCHDOG=1 every half period while the checks make progress, by the one liveness
 * measure /healthz uses (src/health/liveness.ts). A wedged event loop sends nothing by
 * itself; a scheduler that stopped checking stops the pings, so systemd restarts the
 * service. A stalled writer keeps the pings going (a restart does not mend a hung nft
 * or rules that are not loaded) and is shown in STATUS= instead.
 */
function startWatchdog(
  daemon: Daemon,
  log: Logger,
  env: NodeJS.ProcessEnv,
  notifier: Notifier,
  onWriterState: (stalled: string | undefined) => void,
): () => void {
  const period = watchdogPeriodMs(env);
  let stalled = false;
  let pinging = false;
  let writerStalled: string | undefined;
  const tick = () => {
    const live = assessLiveness(daemon, true);
    const writer = live.state === 'writer-stalled' ? live.detail : undefined;
    if (writer !== writerStalled) {
      writerStalled = writer;
      onWriterState(writer);
    }
    if (period === undefined) return;
    if (live.state !== 'checks-stalled') {
      if (stalled) log.info({ event: 'watchdog_resumed' }, 'checks are progressing again: watchdog pings resumed');
      stalled = false;
      // One ping in flight at most: a backlog of pings behind a slow systemd-notify means nothing.
      if (pinging) return;
      pinging = true;
      void notifier.send({ WATCHDOG: 1 }).finally(() => (pinging = false));
    } else if (!stalled) {
      stalled = true;
      log.error(
        { event: 'watchdog_stalled' },
        `${live.detail}: watchdog pings stopped, systemd will restart the service`,
      );
    }
  };
  if (period !== undefined)
    log.debug(
      { event: 'watchdog', periodMs: period },
      `watchdog: pinging every ${period / 2} ms while checks progress`,
    );
  // Not unref'd: it lives as long as the service does and is cleared at STOPPING.
  const timer = setInterval(tick, period === undefined ? WRITER_WATCH_MS : period / 2);
  return () => clearInterval(timer);
}
