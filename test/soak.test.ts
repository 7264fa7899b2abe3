import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handleCounts, SOCKET_HANDLES, settled, soak } from '../bench/soak-core.js';
import { checkSchema } from '../src/probes/registry.js';
import { runCheck } from '../src/probes/run.js';
import { makePki, type TestPki } from './support/certs.js';

/**
 * The short version of bench/soak.ts: a few thousand checks against flapping
 * loopback backends (smtp, http, tls), then every socket, server, timer-held socket
 * and child process must be gone again: no handle leaks. Figures belong to the
 * script; here only the leak and the bounds are asserted.
 */
let pki: TestPki;
beforeAll(async () => {
  pki = await makePki();
});
afterAll(async () => {
  await pki?.remove();
});

describe('soak (short)', () => {
  it('leaves no handles behind after thousands of checks against flapping backends', async () => {
    const before = handleCounts();
    const figures = await soak({
      runCheck: (check, target, timeout) => runCheck(checkSchema.parse(check), target, timeout),
      total: 3000,
      concurrency: 40,
      timeoutMs: 150,
      backendsPerKind: 4,
      flapMs: 20,
      flapProbability: 0.3,
      tls: { key: readFileSync(pki.selfSigned.key), cert: readFileSync(pki.selfSigned.cert) },
    });
    expect(figures.checks).toBe(3000);
    // The flapping produced both verdicts, and several kinds of failure.
    expect(figures.up).toBeGreaterThan(0);
    expect(figures.down).toBeGreaterThan(0);
    expect(Object.keys(figures.reasons).length).toBeGreaterThan(3);
    expect(figures.maxBytesRead).toBeLessThanOrEqual(65_536 * 2);
    const after = await settled(before, 5000);
    for (const type of SOCKET_HANDLES)
      expect({ type, count: after[type] ?? 0 }).toEqual({ type, count: Math.min(after[type] ?? 0, before[type] ?? 0) });
  });
});
