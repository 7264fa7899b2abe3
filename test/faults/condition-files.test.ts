import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SmtpServer } from '../../demo/smtp-server.js';
import { type DaemonProcess, startDaemon, tempDir, waitUntil } from '../support/daemon.js';
import { startSmtp } from '../support/servers.js';

/*
 * /proc/net/nf_condition/NAME vanishes while the daemon runs (the rules reloaded without
 * it) and comes back; the whole folder is not there at start (xt_condition not loaded
 * yet). This host has no xt_condition module: a temp folder with `create: false` stands
 * in for /proc here, the daemon writing as it does under /proc (never creating a file,
 * the kernel's job); test/condition-vm.test.ts proves the real module in a VM. The built
 * daemon, SMTP backends on loopback.
 */

let tmp: ReturnType<typeof tempDir>;
let daemon: DaemonProcess;
let cond: string;
const servers: SmtpServer[] = [];
/** upValue 0, as the recipe's rules (`! --condition`): "0" is up. */
const UP = '0';
const DOWN = '1';

beforeAll(async () => {
  tmp = tempDir('nfh-faults-cond-');
  cond = path.join(tmp.dir, 'nf_condition'); // not there yet
  const ports = [(await startSmtp(servers)).port, (await startSmtp(servers)).port];
  const config = path.join(tmp.dir, 'config.yaml');
  writeFileSync(
    config,
    `defaults: { interval: 300ms, fastInterval: 100ms, timeout: 250ms, rise: 1, fall: 3 }
log: { level: debug, format: json }
writer: { type: condition, dir: ${cond}, create: false }
stateFile: ${path.join(tmp.dir, 'state.json')}
services:
  - name: mail
    port: 25
    check: { type: smtp }
    backends:
${ports.map((p, i) => `      - { name: mail${i + 1}, address: 127.0.0.1, port: ${p} }`).join('\n')}
`,
  );
  daemon = startDaemon(['run', '-c', config]);
});

afterAll(async () => {
  daemon?.kill('SIGKILL');
  await daemon?.exited;
  for (const s of servers) await s.stop();
  tmp.cleanup();
});

const file = (name: string) => path.join(cond, name);
const value = (name: string) => {
  try {
    return readFileSync(file(name), 'latin1').trim();
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
};

/** Checks of both backends complete after line `from`. */
async function checksGoOn(from: number): Promise<void> {
  for (const backend of ['mail1', 'mail2'])
    await daemon.waitForLine((l) => l.event === 'check' && l.backend === backend, 10_000, from);
}

describe('condition files come and go', () => {
  it('no condition folder at start: the daemon starts and says why it cannot write; the rules loaded: written', async () => {
    await daemon.waitForLine((l) => l.event === 'ready', 30_000);
    const failed = await daemon.waitForLine((l) => l.event === 'write_failed', 10_000);
    expect(failed).toMatchObject({ level: 'error', code: 'ENOENT' });
    expect(failed.msg).toContain('no loaded rule names condition "mail1"');
    await checksGoOn(daemon.lines.length);
    // The rules are loaded: the kernel makes the folder and the files, each at its own start value.
    mkdirSync(cond);
    writeFileSync(file('mail1'), `${DOWN}\n`);
    writeFileSync(file('mail2'), `${DOWN}\n`);
    await waitUntil(
      () => [value('mail1'), value('mail2')],
      (v) => v.every((x) => x === UP),
      20_000,
    );
    await daemon.waitForLine((l) => l.event === 'write_recovered', 10_000);
  });

  it('a file vanishes (rules reloaded without it): one error line, checks go on; it comes back: set again', async () => {
    const from = daemon.lines.length;
    rmSync(file('mail2'));
    const failed = await daemon.waitForLine(
      (l) => l.event === 'write_failed' && l.target === file('mail2'),
      10_000,
      from,
    );
    expect(failed).toMatchObject({ code: 'ENOENT' });
    await checksGoOn(daemon.lines.length);
    await checksGoOn(daemon.lines.length);
    // Not created by the daemon: under /proc that is the kernel's job.
    expect(value('mail2')).toBe('ENOENT');
    expect(
      daemon.lines.slice(from).filter((l) => l.event === 'write_failed' && l.target === file('mail2')),
    ).toHaveLength(1);
    // mail1's file was never touched.
    expect(value('mail1')).toBe(UP);
    writeFileSync(file('mail2'), `${DOWN}\n`); // back, at the kernel's start value
    await waitUntil(
      () => value('mail2'),
      (v) => v === UP,
      20_000,
    );
    await daemon.waitForLine((l) => l.event === 'write_recovered' && l.target === file('mail2'), 10_000, from);
    await checksGoOn(daemon.lines.length);
  });
});
