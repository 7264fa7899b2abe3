import { createDaemon } from './daemon.js';
import { EXIT } from './exit-codes.js';
import { outagePlugin } from './health/outage.js';
import { createLogger } from './log.js';
import type { DaemonPlugin } from './observer.js';
import { operationsPlugins } from './ops/plugins.js';
import { loadRestore } from './ops/restore.js';
import type { Plan } from './plan/compile.js';
import { systemdPlugin } from './systemd/service.js';

export const plugins: DaemonPlugin[] = [systemdPlugin, ...operationsPlugins, outagePlugin];

/**
 * `nf-healthd run`: the daemon with its signals. SIGHUP reloads, SIGTERM and
 * SIGINT stop (checks in flight aborted, writes under way finished), exit 0.
 * `extraPlugins` run after the daemon's own: the seam for test and benchmark hooks
 * (test/instrument/); production passes none.
 */
export async function runDaemon(configPath: string, plan: Plan, extraPlugins: DaemonPlugin[] = []): Promise<number> {
  const { config } = plan;
  const log = createLogger({ level: config.log.level, format: config.log.format });
  const daemon = createDaemon({ configPath, plan, log, ...(await loadRestore(plan, log)) });
  for (const plugin of [...plugins, ...extraPlugins]) {
    const observer = plugin({ daemon, log, configPath });
    if (observer) daemon.addObserver(observer);
  }

  let stopping: Promise<void> | undefined;
  let reloading = Promise.resolve();
  const done = new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      if (stopping) return;
      log.info({ event: 'stopping', signal }, `stopping on ${signal}`);
      stopping = reloading.then(() => daemon.stop());
      stopping.then(
        () => resolve(EXIT.ok),
        (err: unknown) => {
          log.error({ event: 'stop_failed', err }, 'error while stopping');
          resolve(EXIT.failure);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
  /** A reload waiting behind the one under way: further SIGHUPs join it (it reads the file when it starts). */
  let reloadQueued = false;
  process.on('SIGHUP', () => {
    if (stopping || reloadQueued) return;
    reloadQueued = true;
    log.info({ event: 'reloading' }, 'SIGHUP: reloading the configuration');
    reloading = reloading
      .then(() => {
        reloadQueued = false;
        return daemon.reload().then(() => undefined);
      })
      .catch((err: unknown) => {
        // A broken chain would ignore every later SIGHUP: log it and keep reloading.
        reloadQueued = false;
        log.error({ event: 'reload_rejected', err }, `reload failed, keeping what was applied: ${String(err)}`);
      });
  });

  // HAProxy's master reloads on SIGUSR2 and keepalived dumps its stats on it: a habit from
  // either must not end the daemon (Node's default for SIGUSR2). Say what works instead.
  process.on('SIGUSR2', () =>
    log.warn(
      { event: 'signal_ignored', signal: 'SIGUSR2' },
      'SIGUSR2 ignored: SIGHUP reloads the configuration, `nf-healthd status` shows the state',
    ),
  );

  log.info(
    { event: 'starting', config: configPath, backends: plan.backends.length },
    `nf-healthd starting with ${configPath}`,
  );
  daemon.start().catch((err: unknown) => {
    log.error({ event: 'start_failed', err }, 'start failed');
    process.kill(process.pid, 'SIGTERM');
  });
  const code = await done;
  // Anything still open (a socket in its close handshake) must not hold the exit.
  setTimeout(() => process.exit(code), 500).unref();
  return code;
}
