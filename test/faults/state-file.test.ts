import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SmtpServer } from '../../demo/smtp-server.js';
import type { Snapshot } from '../../src/ops/snapshot.js';
import { smtpFarmYaml } from '../support/config.js';
import { type DaemonProcess, type LogLine, startDaemon, tempDir, waitUntil } from '../support/daemon.js';
import { startSmtp } from '../support/servers.js';

/*
 * What the host can do to the state file: its folder read-only (a tmpfs remounted ro)
 * or full (a 64 KiB tmpfs), the file truncated, corrupt, or written by a newer version.
 * The daemon starts and checks regardless; an unwritable file is one error line per
 * episode and one line when it works again; an unreadable one is not resumed (backends
 * start at initialState, as docs/operating.md says) and is replaced by the next write.
 * Real tmpfs mounts, unmounted by the test; the built daemon; SMTP backends on loopback.
 */

let tmp: ReturnType<typeof tempDir>;
const servers: SmtpServer[] = [];
const mounts: string[] = [];
let daemon: DaemonProcess | undefined;
let ports: number[];

beforeAll(async () => {
  tmp = tempDir('nfh-faults-state-');
  ports = [(await startSmtp(servers)).port, (await startSmtp(servers)).port];
});
afterEach(async () => {
  daemon?.kill('SIGKILL');
  await daemon?.exited;
  daemon = undefined;
});
afterAll(async () => {
  for (const m of mounts.reverse()) execFileSync('umount', ['-l', m]);
  for (const s of servers) await s.stop();
  tmp.cleanup();
});

function tmpfs(name: string, size: string): string {
  const dir = path.join(tmp.dir, name);
  mkdirSync(dir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, `nfh-${name}`, dir]);
  mounts.push(dir);
  return dir;
}

function start(stateFile: string, name: string): void {
  const cond = path.join(tmp.dir, `cond-${name}`);
  mkdirSync(cond, { recursive: true });
  const config = path.join(tmp.dir, `config-${name}.yaml`);
  writeFileSync(
    config,
    smtpFarmYaml({
      timing: 'interval: 300ms, fastInterval: 100ms, timeout: 250ms, rise: 1, fall: 3',
      conditionDir: cond,
      stateFile,
      extra: 'log: { level: debug, format: json }\ninitialState: down',
      backends: ports.map((port, i) => ({ name: `mail${i + 1}`, port })),
    }),
  );
  daemon = startDaemon(['run', '-c', config]);
}

/** Checks of both backends complete after line `from`. */
async function checksGoOn(from: number): Promise<void> {
  for (const backend of ['mail1', 'mail2'])
    await daemon!.waitForLine((l) => l.event === 'check' && l.backend === backend, 10_000, from);
}

const readState = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
const only = (lines: LogLine[], event: string) => lines.filter((l) => l.event === event);

describe('the state file cannot be written', () => {
  it('read-only folder: one error line (EROFS), checks go on; writable again: recovered, the file current', async () => {
    const dir = tmpfs('ro', '1m');
    execFileSync('mount', ['-o', 'remount,ro', dir]);
    const file = path.join(dir, 'state.json');
    start(file, 'ro');
    await daemon!.waitForLine((l) => l.event === 'ready', 30_000);
    const failed = await daemon!.waitForLine((l) => l.event === 'state_file_failed', 10_000);
    expect(failed).toMatchObject({ level: 'error', code: 'EROFS', file });
    // Written at least once per interval: more attempts fail, still one line for the episode.
    await checksGoOn(daemon!.lines.length);
    await checksGoOn(daemon!.lines.length);
    expect(only(daemon!.lines, 'state_file_failed')).toHaveLength(1);
    execFileSync('mount', ['-o', 'remount,rw', dir]);
    await daemon!.waitForLine((l) => l.event === 'state_file_recovered', 10_000);
    const state = await waitUntil(
      () => readState(file),
      (s) => s.backends.length === 2,
    );
    expect(state.pid).toBe(daemon!.child.pid);
    expect(daemon!.child.exitCode).toBeNull();
  });

  it('full folder (64 KiB tmpfs): one error line (ENOSPC), no partial file left behind; space again: recovered', async () => {
    const dir = tmpfs('full', '64k');
    const file = path.join(dir, 'state.json');
    // Fill it up: dd stops at ENOSPC.
    const filler = path.join(dir, 'filler');
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=4k'], { stdio: 'ignore' });
    } catch {
      // "No space left on device": expected
    }
    start(file, 'full');
    await daemon!.waitForLine((l) => l.event === 'ready', 30_000);
    const failed = await daemon!.waitForLine((l) => l.event === 'state_file_failed', 10_000);
    expect(failed).toMatchObject({ level: 'error', code: 'ENOSPC', file });
    await checksGoOn(daemon!.lines.length);
    // The temporary file of a failed write is removed, not left to hold the space. A look at
    // the folder can fall inside an attempt (open, ENOSPC, unlink), so wait for a look between
    // two: a leftover would never go, since every attempt reopens the same name.
    await waitUntil(
      () => readdirSync(dir).filter((n) => n.startsWith('state.json')),
      (names) => names.length === 0,
    );
    rmSync(filler);
    await daemon!.waitForLine((l) => l.event === 'state_file_recovered', 10_000);
    await waitUntil(
      () => readdirSync(dir),
      (names) => names.includes('state.json'),
    );
    expect(readState(file).backends).toHaveLength(2);
    expect(only(daemon!.lines, 'state_file_failed')).toHaveLength(1);
  });
});

describe('the state file is unreadable at start', () => {
  /** A real state file, from a daemon that ran and stopped: both backends up. */
  let good: string;
  beforeAll(async () => {
    const file = path.join(tmp.dir, 'good.json');
    start(file, 'good');
    await daemon!.waitForLine((l) => l.event === 'ready', 30_000);
    await waitUntil(
      () => {
        try {
          return readState(file).backends.filter((b) => b.state === 'up').length;
        } catch {
          return 0;
        }
      },
      (n) => n === 2,
    );
    daemon!.kill('SIGTERM');
    await daemon!.exited;
    good = readFileSync(file, 'utf8');
    daemon = undefined;
  });

  const cases: [string, () => string, RegExp][] = [
    ['truncated', () => good.slice(0, good.length / 2), /state\.json is not JSON: backends start down$/],
    ['empty', () => '', /state\.json is not JSON: backends start down$/],
    [
      'corrupt',
      () => good.replace(/"state": "up"/g, '"state": "sideways"'),
      /state\.json is not a state file of this version: backends\.0\.state: /,
    ],
    [
      'from a newer version',
      () => good.replace('"version": 1', '"version": 2'),
      /state\.json was written by a newer nf-healthd \(state file version 2, this one reads 1\): backends start down$/,
    ],
  ];
  it.each(cases)(
    '%s: a warning naming it, backends start at initialState, the file replaced',
    async (name, text, message) => {
      const file = path.join(tmp.dir, `${name.replace(/ /g, '-')}.state.json`);
      writeFileSync(file, text());
      start(file, name.replace(/ /g, '-'));
      const line = await daemon!.waitForLine((l) => l.event === 'state_not_resumed', 30_000);
      expect(line.level).toBe('warn');
      expect(line.msg).toMatch(message);
      // Not resumed: both start down (initialState) and go up on their checks.
      for (const backend of ['mail1', 'mail2'])
        await daemon!.waitForLine((l) => l.event === 'transition' && l.backend === backend && l.state === 'up', 10_000);
      await daemon!.waitForLine((l) => l.event === 'ready', 30_000);
      expect(only(daemon!.lines, 'state_file_read')).toEqual([]);
      // The next write replaces it with a good one.
      await waitUntil(
        () => {
          try {
            return readState(file).pid;
          } catch {
            return undefined;
          }
        },
        (pid) => pid === daemon!.child.pid,
      );
      expect(readState(file).version).toBe(1);
    },
  );
});
