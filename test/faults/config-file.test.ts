import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SmtpServer } from '../../demo/smtp-server.js';
import { MAX_CONFIG_BYTES } from '../../src/config/load.js';
import { EXIT } from '../../src/exit-codes.js';
import { cli } from '../support/cli.js';
import { smtpFarmYaml } from '../support/config.js';
import { type DaemonProcess, type LogLine, startDaemon, tempDir } from '../support/daemon.js';
import { startSmtp } from '../support/servers.js';

/*
 * What the host can do to the config file: delete it, put a folder in its place, let a
 * reload read it half written, or fill it with 10 MB. At SIGHUP the running config is
 * kept, with one error line per problem (`reload_rejected`) and nothing written to the
 * kernel side (here condition files in a temp folder); at start the daemon exits 78
 * (EX_CONFIG) with the problem on stderr. The built daemon, real SMTP backends on loopback.
 */

let tmp: ReturnType<typeof tempDir>;
let daemon: DaemonProcess;
let config: string;
let cond: string;
let good: string;
const servers: SmtpServer[] = [];

beforeAll(async () => {
  tmp = tempDir('nfh-faults-config-');
  cond = path.join(tmp.dir, 'cond');
  mkdirSync(cond);
  const a = await startSmtp(servers);
  const b = await startSmtp(servers);
  config = path.join(tmp.dir, 'config.yaml');
  good = smtpFarmYaml({
    timing: 'interval: 300ms, fastInterval: 100ms, timeout: 250ms, rise: 1, fall: 3',
    conditionDir: cond,
    stateFile: path.join(tmp.dir, 'state.json'),
    extra: 'log: { level: debug, format: json }',
    backends: [
      { name: 'mail1', port: a.port },
      { name: 'mail2', port: b.port },
    ],
  });
  writeFileSync(config, good);
  daemon = startDaemon(['run', '-c', config]);
  await daemon.waitForLine((l) => l.event === 'ready', 30_000);
});

afterAll(async () => {
  daemon?.kill('SIGKILL');
  await daemon?.exited;
  for (const s of servers) await s.stop();
  tmp.cleanup();
});

/** The kernel side as files: name -> content and modification time. */
function conditionFiles(): Record<string, string> {
  return Object.fromEntries(
    readdirSync(cond).map((f) => {
      const file = path.join(cond, f);
      return [f, `${readFileSync(file, 'latin1').trim()} @${statSync(file).mtimeMs}`];
    }),
  );
}

/** mail1 and mail2 still checked, after line `from`: the running config is in force. */
async function bothChecked(from: number): Promise<void> {
  for (const backend of ['mail1', 'mail2'])
    await daemon.waitForLine((l) => l.event === 'check' && l.backend === backend, 10_000, from);
}

/**
 * Breaks the file, sends SIGHUP, and returns the reload's error lines once the next
 * checks came; the kernel side is compared before and after, then the file is restored.
 */
async function rejectedReload(breakFile: () => void): Promise<LogLine[]> {
  const before = conditionFiles();
  const from = daemon.lines.length;
  breakFile();
  daemon.kill('SIGHUP');
  await daemon.waitForLine((l) => l.event === 'reload_rejected', 10_000, from);
  await bothChecked(daemon.lines.length);
  const after = daemon.lines.slice(from);
  expect(after.filter((l) => l.event === 'reloaded' || l.event === 'backend_removed')).toEqual([]);
  expect(conditionFiles()).toEqual(before);
  rmSync(config, { recursive: true, force: true });
  writeFileSync(config, good);
  return after.filter((l) => l.event === 'reload_rejected');
}

describe('the config file goes bad under a running daemon (SIGHUP)', () => {
  it('deleted: one line, the running config kept', async () => {
    const lines = await rejectedReload(() => rmSync(config));
    expect(lines.map((l) => l.msg)).toEqual([
      `config rejected, keeping the running one: ${config}:1:1: (top): cannot read the file: ENOENT`,
    ]);
    expect(lines[0]!.level).toBe('error');
  });

  it('replaced by a folder: one line, the running config kept', async () => {
    const lines = await rejectedReload(() => {
      rmSync(config);
      mkdirSync(config);
    });
    expect(lines.map((l) => l.msg)).toEqual([
      `config rejected, keeping the running one: ${config}:1:1: (top): cannot read the file: it is a directory`,
    ]);
  });

  it('half written (the reload came in the middle of a write): located errors, the running config kept', async () => {
    // The editor's write stopped inside a line, as a reload between two write(2) calls sees it.
    const cut = good.indexOf('port:', good.indexOf('name: mail2')) + 2;
    const lines = await rejectedReload(() => writeFileSync(config, good.slice(0, cut)));
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines)
      expect(l.msg).toMatch(new RegExp(`^config rejected, keeping the running one: ${config}:\\d+:\\d+: `));
  });

  it('10 MB: refused unread, one line, the running config kept', async () => {
    // Written aside first and renamed into place: writing 10 MB here would stall this process's SMTP backends.
    const huge = path.join(tmp.dir, 'huge.yaml');
    writeFileSync(huge, `${good}${'# padding\n'.repeat(1024 * 1024)}`);
    const lines = await rejectedReload(() => renameSync(huge, config));
    expect(lines.map((l) => l.msg)).toEqual([
      `config rejected, keeping the running one: ${config}:1:1: (top): the file is larger than 4 MiB (${good.length + 10 * 1024 * 1024} bytes): not read`,
    ]);
    expect(MAX_CONFIG_BYTES).toBe(4 * 1024 * 1024);
  });

  it('mended: the next SIGHUP applies it', async () => {
    const from = daemon.lines.length;
    daemon.kill('SIGHUP');
    await daemon.waitForLine((l) => l.event === 'reloaded', 10_000, from);
    await bothChecked(daemon.lines.length);
  });
});

describe('the config file is bad at start', () => {
  const cases: [string, (file: string) => void, RegExp][] = [
    ['missing', () => undefined, /:1:1: \(top\): cannot read the file: ENOENT\n$/],
    ['a folder', (file) => mkdirSync(file), /:1:1: \(top\): cannot read the file: it is a directory\n$/],
    [
      'half written',
      (file) => writeFileSync(file, good.slice(0, good.indexOf('port:', good.indexOf('name: mail2')) + 2)),
      /config\.yaml:\d+:\d+: /,
    ],
    [
      '10 MB',
      (file) => writeFileSync(file, `${good}${'# padding\n'.repeat(1024 * 1024)}`),
      /:1:1: \(top\): the file is larger than 4 MiB \(\d+ bytes\): not read\n$/,
    ],
  ];
  it.each(cases)('%s: exit 78 (EX_CONFIG), the problem on stderr, nothing started', async (name, make, message) => {
    const file = path.join(tmp.dir, `start-${name.replace(/ /g, '-')}`, 'config.yaml');
    mkdirSync(path.dirname(file));
    make(file);
    const r = await cli(['run', '-c', file]);
    expect(r.code).toBe(EXIT.config);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });
});
