import { appendFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { DaemonPlugin } from '../../src/observer.js';

/** Arms the heap record: the file to append one JSON line to, at ready and after every reload. */
export const HEAP_ENV = 'NF_HEALTHD_TEST_HEAP';

/** One line of the heap record. `at` is Date.now(), to order it against other processes' events. */
export interface HeapSample {
  moment: 'ready' | 'reloaded' | 'rejected';
  at: number;
  /** process.memoryUsage().heapUsed right after a full garbage collection. */
  heapUsed: number;
  /** process.getActiveResourcesInfo().length: timers, sockets, handles the event loop holds. */
  resources: number;
  backends: number;
}

/**
 * TEST-ONLY: for the leak test (test/faults/churn.test.ts). Off unless NF_HEALTHD_TEST_HEAP
 * names a file; then, at ready and after every reload, a full GC and one HeapSample line.
 */
export const heapPlugin: DaemonPlugin = ({ daemon }) => {
  const file = process.env[HEAP_ENV];
  if (!file) return undefined;
  // The gc() that --expose-gc gives, without a flag on the command line.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const record = (moment: HeapSample['moment']) => {
    gc();
    const sample: HeapSample = {
      moment,
      at: Date.now(),
      heapUsed: process.memoryUsage().heapUsed,
      resources: process.getActiveResourcesInfo().length,
      backends: daemon.backends().length,
    };
    appendFileSync(file, `${JSON.stringify(sample)}\n`);
  };
  return { onReady: () => record('ready'), onReloaded: (ok) => record(ok ? 'reloaded' : 'rejected') };
};
