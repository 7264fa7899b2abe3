import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/*
 * The unit file's hardening, scored by the host's own systemd-analyze (offline: no
 * running systemd needed). `systemd-analyze verify` runs where the unit is installed,
 * inside the booted container of test/systemd.test.ts (it needs /usr/bin/node there).
 */

const UNIT = fileURLToPath(new URL('../systemd/nf-healthd.service', import.meta.url));

function analyze(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('systemd-analyze', args, { maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('systemd/nf-healthd.service', () => {
  it('has an overall exposure of 2.0 or lower (systemd-analyze security --offline --threshold)', async () => {
    // --threshold is on the 0..100 scale the display divides by 10: 20 = "2.0".
    const r = await analyze(['security', '--offline=true', '--threshold=20', '--no-pager', UNIT]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const score = Number(/Overall exposure level for nf-healthd\.service: (\d+\.\d)/.exec(r.stdout)?.[1]);
    expect(score).toBeLessThanOrEqual(2.0);
  });

  it('is the kind of unit the daemon expects: notify, watchdog, checked start and reload', () => {
    const unit = readFileSync(UNIT, 'utf8');
    const values = (key: string) => [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]);
    expect(values('Type')).toEqual(['notify']);
    expect(values('NotifyAccess')).toEqual(['all']);
    expect(values('WatchdogSec')).toHaveLength(1);
    expect(values('ExecStartPre')[0]).toMatch(/nf-healthd\.js check -c /);
    expect(values('ExecReload')).toEqual([
      expect.stringMatching(/nf-healthd\.js check -c /),
      '/bin/kill -HUP $MAINPID',
    ]);
    expect(values('Restart')).toEqual(['on-failure']);
  });

  it('starts the daemon with the same Node flags as /usr/bin/nf-healthd, the Dockerfile, the bin and the benchmark', () => {
    const read = (file: string) => readFileSync(fileURLToPath(new URL(`../${file}`, import.meta.url)), 'utf8');
    const flagsIn = (text: string) => [...text.matchAll(/--max-[a-z-]+=\d+/g)].map((m) => m[0]);
    const unit = /^ExecStart=(.*)$/m.exec(read('systemd/nf-healthd.service'))?.[1] ?? '';
    const shipped = flagsIn(unit);
    expect(shipped).toEqual(['--max-semi-space-size=32']);
    expect(flagsIn(/^exec .*$/m.exec(read('packaging/nf-healthd'))?.[0] ?? '')).toEqual(shipped);
    expect(flagsIn(/^ENTRYPOINT .*$/m.exec(read('Dockerfile'))?.[0] ?? '')).toEqual(shipped);
    expect(flagsIn(read('bin/nf-healthd.js').split('\n')[0]!)).toEqual(shipped);
    expect(flagsIn(/SHIPPED_NODE_FLAGS = \[.*\]/.exec(read('bench/checkers.ts'))?.[0] ?? '')).toEqual(shipped);
  });
});
