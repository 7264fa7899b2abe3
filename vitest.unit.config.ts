import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

/**
 * The fast tier (`npm run test:unit`): no root, no Debian packages, no network
 * namespaces, no child daemons; seconds. `npm test` runs everything, these included.
 */
export default defineConfig({
  test: {
    ...base.test,
    include: [
      'test/condition-writer.test.ts',
      'test/config.test.ts',
      'test/daemon.test.ts',
      'test/damping.test.ts',
      'test/docs.test.ts',
      'test/events.test.ts',
      'test/golden.test.ts',
      'test/hysteresis.test.ts',
      'test/import-cycles.test.ts',
      'test/kernel-loop.test.ts',
      'test/operating-parts.test.ts',
      'test/passive-verdict.test.ts',
      'test/probes.test.ts',
      'test/vrrp.test.ts',
    ],
  },
});
