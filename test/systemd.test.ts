import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SmtpServer } from '../demo/smtp-server.js';
import { waitUntil } from './support/daemon.js';
import { bootContainer, type Container, type ServiceHost, serviceHost } from './support/nspawn.js';

/*
 * The unit under a real systemd 252 (test/support/nspawn.ts: Debian 12 booted with
 * systemd-nspawn, sharing the host network so the SMTP greeters on 127.0.0.1 are
 * reachable). The project and the host's node are bind-mounted at the unit's install
 * paths (/usr/lib/nf-healthd, /usr/libexec/nf-healthd/node); test/package.test.ts
 * installs the Debian package instead. A drop-in changes only what a test needs: a
 * short watchdog, the test-only fault switch (ExecStart= on the instrumented entry), a
 * condition folder under /srv (no xt_condition module here, so a plain folder stands in
 * for /proc/net/nf_condition).
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));

let host: ServiceHost;
let box: Container | undefined;
let s1: SmtpServer;
let s2: SmtpServer;

const inside = (...args: string[]) => box!.inside(...args);
const systemctl = (...args: string[]) => box!.systemctl(...args);
const show = (...props: string[]) => box!.show('nf-healthd', ...props);
const cond = (key: string) => host.cond(key);
const config = (backends: { name: string; port: number }[]) => host.config(backends);
const eventually = <T>(read: () => Promise<T>, accept: (v: T) => boolean, ms = 10_000) =>
  box!.eventually(read, accept, ms);
const writeConfig = (text: string) => writeFileSync(path.join(host.dir, 'config.yaml'), text);

/** Runs one step of a scenario; a failure names the step. */
async function step(title: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (err instanceof Error) err.message = `step "${title}": ${err.message}`;
    throw err;
  }
}

beforeAll(async () => {
  host = await serviceHost('nfh-systemd-');
  ({ s1, s2 } = host);
  box = await bootContainer([
    `--bind-ro=${ROOT.replace(/\/$/, '')}:/usr/lib/nf-healthd`,
    `--bind-ro=${process.execPath}:/usr/libexec/nf-healthd/node`,
    host.bind,
  ]);

  // Install by hand what the package installs, plus the test drop-in.
  writeConfig(
    config([
      { name: 'mail1', port: s1.port },
      { name: 'mail2', port: s2.port },
    ]),
  );
  writeFileSync(
    path.join(host.dir, 'test.conf'),
    `# test/systemd.test.ts only
[Service]
ReadWritePaths=/srv/nfh/cond
WatchdogSec=6s
RestartSec=200ms
# The instrumented entry (test/instrument/, in the bind-mounted project): the unit's daemon plus the fault switch.
ExecStart=
ExecStart=/usr/libexec/nf-healthd/node /usr/lib/nf-healthd/test/instrument/dist/entry.js run -c /etc/nf-healthd/config.yaml
Environment=NF_HEALTHD_TEST_WEDGE=loop
`,
  );
  const steps = [
    ['mkdir', '-p', '/etc/sysusers.d', '/etc/nf-healthd', '/etc/systemd/system/nf-healthd.service.d'],
    ['cp', '/usr/lib/nf-healthd/systemd/nf-healthd.sysusers', '/etc/sysusers.d/nf-healthd.conf'],
    ['systemd-sysusers'],
    ['cp', '/usr/lib/nf-healthd/systemd/nf-healthd.service', '/etc/systemd/system/nf-healthd.service'],
    ['ln', '-s', '/srv/nfh/config.yaml', '/etc/nf-healthd/config.yaml'],
    ['cp', '/srv/nfh/test.conf', '/etc/systemd/system/nf-healthd.service.d/test.conf'],
    ['chown', 'nf-healthd:nf-healthd', '/srv/nfh/cond'],
    ['systemctl', 'daemon-reload'],
  ];
  for (const step of steps) await box.must(...step);
}, 900_000);

afterAll(async () => {
  try {
    await box?.shutdown();
  } finally {
    await host?.close();
  }
}, 60_000);

describe('nf-healthd.service under a real systemd 252 (systemd-nspawn)', () => {
  it('passes systemd-analyze verify where it is installed', async () => {
    // --man=no: this install is by hand, without the man pages; test/package.test.ts installs
    // them with the package and test/man.test.ts renders them.
    const r = await inside('systemd-analyze', 'verify', '--man=no', '/etc/systemd/system/nf-healthd.service');
    expect(r.code, r.stderr).toBe(0);
  });

  // One scenario in steps, in this order: each step starts from the state the one
  // before left (service started, config reloaded, ...). A failing step names itself
  // and the rest do not run, rather than failing for the wrong reason.
  it('start, journal priorities, reload, refused reload, watchdog restart, clean stop', async () => {
    await step('systemctl start returns once the condition folder holds the first round', async () => {
      await s2.stop(); // mail2 goes down in the first round (fall 1)
      expect(cond('mail1')).toBeUndefined();
      const r = await systemctl('start', 'nf-healthd');
      expect(r.code, r.stderr).toBe(0);
      // Read right after start returned: READY=1 came after the writes.
      expect(cond('mail1')).toBe('0\n');
      expect(cond('mail2')).toBe('1\n');
      const state = await show('ActiveState', 'SubState', 'StatusText', 'User');
      expect(state.ActiveState).toBe('active');
      expect(state.StatusText).toMatch(/^1\/2 up; mail2 down since \d\d:\d\d:\d\d: connect ECONNREFUSED$/);
      // The sandbox takes nothing it needs (state file, notify, condition folder): no errors.
      const errors = await inside('journalctl', '-p', 'err', '-u', 'nf-healthd', '-o', 'cat', '--no-pager');
      expect(errors.stdout.trim()).toBe('');
    });
    await step(
      'logs at journald priorities: the down transition shows under journalctl -p warning, info lines do not',
      async () => {
        const warnings = await eventually(
          () => inside('journalctl', '-p', 'warning', '-u', 'nf-healthd', '-o', 'cat', '--no-pager'),
          (r) => r.stdout.includes('mail2 is down'),
        );
        expect(warnings.stdout).toContain('backend mail2 is down: 1 consecutive failures: connect ECONNREFUSED');
        expect(warnings.stdout).not.toContain('nf-healthd ready');
        const priorities = await box!.priorities('nf-healthd', 'mail2 is down');
        expect(priorities.get('transition')).toBe('4');
        expect(priorities.get('ready')).toBe('6');
        expect(priorities.get('starting')).toBe('6');
      },
    );
    await step('systemctl reload applies a changed config', async () => {
      const before = await show('MainPID');
      writeConfig(
        config([
          { name: 'mail1', port: s1.port },
          { name: 'mail2', port: s2.port },
          { name: 'mail3', port: s1.port },
        ]),
      );
      const r = await systemctl('reload', 'nf-healthd');
      expect(r.code, r.stderr).toBe(0);
      // systemd 252 ends the reload job when `kill -HUP` exits: wait for the effect.
      await waitUntil(
        () => cond('mail3'),
        (v) => v === '0\n',
        10_000,
      );
      const status = await eventually(
        () => show('MainPID', 'StatusText'),
        (v) => v.StatusText!.startsWith('2/3 up'),
      );
      expect(status.MainPID).toBe(before.MainPID);
      expect(status.StatusText).toMatch(/^2\/3 up; mail2 down since/);
    });
    await step('systemctl reload with a broken config is refused and the service keeps running', async () => {
      const before = await show('MainPID');
      writeConfig('services:\n  - name: mail\n    port: 25\n    backends: []\n');
      const r = await systemctl('reload', 'nf-healthd');
      expect(r.code).not.toBe(0);
      const after = await show('MainPID', 'ActiveState', 'SubState');
      expect(after).toMatchObject({ MainPID: before.MainPID, ActiveState: 'active', SubState: 'running' });
      const log = await eventually(
        () => inside('journalctl', '-u', 'nf-healthd', '-o', 'cat', '--no-pager', '-n', '20'),
        (r) => r.stdout.includes('config.yaml:4:15'),
      );
      expect(log.stdout).toContain(
        '/etc/nf-healthd/config.yaml:4:15: services[0].backends: a service needs at least one backend',
      );
      writeConfig(
        config([
          { name: 'mail1', port: s1.port },
          { name: 'mail2', port: s2.port },
          { name: 'mail3', port: s1.port },
        ]),
      );
    });
    await step('a wedged daemon is killed by the watchdog and restarted', async () => {
      const before = await show('MainPID', 'NRestarts');
      const r = await systemctl('kill', '--kill-who=main', '-s', 'SIGUSR2', 'nf-healthd'); // test-only: blocks the event loop
      expect(r.code, r.stderr).toBe(0);
      const after = await eventually(
        () => show('MainPID', 'NRestarts', 'ActiveState'),
        (v) => v.NRestarts !== before.NRestarts && v.ActiveState === 'active',
        20_000,
      );
      expect(after.ActiveState).toBe('active');
      expect(Number(after.NRestarts)).toBe(Number(before.NRestarts) + 1);
      expect(after.MainPID).not.toBe(before.MainPID);
      const log = await eventually(
        () => inside('journalctl', '-u', 'nf-healthd', '-o', 'cat', '--no-pager', '-n', '40'),
        (r) => r.stdout.includes('Watchdog timeout'),
      );
      expect(log.stdout).toContain('Watchdog timeout (limit 6s)!');
      expect(log.stdout).toContain("Failed with result 'watchdog'");
      expect(cond('mail1')).toBe('0\n');
    });
    await step('systemctl stop is clean', async () => {
      const cursor = await box!.cursor();
      const r = await systemctl('stop', 'nf-healthd');
      expect(r.code, r.stderr).toBe(0);
      expect(await show('ActiveState', 'SubState', 'Result')).toMatchObject({
        ActiveState: 'inactive',
        SubState: 'dead',
        Result: 'success',
      });
      const log = (
        await eventually(
          () => inside('journalctl', '-u', 'nf-healthd', '-o', 'cat', '--no-pager', `--after-cursor=${cursor}`),
          (r) => r.stdout.includes('Deactivated'),
        )
      ).stdout;
      // It stopped by itself on SIGTERM: no timeout, no SIGKILL, exit status 0.
      expect(log).toContain('stopping on SIGTERM');
      expect(log).toContain('nf-healthd.service: Deactivated successfully.');
      expect(log).not.toMatch(/timed out|Killing|SIGKILL|status=/);
    });
  }, 180_000);
});
