import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSmtpServer, type SmtpServer } from '../demo/smtp-server.js';
import { smtpFarmYaml } from './support/config.js';
import { tempDir, waitUntil } from './support/daemon.js';
import { restartable } from './support/servers.js';

/*
 * The unit under a real systemd 252: a Debian 12 minbase rootfs (debootstrap, cached by
 * test/systemd/rootfs.sh) booted once with systemd-nspawn (read-only, writes to a tmpfs
 * overlay), sharing the host network so the SMTP greeters on 127.0.0.1 are reachable.
 * The project and the host's node are bind-mounted at the unit's install paths
 * (/opt/nf-healthd, /usr/bin/node). A drop-in changes only what a test needs: a short
 * watchdog, the test-only fault switch (ExecStart= on the instrumented entry), a condition
 * folder under /srv (no xt_condition module here, so a plain folder stands in for
 * /proc/net/nf_condition).
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SCRIPTS = path.join(ROOT, 'test/systemd');
const name = `nfh-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], timeout = 60_000): Promise<Result> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err
        ? typeof (err as { code?: unknown }).code === 'number'
          ? (err as { code: number }).code
          : 1
        : 0;
      resolve({ code, stdout, stderr: stderr || (err && !stdout ? String(err.message) : stderr) });
    });
  });
}

let tmp: ReturnType<typeof tempDir>;
let nspawn: ChildProcess | undefined;
let nspawnExited: Promise<void> | undefined;
let bootLog = '';
let pid1 = 0;
let s1: SmtpServer;
let s2: SmtpServer;

/** A command inside the container (all its namespaces). */
const inside = (...args: string[]) => run('nsenter', ['-t', String(pid1), '-a', ...args]);
const systemctl = (...args: string[]) => inside('systemctl', ...args);
async function show(...props: string[]): Promise<Record<string, string>> {
  const r = await systemctl('show', 'nf-healthd', ...props.flatMap((p) => ['-p', p]));
  return Object.fromEntries(
    r.stdout
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}
const cond = (key: string) => {
  try {
    return readFileSync(path.join(tmp.dir, 'cond', key), 'utf8');
  } catch {
    return undefined;
  }
};

function config(backends: { name: string; port: number }[]): string {
  return smtpFarmYaml({
    timing: 'interval: 500ms, fastInterval: 200ms, timeout: 500ms, rise: 1, fall: 1',
    conditionDir: '/srv/nfh/cond',
    backends,
  });
}
/** Polls an async read until accept() holds, every 100 ms (each read is a command in the container). */
const eventually = <T>(read: () => Promise<T>, accept: (v: T) => boolean, ms = 10_000) =>
  waitUntil(read, accept, ms, 100);
const writeConfig = (text: string) => writeFileSync(path.join(tmp.dir, 'config.yaml'), text);

/** Runs one step of a scenario; a failure names the step. */
async function step(title: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (err instanceof Error) err.message = `step "${title}": ${err.message}`;
    throw err;
  }
}

/** The container's PID 1 as the host sees it: a descendant of nspawn that is PID 1 in its own namespace. */
function findPid1(nspawnPid: number): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let status: string;
    try {
      status = readFileSync(`/proc/${entry}/status`, 'utf8');
    } catch {
      continue;
    }
    const nspid = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.split(/\s+/);
    if (!nspid || nspid.length < 2 || nspid[nspid.length - 1] !== '1') continue;
    let pid = Number(entry);
    for (let depth = 0; depth < 6 && pid > 1; depth++) {
      const ppid = Number(/^PPid:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
      if (ppid === nspawnPid) return Number(entry);
      pid = ppid;
    }
  }
  return undefined;
}

beforeAll(async () => {
  const rootfs = await run('bash', [path.join(SCRIPTS, 'rootfs.sh')], 600_000);
  if (rootfs.code !== 0) throw new Error(`rootfs.sh failed: ${rootfs.stderr}`);
  tmp = tempDir('nfh-systemd-');
  chmodSync(tmp.dir, 0o755); // the service user reads config.yaml through it
  mkdirSync(path.join(tmp.dir, 'cond'));
  s1 = restartable(createSmtpServer());
  s2 = restartable(createSmtpServer());
  await s1.start();
  await s2.start();

  nspawn = spawn(
    'bash',
    [
      path.join(SCRIPTS, 'nspawn.sh'),
      'run',
      name,
      '-D',
      rootfs.stdout.trim(),
      '--volatile=overlay',
      '--console=pipe',
      `--bind-ro=${ROOT.replace(/\/$/, '')}:/opt/nf-healthd`,
      `--bind-ro=${process.execPath}:/usr/bin/node`,
      `--bind=${tmp.dir}:/srv/nfh`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  nspawn.stdout!.setEncoding('utf8').on('data', (c: string) => (bootLog = (bootLog + c).slice(-20_000)));
  nspawn.stderr!.setEncoding('utf8').on('data', (c: string) => (bootLog = (bootLog + c).slice(-20_000)));
  nspawnExited = new Promise((resolve) => nspawn!.once('exit', () => resolve()));
  const nspawnPid = nspawn.pid!;
  pid1 = await waitUntil(
    () => findPid1(nspawnPid) ?? 0,
    (p) => p > 0 || nspawn!.exitCode !== null,
    30_000,
    50,
  );
  if (!pid1) throw new Error(`the container did not boot: ${bootLog}`);
  // The bus answers a moment after boot; "degraded" is fine (units unrelated to ours).
  await eventually(
    async () => (await systemctl('is-system-running')).stdout.trim(),
    (s) => s === 'running' || s === 'degraded',
    60_000,
  );

  // Install as docs/operating.md says, plus the man pages (`npm run man`) and the test drop-in.
  const man = await run(process.execPath, [path.join(ROOT, 'scripts/man.mjs'), path.join(tmp.dir, 'man')]);
  if (man.code !== 0) throw new Error(`scripts/man.mjs: ${man.stderr}`);
  writeConfig(
    config([
      { name: 'mail1', port: s1.port },
      { name: 'mail2', port: s2.port },
    ]),
  );
  writeFileSync(
    path.join(tmp.dir, 'test.conf'),
    `# test/systemd.test.ts only
[Service]
ReadWritePaths=/srv/nfh/cond
WatchdogSec=3s
RestartSec=200ms
# The instrumented entry (test/instrument/, in the bind-mounted project): the unit's daemon plus the fault switch.
ExecStart=
ExecStart=/usr/bin/node /opt/nf-healthd/test/instrument/dist/entry.js run -c /etc/nf-healthd/config.yaml
Environment=NF_HEALTHD_TEST_WEDGE=loop
`,
  );
  const steps = [
    ['mkdir', '-p', '/etc/sysusers.d', '/etc/nf-healthd', '/etc/systemd/system/nf-healthd.service.d'],
    ['cp', '/opt/nf-healthd/systemd/nf-healthd.sysusers', '/etc/sysusers.d/nf-healthd.conf'],
    ['systemd-sysusers'],
    ['cp', '/opt/nf-healthd/systemd/nf-healthd.service', '/etc/systemd/system/nf-healthd.service'],
    ['mkdir', '-p', '/usr/local/share/man/man8', '/usr/local/share/man/man5'],
    ['cp', '/srv/nfh/man/nf-healthd.8', '/usr/local/share/man/man8/'],
    ['cp', '/srv/nfh/man/nf-healthd.yaml.5', '/usr/local/share/man/man5/'],
    ['ln', '-s', '/srv/nfh/config.yaml', '/etc/nf-healthd/config.yaml'],
    ['cp', '/srv/nfh/test.conf', '/etc/systemd/system/nf-healthd.service.d/test.conf'],
    ['chown', 'nf-healthd:nf-healthd', '/srv/nfh/cond'],
    ['systemctl', 'daemon-reload'],
  ];
  for (const step of steps) {
    const r = await inside(...step);
    if (r.code !== 0) throw new Error(`${step.join(' ')}: ${r.stderr}`);
  }
}, 900_000);

afterAll(async () => {
  if (nspawn && nspawn.exitCode === null && nspawn.signalCode === null) {
    nspawn.kill('SIGTERM'); // nspawn turns it into an orderly poweroff of the container
    const timer = setTimeout(() => nspawn!.kill('SIGKILL'), 20_000);
    await nspawnExited;
    clearTimeout(timer);
  }
  const cleanup = await run('bash', [path.join(SCRIPTS, 'nspawn.sh'), 'cleanup', name]);
  await s1?.stop();
  await s2?.stop();
  tmp?.cleanup();
  expect(cleanup.code, cleanup.stderr).toBe(0);
}, 60_000);

describe('nf-healthd.service under a real systemd 252 (systemd-nspawn)', () => {
  it('passes systemd-analyze verify where it is installed', async () => {
    const r = await inside('systemd-analyze', 'verify', '/etc/systemd/system/nf-healthd.service');
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
        const all = await eventually(
          () => inside('journalctl', '-u', 'nf-healthd', '-o', 'json', '--no-pager', '_COMM=node'),
          (r) => r.stdout.includes('mail2 is down'),
        );
        const priorities = new Map(
          all.stdout
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l) as { MESSAGE: string; PRIORITY: string })
            .filter((e) => e.MESSAGE.startsWith('{'))
            .map((e) => [(JSON.parse(e.MESSAGE) as { event?: string }).event, e.PRIORITY]),
        );
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
      expect(log.stdout).toContain('Watchdog timeout (limit 3s)!');
      expect(log.stdout).toContain("Failed with result 'watchdog'");
      expect(cond('mail1')).toBe('0\n');
    });
    await step('systemctl stop is clean', async () => {
      const cursor = /-- cursor: (.*)/.exec(
        (await inside('journalctl', '-u', 'nf-healthd', '-n', '0', '--show-cursor', '--no-pager')).stdout,
      )![1]!;
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
