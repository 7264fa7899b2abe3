import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SmtpServer } from '../src/demo/smtp-server.js';
import { waitUntil } from './support/daemon.js';
import { type Result, run } from './support/exec.js';
import { bootContainer, type Container, type ServiceHost, serviceHost } from './support/nspawn.js';

/*
 * The Debian package (`npm run package`, scripts/package.sh) installed the way an admin
 * does, into a real Debian 12 with systemd 252 (test/support/nspawn.ts), and used
 * through systemctl and journalctl: install, the unconfigured first start, start,
 * status, reload, a refused reload, an upgrade to a second build with a higher version,
 * remove, purge. apt needs no network: the rootfs already holds every dependency
 * (test/systemd/rootfs.sh). Two test-only changes in the container, both
 * because nspawn shares the host network: a drop-in that lets the daemon write a
 * condition folder under /srv (no xt_condition module here), and nothing else.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const UPGRADE = `${VERSION}+upgrade1`;
// What lintian reports on the package and docs/install.md explains; anything else fails.
const ACCEPTED_LINTIAN = [
  'W: nf-healthd: hardening-no-pie [usr/libexec/nf-healthd/node]',
  'W: nf-healthd: script-not-executable [usr/lib/nf-healthd/node_modules/pino-pretty/bin.js]',
  'W: nf-healthd: script-not-executable [usr/lib/nf-healthd/node_modules/pino/bin.js]',
  'W: nf-healthd: script-not-executable [usr/lib/nf-healthd/node_modules/yaml/bin.mjs]',
];

let host: ServiceHost;
let box: Container | undefined;
let s1: SmtpServer;
let s2: SmtpServer;
let upgradeBuild: Promise<string> | undefined;
let lintian: Promise<Result> | undefined;

async function build(version: string, compression: string): Promise<string> {
  const r = await run('bash', [path.join(ROOT, 'scripts/package.sh')], 600_000, {
    ...process.env,
    NFH_DEB_VERSION: version,
    NFH_DEB_OUT: path.join(host.dir, 'debs'),
    NFH_DEB_COMPRESSION: compression,
  });
  if (r.code !== 0) throw new Error(`package.sh ${version} failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim().split('\n').pop()!; // the .deb's path
}

const inside = (...args: string[]) => box!.inside(...args);
const show = (...props: string[]) => box!.show('nf-healthd', ...props);
// Every dependency is in the rootfs already; the proxy on a closed loopback port makes
// sure that, if apt ever wanted to download something, it would fail here and not fetch.
const apt = (...args: string[]) =>
  inside(
    'env',
    'DEBIAN_FRONTEND=noninteractive',
    'apt-get',
    '-y',
    '-o',
    'Acquire::http::Proxy=http://127.0.0.1:1/',
    '-o',
    'Dpkg::Use-Pty=0',
    ...args,
  );
const debInside = (file: string) => `/srv/nfh/debs/${path.basename(file)}`;
const cond = (key: string) => host.cond(key);

/** The admin edits /etc/nf-healthd/config.yaml (cp keeps the file's owner and mode). */
async function configure(backends: { name: string; port: number }[] | string): Promise<void> {
  const text = typeof backends === 'string' ? backends : host.config(backends);
  writeFileSync(path.join(host.dir, 'config.yaml'), text);
  await box!.must('cp', '/srv/nfh/config.yaml', '/etc/nf-healthd/config.yaml');
}

beforeAll(async () => {
  host = await serviceHost('nfh-package-');
  ({ s1, s2 } = host);
  const [first] = await Promise.all([
    build(VERSION, 'gzip'),
    bootContainer([host.bind]).then((b) => {
      box = b;
    }),
  ]);
  // Both run while the tests below use the first package; the tests that need them wait.
  lintian = run('lintian', ['--tag-display-limit', '0', first], 600_000);
  upgradeBuild = build(UPGRADE, 'none');
  upgradeBuild.catch(() => undefined); // awaited (and reported) by its test
}, 900_000);

afterAll(async () => {
  await upgradeBuild?.catch(() => undefined); // never leave package.sh writing into tmp
  try {
    await box?.shutdown();
  } finally {
    await host?.close();
  }
}, 120_000);

describe('the Debian package in a real Debian 12 with systemd 252', () => {
  it('apt-get install ./nf-healthd_*.deb: user made, unit enabled but not started, runtime and man pages in place', async () => {
    const r = await apt('install', debInside(`nf-healthd_${VERSION}_amd64.deb`));
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain(`Setting up nf-healthd (${VERSION})`);
    expect(await box!.must('getent', 'passwd', 'nf-healthd')).toMatch(
      /^nf-healthd:x:\d+:\d+:nf-healthd health checks:\/:/,
    );
    expect((await box!.systemctl('is-enabled', 'nf-healthd')).stdout.trim()).toBe('enabled');
    expect((await box!.systemctl('is-active', 'nf-healthd')).stdout.trim()).toBe('inactive');
    expect((await box!.must('stat', '-c', '%a %U %G', '/etc/nf-healthd/config.yaml')).trim()).toBe(
      '640 root nf-healthd',
    );
    expect((await box!.must('nf-healthd', '--version')).trim()).toBe(VERSION);
    expect((await box!.must('/usr/libexec/nf-healthd/node', '--version')).trim()).toMatch(
      /^v(2[1-9]|20\.(19|[2-9]\d))\./,
    );
    await box!.must('test', '-s', '/usr/share/man/man8/nf-healthd.8.gz');
    await box!.must('test', '-s', '/usr/share/man/man5/nf-healthd.yaml.5.gz');
    // The first install started nothing, so nothing touched the condition folder.
    expect(cond('mail1')).toBeUndefined();
  }, 180_000);

  it('as installed (every service commented out) it refuses to start, with the reason in the journal', async () => {
    const check = await inside('nf-healthd', 'check');
    expect(check.code).toBe(78);
    expect(check.stderr).toMatch(
      /^\/etc\/nf-healthd\/config\.yaml:\d+:\d+: services: at least one service is needed$/m,
    );
    const r = await box!.systemctl('start', 'nf-healthd');
    expect(r.code).not.toBe(0);
    expect((await show('ActiveState', 'Result')).Result).toBe('exit-code');
    const log = await box!.eventually(
      () => box!.journal('nf-healthd'),
      (t) => t.includes('at least one service is needed'),
    );
    expect(log).toMatch(/\/etc\/nf-healthd\/config\.yaml:\d+:\d+: services: at least one service is needed/);
    // Restart=on-failure retries a failed ExecStartPre= (at most StartLimitBurst times): stop that.
    await box!.must('systemctl', 'stop', 'nf-healthd');
    await box!.must('systemctl', 'reset-failed', 'nf-healthd');
  }, 60_000);

  it('configured with loopback backends: systemctl start, status shows the sd_notify status, journal priorities', async () => {
    await box!.must('mkdir', '-p', '/etc/systemd/system/nf-healthd.service.d');
    writeFileSync(
      path.join(host.dir, 'test.conf'),
      '# test/package.test.ts only\n[Service]\nReadWritePaths=/srv/nfh/cond\n',
    );
    await box!.must('cp', '/srv/nfh/test.conf', '/etc/systemd/system/nf-healthd.service.d/test.conf');
    await box!.must('chown', 'nf-healthd:nf-healthd', '/srv/nfh/cond');
    await box!.must('systemctl', 'daemon-reload');
    await s2.stop(); // mail2 goes down in the first round
    await configure([
      { name: 'mail1', port: s1.port },
      { name: 'mail2', port: s2.port },
    ]);
    const cursor = await box!.cursor();
    const r = await box!.systemctl('start', 'nf-healthd');
    expect(r.code, r.stderr).toBe(0);
    expect(cond('mail1')).toBe('0\n');
    expect(cond('mail2')).toBe('1\n');
    const status = await inside('systemctl', 'status', '--no-pager', 'nf-healthd');
    expect(status.stdout).toMatch(
      /Loaded: loaded \(\/lib\/systemd\/system\/nf-healthd\.service; enabled; preset: enabled\)/,
    );
    expect(status.stdout).toMatch(/Active: active \(running\)/);
    expect(status.stdout).toMatch(/Status: "1\/2 up; mail2 down since \d\d:\d\d:\d\d: connect ECONNREFUSED"/);
    const priorities = await box!.priorities('nf-healthd', 'mail2 is down');
    expect(priorities.get('transition')).toBe('4');
    expect(priorities.get('ready')).toBe('6');
    expect(await box!.journal('nf-healthd', '-q', '-p', 'err', `--after-cursor=${cursor}`)).toBe('');
  }, 120_000);

  it('systemctl reload applies a change; a broken config fails the reload and the daemon keeps running', async () => {
    const before = await show('MainPID');
    await configure([
      { name: 'mail1', port: s1.port },
      { name: 'mail2', port: s2.port },
      { name: 'mail3', port: s1.port },
    ]);
    expect((await box!.systemctl('reload', 'nf-healthd')).code).toBe(0);
    await waitUntil(
      () => cond('mail3'),
      (v) => v === '0\n',
      10_000,
    );
    await box!.eventually(
      () => show('StatusText'),
      (v) => v.StatusText!.startsWith('2/3 up'),
    );

    const good = readFileSync(path.join(host.dir, 'config.yaml'), 'utf8');
    await configure('services:\n  - name: mail\n    port: 25\n    backends: []\n');
    const r = await box!.systemctl('reload', 'nf-healthd');
    expect(r.code).not.toBe(0);
    expect(await show('MainPID', 'ActiveState', 'SubState')).toEqual({
      MainPID: before.MainPID,
      ActiveState: 'active',
      SubState: 'running',
    });
    const log = await box!.eventually(
      () => box!.journal('nf-healthd', '-n', '20'),
      (t) => t.includes('config.yaml:4:15'),
    );
    expect(log).toContain(
      '/etc/nf-healthd/config.yaml:4:15: services[0].backends: a service needs at least one backend',
    );
    await configure(good);
  }, 60_000);

  it('lintian: no errors; the warnings are the ones docs/install.md accepts', async () => {
    const r = await lintian!;
    const tags = r.stdout.split('\n').filter((l) => /^[EW]: /.test(l));
    expect(r.stdout, r.stderr).toContain('nf-healthd');
    expect(tags.filter((l) => l.startsWith('E: '))).toEqual([]);
    expect(tags.sort()).toEqual(ACCEPTED_LINTIAN.sort());
  }, 600_000);

  it('an upgrade to a higher version restarts the running daemon, which resumes from the kept state file', async () => {
    const deb = await upgradeBuild!;
    expect(path.basename(deb)).toBe(`nf-healthd_${UPGRADE}_amd64.deb`);
    const before = await show('MainPID', 'StatusText');
    const since = /down since (\d\d:\d\d:\d\d)/.exec(before.StatusText!)?.[1];
    expect(since).toBeDefined();
    await box!.must('test', '-s', '/run/nf-healthd/state.json');
    const cursor = await box!.cursor();

    const r = await apt('install', debInside(deb));
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain(`Unpacking nf-healthd (${UPGRADE}) over (${VERSION})`);
    expect((await box!.must('nf-healthd', '--version')).trim()).toBe(UPGRADE);
    const after = await box!.eventually(
      () => show('MainPID', 'ActiveState', 'StatusText'),
      (v) => v.MainPID !== before.MainPID && v.ActiveState === 'active' && v.StatusText !== '',
      30_000,
    );
    // The same outage, from the state file: not a fresh "down since" of the new process.
    expect(after.StatusText).toMatch(new RegExp(`^2/3 up; mail2 down since ${since}`));
    const log = await box!.journal('nf-healthd', `--after-cursor=${cursor}`);
    expect(log).toContain('resuming 3 of 3 backends from /run/nf-healthd/state.json');
    expect(log).not.toContain('is down');
  }, 600_000);

  it('apt-get remove stops the daemon and keeps the config and the user', async () => {
    const r = await apt('remove', 'nf-healthd');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(await show('ActiveState', 'LoadState')).toMatchObject({ ActiveState: 'inactive' });
    await box!.must('test', '-f', '/etc/nf-healthd/config.yaml');
    await box!.must('getent', 'passwd', 'nf-healthd');
    expect((await inside('test', '-e', '/usr/lib/nf-healthd')).code).toBe(1);
    const log = await box!.journal('nf-healthd', '-n', '5');
    expect(log).toContain('stopping on SIGTERM');
  }, 180_000);

  it('apt-get purge removes the config, its folder, the user and the group', async () => {
    const r = await apt('purge', 'nf-healthd');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect((await inside('test', '-e', '/etc/nf-healthd')).code).toBe(1);
    expect((await inside('getent', 'passwd', 'nf-healthd')).code).toBe(2);
    expect((await inside('getent', 'group', 'nf-healthd')).code).toBe(2);
    expect((await inside('dpkg-query', '-W', 'nf-healthd')).code).toBe(1);
  }, 180_000);
});
