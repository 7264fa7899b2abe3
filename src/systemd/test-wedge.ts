import type { Logger } from '../log.js';
import type { Daemon } from '../observer.js';

/**
 * TEST-ONLY fault switch, for the watchdog tests (test/notify.test.ts, test/systemd.test.ts).
 * Off unless NF_HEALTHD_TEST_WEDGE is set; then SIGUSR2 breaks the daemon on purpose:
 *   scheduler  stops every check job while the event loop keeps running;
 *   loop       blocks the event loop for good (no timers, no signals handled).
 * Never set it in production.
 */
export function installTestWedge(daemon: Daemon, log: Logger, env: NodeJS.ProcessEnv = process.env): void {
  const mode = env.NF_HEALTHD_TEST_WEDGE;
  if (!mode) return;
  if (mode !== 'scheduler' && mode !== 'loop') {
    log.error({ event: 'test_wedge' }, `NF_HEALTHD_TEST_WEDGE=${mode}: expected "scheduler" or "loop"; ignored`);
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
