import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VRRP_FAULT } from '../src/config/operations.js';
import type { Config } from '../src/config/schema.js';
import { createLogger } from '../src/log.js';
import type { BackendStatus, Daemon, DaemonObserver } from '../src/observer.js';
import { liveCapacity, trackValue, vrrpPlugin } from '../src/ops/vrrp-plugin.js';
import { parseConfig } from '../src/plan/load.js';
import { MINIMAL_YAML } from './support/config.js';
import { tempDir } from './support/daemon.js';

// The track file's numbers, and the plugin writing a real file in a real folder. The
// daemon around the plugin is a stand-in holding backends in given states (the real
// daemon drives the plugin in test/pair.test.ts, with real keepalived reading the file).

const BASE = MINIMAL_YAML;

function backend(service: string, weight: number, up: boolean): BackendStatus {
  return { spec: { service, weight }, health: { state: up ? 'up' : 'down' } } as unknown as BackendStatus;
}

function configProblem(vrrp: string): string {
  try {
    parseConfig(`${BASE}vrrp: ${vrrp}\n`, 'c.yaml');
    return '';
  } catch (err) {
    return (err as Error).message;
  }
}

describe('vrrp track-file values', () => {
  it('follows the weighted live capacity, averaged over services', () => {
    expect(liveCapacity([backend('a', 1, true), backend('a', 1, true)])).toBe(1);
    expect(liveCapacity([backend('a', 1, true), backend('a', 3, false)])).toBe(0.25);
    // A dark service costs its share; another service still carries traffic.
    expect(liveCapacity([backend('a', 1, false), backend('b', 1, true)])).toBe(0.5);
    expect(liveCapacity([backend('a', 1, false), backend('b', 2, false)])).toBe(0);
    expect(liveCapacity([])).toBe(0);
  });

  it('0 at full capacity, at least -1 for any loss, -penalty near zero, FAULT at zero', () => {
    expect(trackValue(1, 100)).toBe(0);
    expect(trackValue(0.5, 100)).toBe(-50);
    expect(trackValue(0.999, 100)).toBe(-1);
    expect(trackValue(0.01, 100)).toBe(-99);
    expect(trackValue(1 / 3, 100)).toBe(-67);
    expect(trackValue(0, 100)).toBe(VRRP_FAULT);
    // keepalived: FAULT when value * weight is below -253.
    expect(VRRP_FAULT).toBeLessThan(-253);
  });

  it('rejects a relative track file and a penalty that would reach FAULT', () => {
    expect(configProblem('{trackFile: run/w}')).toMatch(/vrrp\.trackFile.*absolute path/s);
    expect(configProblem('{trackFile: /run/w, penalty: 254}')).toMatch(/vrrp\.penalty/);
    expect(configProblem('{trackFile: /run/w, penalty: 0}')).toMatch(/vrrp\.penalty/);
    expect(configProblem('{trackFile: /run/w, weight: 1}')).toMatch(/weight/);
    expect(configProblem('{trackFile: /run/w}')).toBe('');
  });
});

describe('vrrp plugin', () => {
  let cleanup = () => {};
  afterEach(() => cleanup());

  it('writes FAULT until ready, the capacity on changes, FAULT at stop; a failed write is said once and retried', async () => {
    const t = tempDir('nfh-vrrp-');
    cleanup = t.cleanup;
    const blocker = path.join(t.dir, 'not-a-folder');
    writeFileSync(blocker, '');
    let trackFile = path.join(blocker, 'w'); // mkdir fails (EEXIST: a file) until the config points elsewhere
    const backends = [backend('mail', 1, true), backend('mail', 1, true)];
    const lines: Record<string, unknown>[] = [];
    const log = createLogger({
      level: 'info',
      format: 'json',
      destination: { write: (l: string) => void lines.push(JSON.parse(l)) },
    });
    const daemon = {
      config: () => ({ vrrp: { trackFile, penalty: 100 } }) as unknown as Config,
      backends: () => backends,
    } as unknown as Daemon;
    const observer = vrrpPlugin({ daemon, log, configPath: 'c.yaml' }) as DaemonObserver;
    const until = async (want: () => boolean) => {
      for (let i = 0; i < 300 && !want(); i++) await new Promise((r) => setTimeout(r, 10));
      expect(want()).toBe(true);
    };
    const events = (name: string) => lines.filter((l) => l.event === name);

    await until(() => events('vrrp_file_failed').length === 1);
    expect(events('vrrp_file_failed')[0]).toMatchObject({ code: 'EEXIST', file: trackFile });
    observer.onReady!();
    // Same cause again: not said twice.
    await new Promise((r) => setTimeout(r, 50));
    expect(events('vrrp_file_failed')).toHaveLength(1);

    mkdirSync(path.join(t.dir, 'run'));
    trackFile = path.join(t.dir, 'run', 'w');
    // The retry (one second) finds the new path.
    await until(() => events('vrrp_file_recovered').length === 1);
    const read = () => readFileSync(trackFile, 'utf8');
    await until(() => read() === '0\n');

    backends[1] = backend('mail', 1, false);
    observer.onTransition!(backends[1], 'up', 'down');
    await until(() => read() === '-50\n');
    backends[0] = backend('mail', 1, false);
    observer.onTransition!(backends[0], 'up', 'down');
    await until(() => read() === '-254\n');

    backends[0] = backend('mail', 1, true);
    observer.onTransition!(backends[0], 'down', 'up');
    await until(() => read() === '-50\n');
    observer.onStopping!();
    observer.onStopped!();
    await until(() => read() === '-254\n');
    expect(events('vrrp_track_value').map((l) => l.value)).toEqual([0, -50, -254, -50, -254]);
  });
});
