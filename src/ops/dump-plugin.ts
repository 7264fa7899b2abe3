/**
 * SIGUSR1: one log line holding the whole state (every backend, as in the state
 * file), for an operator who has the journal but not the host's files.
 */
import { summarize } from '../daemon.js';
import type { DaemonPlugin } from '../observer.js';
import { snapshot } from './snapshot.js';
import { writePeriod } from './state-plugin.js';

export const stateDumpPlugin: DaemonPlugin = ({ daemon, log, configPath }) => {
  // Listening also keeps Node from opening its inspector on SIGUSR1.
  const dump = () => {
    const state = snapshot(daemon, { configPath, writePeriodMs: writePeriod(daemon) });
    log.info({ event: 'state_dump', state }, `state dump (SIGUSR1): ${summarize(daemon.backends())}`);
  };
  process.on('SIGUSR1', dump);
  return {
    onStopped() {
      process.off('SIGUSR1', dump);
    },
  };
};
