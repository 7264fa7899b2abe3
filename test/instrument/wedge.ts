import type { Logger } from '../../src/log.js';
import type { Daemon, DaemonPlugin } from '../../src/observer.js';

/** Arms the fault switch: `scheduler` or `loop` (what SIGUSR2 then breaks). */
export const WEDGE_ENV = 'NF_HEALTHD_TEST_WEDGE';

/**
 * TEST-ONLY fault switch, for the watchdog tests (test/notify.test.ts, test/systemd.test.ts);
 * only the instrumented entry (test/instrument/entry.ts) carries it, never dist/.
 * Off unless NF_HEALTHD_TEST_WEDGE is set; then SIGUSR2 breaks the daemon on purpose:
 *   scheduler  stops every check job while the event loop keeps running;
 *   loop       blocks the event loop for good (no timers, no signals handled).
 */
export function installTestWedge(daemon: Daemon, log: Logger, env: NodeJS.ProcessEnv = process.env): void {
  const mode = env[WEDGE_ENV];
  if (!mode) return;
  if (mode !== 'scheduler' && mode !== 'loop') {
    log.error({ event: 'test_wedge' }, `${WEDGE_ENV}=${mode}: expected "scheduler" or "loop"; ignored`);
    return;
  }
  log.warn({ event: 'test_wedge', mode }, `TEST-ONLY fault switch armed: SIGUSR2 wedges the ${mode}`);
  process.on('SIGUSR2', () => {
    log.warn({ event: 'test_wedge', mode }, `TEST-ONLY: SIGUSR2, wedging the ${mode} now`);
    if (mode === 'scheduler') {
      void daemon.scheduler().stop();
      // A hung daemon stays alive: without jobs nothing else might hold the event loop open.
      setInterval(() => undefined, 1 << 30);
      return;
    }
    // Sleeps on a futex that nothing ever wakes: a hung event loop without burning a core.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  });
}

/** The switch as a plugin: it observes nothing, it only listens for SIGUSR2. */
export const wedgePlugin: DaemonPlugin = ({ daemon, log }) => {
  installTestWedge(daemon, log);
  return undefined;
};
