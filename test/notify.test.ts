import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createSmtpServer, type SmtpServer } from '../demo/smtp-server.js';
import type { Daemon } from '../src/daemon.js';
import { createLogger } from '../src/log.js';
import { createNotifier, notifyArgs, watchdogPeriodMs } from '../src/systemd/notify.js';
import { systemdPlugin } from '../src/systemd/service.js';
import { smtpFarmYaml } from './support/config.js';
import { type DaemonProcess, type StartOptions, startDaemon, tempDir, waitUntil } from './support/daemon.js';
import { notifySocket, text } from './support/notify-socket.js';
import { restartable } from './support/servers.js';

/*
 * sd_notify for real: the built daemon (`node bin/nf-healthd.js run`) sends through
 * systemd's own /usr/bin/systemd-notify to a real AF_UNIX datagram socket bound by
 * test/systemd/notify-socket.py, checking SMTP greeters on loopback and writing a temp
 * condition folder. Nothing is mocked.
 */

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const silent = createLogger({ level: 'error', format: 'json', destination: { write: () => undefined } });

async function smtp(): Promise<SmtpServer> {
  const s = restartable(createSmtpServer()); // restarted on its port: held meanwhile
  await s.start();
  cleanups.push(() => s.stop());
  return s;
}

function configYaml(dir: string, backends: { name: string; port: number }[]): string {
  return smtpFarmYaml({
    // fall 1: mail2 is down in the first round. A 1 s timeout: a live greeter slowed by a busy
    // machine must not flap a backend and add a STATUS to the exact list below.
    timing: 'interval: 500ms, fastInterval: 100ms, timeout: 1s, rise: 1, fall: 1',
    conditionDir: dir,
    stateFile: `${dir}.state.json`,
    backends,
  });
}

async function setup(env: NodeJS.ProcessEnv = {}, options: StartOptions = {}) {
  const tmp = tempDir('nfh-notify-');
  cleanups.push(tmp.cleanup);
  const cond = path.join(tmp.dir, 'cond');
  const configPath = path.join(tmp.dir, 'config.yaml');
  mkdirSync(cond);
  const socket = await notifySocket(tmp.dir);
  cleanups.push(() => socket.close());
  return {
    cond,
    configPath,
    socket,
    start(): DaemonProcess {
      const d = startDaemon(['run', '-c', configPath], { NOTIFY_SOCKET: socket.path, ...env }, undefined, options);
      cleanups.push(async () => {
        d.kill('SIGKILL');
        await d.exited;
      });
      return d;
    },
  };
}

const usecNow = () => process.hrtime.bigint() / 1000n;
const SINCE = '\\d\\d:\\d\\d:\\d\\d';
const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('sd_notify through systemd-notify, against a real datagram socket', () => {
  it('READY=1 after the first round is written, STATUS on changes, RELOADING/READY around reloads (valid and invalid), STOPPING=1', async () => {
    const s1 = await smtp();
    const s2 = await smtp();
    await s2.stop(); // mail2 is down for the first round; started again later (same port)
    const t = await setup();
    writeFileSync(
      t.configPath,
      configYaml(t.cond, [
        { name: 'mail1', port: s1.port },
        { name: 'mail2', port: s2.port },
      ]),
    );
    const d = t.start();

    const ready = await t.socket.waitFor((m) => m.fields.includes('READY=1'));
    // Readiness means the kernel state is right: the first round's verdicts were written before READY=1.
    expect(readFileSync(path.join(t.cond, 'mail1'), 'utf8')).toBe('0\n');
    expect(readFileSync(path.join(t.cond, 'mail2'), 'utf8')).toBe('1\n');
    expect(t.socket.messages.indexOf(ready)).toBe(0);

    await s2.start();
    await t.socket.waitFor((m) => text(m) === 'STATUS=2/2 up');

    writeFileSync(
      t.configPath,
      configYaml(t.cond, [
        { name: 'mail1', port: s1.port },
        { name: 'mail2', port: s2.port },
        { name: 'mail3', port: s1.port },
      ]),
    );
    let from = t.socket.messages.length;
    const beforeHup = usecNow();
    d.kill('SIGHUP');
    await t.socket.waitFor((m) => m.fields.includes('READY=1'), 10_000, from);
    const afterReady = usecNow();
    expect(readFileSync(path.join(t.cond, 'mail3'), 'utf8')).toBe('0\n');
    const monotonic = BigInt(t.socket.messages[from]!.fields[1]!.replace('MONOTONIC_USEC=', ''));
    expect(monotonic >= beforeHup && monotonic <= afterReady).toBe(true);

    writeFileSync(t.configPath, 'services:\n  - name: mail\n    port: 25\n    backends: []\n');
    from = t.socket.messages.length;
    d.kill('SIGHUP');
    await t.socket.waitFor((m) => m.fields.includes('READY=1'), 10_000, from);

    d.kill('SIGTERM');
    expect((await d.exited).code).toBe(0);
    await t.socket.waitFor((m) => m.fields.includes('STOPPING=1'));

    // Every message, exactly and in order.
    const expected = [
      new RegExp(`^READY=1\\nSTATUS=1/2 up; mail2 down since ${SINCE}: connect ECONNREFUSED$`),
      /^STATUS=2\/2 up$/,
      /^RELOADING=1\nMONOTONIC_USEC=\d+$/,
      /^READY=1\nSTATUS=3\/3 up$/,
      /^RELOADING=1\nMONOTONIC_USEC=\d+$/,
      new RegExp(
        `^READY=1\\nSTATUS=3/3 up; config rejected, running the previous one: ${escapeRegExp(t.configPath)}:4:15: services\\[0\\]\\.backends: a service needs at least one backend$`,
      ),
      /^STOPPING=1\nSTATUS=stopping$/,
    ];
    const got = t.socket.messages.map(text);
    expect(got).toHaveLength(expected.length);
    for (const [i, m] of got.entries()) expect(m).toMatch(expected[i]!);
    // Without --no-block: systemd-notify follows each message with its barrier.
    await waitUntil(
      () => t.socket.barriers.length,
      (n) => n >= expected.length,
      5_000,
    );
    expect(t.socket.barriers).toHaveLength(expected.length);
    // We run as root, so systemd-notify can (and does) send with the daemon's pid, its parent.
    expect(new Set(t.socket.messages.map((m) => m.pid))).toEqual(new Set([d.child.pid]));
  });

  it('WATCHDOG=1 at half of WATCHDOG_USEC while checks progress; a stalled scheduler stops the pings', async () => {
    const s1 = await smtp();
    const t = await setup({ WATCHDOG_USEC: '400000', NF_HEALTHD_TEST_WEDGE: 'scheduler' }, { instrumented: true });
    writeFileSync(t.configPath, configYaml(t.cond, [{ name: 'mail1', port: s1.port }]));
    const d = t.start();
    const ready = await t.socket.waitFor((m) => m.fields.includes('READY=1'));
    const from = t.socket.messages.indexOf(ready);
    await t.socket.waitFor(
      () => t.socket.messages.slice(from).filter((m) => text(m) === 'WATCHDOG=1').length >= 4,
      5_000,
    );
    expect(t.socket.messages.map(text).filter((m) => m !== 'WATCHDOG=1')).toEqual(['READY=1\nSTATUS=1/1 up']);

    const line = d.lines.length;
    d.kill('SIGUSR2'); // the test-only fault switch (test/instrument/wedge.ts): stop every check job, keep the event loop
    const stalled = await d.waitForLine((l) => l.event === 'watchdog_stalled', 10_000, line);
    expect(stalled.level).toBe('error');
    const pings = t.socket.messages.length;
    // A negative claim needs a window: 5 ping periods (200 ms each). At most the one ping
    // already in flight when the stall was noticed may still arrive.
    await new Promise((r) => setTimeout(r, 1_000));
    const late = t.socket.messages.slice(pings).map(text);
    expect(late.length).toBeLessThanOrEqual(1);
    expect(late.every((m) => m === 'WATCHDOG=1')).toBe(true);
    const quiet = t.socket.messages.length;

    d.kill('SIGTERM');
    expect((await d.exited).code).toBe(0);
    await t.socket.waitFor((m) => m.fields.includes('STOPPING=1'), 5_000, quiet);
    expect(t.socket.messages.slice(quiet).map(text)).toEqual(['STOPPING=1\nSTATUS=stopping']);
  });

  it('values lose their newlines: one field per value, no smuggled fields', async () => {
    const t = await setup();
    const notifier = createNotifier({ log: silent, env: { ...process.env, NOTIFY_SOCKET: t.socket.path } })!;
    void notifier.send({ STATUS: 'one\ntwo\r\nREADY=1' });
    void notifier.send({ STATUS: 'second' });
    await notifier.idle();
    expect(t.socket.messages.map((m) => m.fields)).toEqual([['STATUS=one two READY=1'], ['STATUS=second']]);
    expect(() => notifyArgs({ 'READY=1\nX': 1 })).toThrow(/invalid sd_notify field name/);
  });
});

describe('outside systemd', () => {
  it('without NOTIFY_SOCKET there is no notifier and no observer (no timer, no process)', () => {
    expect(createNotifier({ log: silent, env: {} })).toBeUndefined();
    const daemon = {} as Daemon; // never touched when there is nothing to notify
    expect(systemdPlugin({ daemon, log: silent, env: { WATCHDOG_USEC: '1000000' } })).toBeUndefined();
  });

  it('WATCHDOG_USEC counts only when WATCHDOG_PID is ours or unset', () => {
    expect(watchdogPeriodMs({ WATCHDOG_USEC: '30000000' }, 42)).toBe(30_000);
    expect(watchdogPeriodMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '42' }, 42)).toBe(30_000);
    expect(watchdogPeriodMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '41' }, 42)).toBeUndefined();
    expect(watchdogPeriodMs({}, 42)).toBeUndefined();
    expect(watchdogPeriodMs({ WATCHDOG_USEC: 'x' }, 42)).toBeUndefined();
  });
});
