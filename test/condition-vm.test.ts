import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN } from './support/daemon.js';
import { cleanupNetns, tempFolder } from './support/netns.js';
import { bootVm, type GuestStep, type Image, killVm, runDisk, sizeMb, type VmRun, vmImage } from './vm/vm.js';

/*
 * The recipe on a kernel that has xt_condition: this machine's kernel has neither the
 * module nor its headers, so the test boots Debian 12's own kernel in QEMU (KVM when
 * /dev/kvm is usable, else TCG emulation) from an image built once and cached
 * (test/vm/image.sh: debootstrap, xtables-addons built by DKMS for that kernel,
 * iptables-legacy). Inside, test/vm/guest.py makes network namespaces for a client, the
 * balancer and four SMTP backends, loads `nf-healthd rules --format iptables` output
 * (rendered here on the host from the configs below) and the recipe's own ruleset, runs
 * `nf-healthd run` (the host's node and this checkout) with the condition writer, and
 * counts real connections on both ends. Its results come back as JSON lines; each `it`
 * below checks one step. Nothing is mocked inside the VM; the VM itself stands in for a
 * host whose kernel has xt_condition.
 */

const VIP = '10.0.0.1';
/** Wide bounds: a fresh image build is about 5 minutes on a quiet machine; the run about 3 under TCG. */
const BUILD_TIMEOUT = 25 * 60_000;
const RUN_TIMEOUT = 15 * 60_000;
const TIMING = 'interval: 1s, fastInterval: 250ms, timeout: 2s, rise: 2, fall: 2';

/** The README's recipe config (conditions mail1up, mail2up), with short timings and JSON logs. */
function mailConfig(stateFile: string, extra = ''): string {
  return `defaults: { ${TIMING} }
log: { level: info, format: json }
stateFile: ${stateFile}
${extra}writer: { type: condition }
services:
  - name: mail
    vip: ${VIP}
    port: 25
    inInterface: bond0.204
    check: { type: smtp }
    backends:
      - { name: mail1, address: 192.168.0.1, condition: mail1up }
      - { name: mail2, address: 192.168.0.2, condition: mail2up }
`;
}

const WEB_CONFIG = `writer: { type: condition }
services:
  - name: web
    vip: ${VIP}
    port: 25
    inInterface: bond0.204
    check: { type: tcp }
    backends:
${[4, 2, 1, 1].map((w, i) => `      - { name: web${i + 1}, address: 192.168.0.${i + 1}, weight: ${w} }`).join('\n')}
`;

interface Share {
  backend: string;
  /** The guest's server: 192.168.0.N is beN. */
  server: string;
  condition: string;
  num: number;
  den: number;
}

/** What the rules' comments promise: `#   mark 0x101: backend web1 192.168.0.1:25, 4/8 of new connections, condition web1`. */
function shares(rules: string): Share[] {
  return [
    ...rules.matchAll(
      /^# {3}mark 0x[0-9a-f]+: backend (\S+) 192\.168\.0\.(\d+):25, (\d+)\/(\d+) of new connections, condition (\S+)$/gm,
    ),
  ].map((m) => ({ backend: m[1]!, server: `be${m[2]}`, num: Number(m[3]), den: Number(m[4]), condition: m[5]! }));
}

/** Connections per server out of n, as the comments say, with the down backends' slots going to the first live one. */
function expectedSplit(list: Share[], n: number, down: string[] = []): Record<string, number> {
  const out: Record<string, number> = {};
  const firstLive = list.find((s) => !down.includes(s.condition))!;
  for (const s of list) {
    const to = down.includes(s.condition) ? firstLive.server : s.server;
    out[to] = (out[to] ?? 0) + (n * s.num) / s.den;
  }
  return out;
}

const dir = tempFolder('nfh-vm-');
const rules2 = () => render('config-2.yaml');
const rules4 = () => render('config-4.yaml');
const configs: Record<string, string> = {
  'config-2.yaml': mailConfig('/tmp/state-root.json'),
  'config-2-kernel.yaml': mailConfig('/tmp/state-kernel.json', 'initialState: kernel\n'),
  'config-2-user.yaml': mailConfig('/tmp/nfh-user/state.json'),
  'config-4.yaml': WEB_CONFIG,
};
const rendered = new Map<string, string>();
function render(name: string): string {
  let text = rendered.get(name);
  if (text === undefined) {
    const file = path.join(dir, name);
    writeFileSync(file, configs[name]!);
    text = execFileSync(process.execPath, [BIN, 'rules', '-c', file, '--format', 'iptables'], { encoding: 'utf8' });
    rendered.set(name, text);
  }
  return text;
}

let run: VmRun;
let image: Image;

/** One guest step's data; a failed or missing step fails with the guest's own words and console. */
function step(name: string): GuestStep {
  const s = run.steps.get(name);
  if (s?.ok) return s;
  const why = s
    ? `failed:\n${s.error}\ndaemon log:\n${JSON.stringify(s.log, null, 1)}`
    : `did not report (QEMU ${run.exit}; steps reported: ${[...run.steps.keys()].join(', ')})`;
  throw new Error(`guest step ${name} ${why}\n--- guest console (end) ---\n${run.console.slice(-6000)}`);
}

beforeAll(
  async () => {
    const t0 = performance.now();
    image = await vmImage(BUILD_TIMEOUT);
    const t1 = performance.now();
    const disk = await runDisk(dir, {
      ...configs,
      'rules-2.v4': rules2(),
      'rules-4.v4': rules4(),
    });
    const t2 = performance.now();
    run = await bootVm(image, disk, dir, RUN_TIMEOUT);
    // Where the time went (the test output; docs/recipe-vm.md quotes a run).
    const boot = run.steps.get('boot');
    const steps = [...run.steps.values()]
      .filter((s) => s.ms !== undefined)
      .map((s) => `${s.step} ${((s.ms as number) / 1000).toFixed(1)}s${s.ok ? '' : ' FAILED'}`);
    console.log(
      [
        `vm: image ${image.dir} (kernel ${image.kernel}) ${image.buildLog ? 'built' : 'from the cache'} in ${((t1 - t0) / 1000).toFixed(1)}s`,
        ...(image.buildLog ? [image.buildLog] : []),
        `vm: run disk ${sizeMb(disk)} MB made in ${((t2 - t1) / 1000).toFixed(1)}s`,
        `vm: QEMU (${run.accel}) ${(run.ms / 1000).toFixed(1)}s, ${run.exit}; guest script started ${boot ? `${boot.uptime}s after the kernel` : 'never'}`,
        `vm: steps: ${steps.join(', ')}`,
      ].join('\n'),
    );
  },
  BUILD_TIMEOUT + RUN_TIMEOUT + 120_000,
);

afterAll(() => {
  killVm();
  cleanupNetns(); // removes the temp folder (no namespaces on the host)
});

describe('xt_condition on a real kernel (Debian 12 in QEMU)', () => {
  it('boots the image with xt_condition built by DKMS for its own kernel', () => {
    const s = step('setup');
    expect(s.kernel).toBe(image.kernel);
    expect(s.module).toBe(`/lib/modules/${image.kernel}/updates/dkms/xt_condition.ko`);
    expect(s.moduleParameters).toEqual({
      condition_gid_perms: '0',
      condition_list_perms: '420',
      condition_uid_perms: '0',
    });
    expect(step('done')).toBeDefined();
  });

  it('nf-healthd rules --format iptables (2 backends) loads with iptables-legacy-restore and splits 40 connections as its comments say', () => {
    const s = step('rules-2');
    const list = shares(rules2());
    expect(list.map((x) => `${x.backend} ${x.num}/${x.den}`)).toEqual(['mail1 1/2', 'mail2 1/2']);
    expect(s.conditions).toEqual({ mail1up: '0', mail2up: '0' });
    const want = expectedSplit(list, 40);
    expect(want).toEqual({ be1: 20, be2: 20 });
    expect(s).toMatchObject({ answers: want, accepted: want, failures: [] });
  });

  it('the 4-backend ruleset with weights 4,2,1,1 splits 40 connections 20/10/5/5', () => {
    const s = step('rules-4');
    const list = shares(rules4());
    expect(list.map((x) => `${x.backend} ${x.num}/${x.den}`)).toEqual(['web1 4/8', 'web2 2/8', 'web3 1/8', 'web4 1/8']);
    expect(s.conditions).toEqual({ web1: '0', web2: '0', web3: '0', web4: '0' });
    const want = expectedSplit(list, 40);
    expect(want).toEqual({ be1: 20, be2: 10, be3: 5, be4: 5 });
    expect(s).toMatchObject({ answers: want, accepted: want, failures: [] });
  });

  it('a condition set to 1 takes the backend out: its slots fall through to the first live backend', () => {
    const s = step('rules-4-web2-down');
    const want = expectedSplit(shares(rules4()), 40, ['web2']);
    expect(want).toEqual({ be1: 30, be3: 5, be4: 5 });
    expect(s).toMatchObject({ hand: { web2: 1 }, answers: want, accepted: want, failures: [] });
  });

  describe('nf-healthd run with the condition writer (root)', () => {
    it('starts and reports both backends up; the files hold 0', () => {
      const s = step('daemon-start');
      expect(s).toMatchObject({ summary: '2/2 up', conditions: { mail1up: '0', mail2up: '0' } });
    });

    it('splits new connections 10/10', () => {
      expect(step('daemon-split')).toMatchObject({ answers: { be1: 10, be2: 10 }, failures: [] });
    });

    it('fails over: mail2 down writes 1, every new connection reaches be1', () => {
      const s = step('daemon-failover');
      expect(s.transition).toMatch(/^backend mail2 is down: 2 consecutive failures: connect ECONNREFUSED/);
      expect(s).toMatchObject({ conditions: { mail1up: '0', mail2up: '1' }, answers: { be1: 20 }, failures: [] });
    });

    it('recovers: mail2 back writes 0, the split resumes', () => {
      const s = step('daemon-recovery');
      expect(s.transition).toMatch(/^backend mail2 is up: 2 consecutive successes: 220 be2 ESMTP/);
      expect(s).toMatchObject({ conditions: { mail1up: '0', mail2up: '0' }, answers: { be1: 10, be2: 10 } });
    });

    it('repairs a value written by hand', () => {
      const s = step('daemon-drift');
      expect(s.log).toBe(
        '/proc/net/nf_condition/mail1up held 1 behind our back (rules reloaded or written by hand); set it back to up',
      );
      expect(s.conditions).toEqual({ mail1up: '0', mail2up: '0' });
    });

    it('rules flushed and reloaded under it: the files vanish, come back at 0, and it puts its values back', () => {
      const s = step('daemon-reload');
      expect(s.before).toEqual({ mail1up: '0', mail2up: '1' });
      expect(s.flushed).toEqual({});
      expect(s.failed).toMatch(
        /^cannot write \/proc\/net\/nf_condition\/mail[12]up: ENOENT: no loaded rule names condition/,
      );
      expect(s.reloaded).toEqual({ mail1up: '0', mail2up: '0' });
      expect(s.recovered).toMatch(/^writing \/proc\/net\/nf_condition\/mail[12]up works again$/);
      expect(s).toMatchObject({ answers: { be1: 10 }, failures: [], after: { mail1up: '0', mail2up: '0' } });
    });

    it('stops cleanly', () => {
      expect(step('daemon-stop')).toMatchObject({ exitCode: 0 });
    });
  });

  it('initialState: kernel adopts the values the files hold', () => {
    const s = step('initial-kernel');
    expect(s.held).toEqual({ mail1up: '0', mail2up: '1' });
    expect(s.summary).toMatch(/^1\/2 up; mail2 down since /);
    expect(s).toMatchObject({ atReady: { mail1up: '0', mail2up: '1' }, exitCode: 0 });
    // Adopted down, then up on its own checks.
    expect(s.transition).toMatchObject({ backend: 'mail2', previous: 'down', state: 'up' });
    expect(s.after).toEqual({ mail1up: '0', mail2up: '0' });
  });

  describe('as an unprivileged user with CAP_NET_ADMIN only', () => {
    it('without the module parameters: a clear error naming the parameters to set', () => {
      const s = step('unprivileged-denied');
      expect(s.identity).toMatchObject({
        Uid: '4242\t4242\t4242\t4242',
        CapEff: '0000000000001000',
        CapBnd: '0000000000001000',
      });
      expect(s.files).toEqual({
        mail1up: { mode: '0o644', uid: 0, gid: 0 },
        mail2up: { mode: '0o644', uid: 0, gid: 0 },
      });
      const failed = s.failed as { code: string; msg: string };
      expect(failed.code).toBe('EACCES');
      expect(failed.msg).toContain('condition_gid_perms=4242 condition_list_perms=0664');
      expect(s.conditions).toEqual({ mail1up: '1', mail2up: '1' });
    });

    it('with condition_gid_perms and condition_list_perms: the files are group-writable and it writes them', () => {
      const s = step('unprivileged-allowed');
      expect(s.files).toEqual({
        mail1up: { mode: '0o664', uid: 0, gid: 4242 },
        mail2up: { mode: '0o664', uid: 0, gid: 4242 },
      });
      expect(s).toMatchObject({ summary: '2/2 up', conditions: { mail1up: '0', mail2up: '0' }, errors: [] });
    });
  });

  describe("the recipe's own ruleset (test/vm/recipe.rules), driven by those files", () => {
    it('splits 40 new connections 20/20', () => {
      expect(step('recipe-split')).toMatchObject({
        answers: { be1: 20, be2: 20 },
        accepted: { be1: 20, be2: 20 },
        failures: [],
      });
    });

    it('mail1 down: every new connection reaches be2', () => {
      const s = step('recipe-failover');
      expect(s.transition).toMatch(/^backend mail1 is down: 2 consecutive failures: connect ECONNREFUSED/);
      expect(s).toMatchObject({
        conditions: { mail1up: '1', mail2up: '0' },
        answers: { be2: 20 },
        failures: [],
      });
    });

    it('mail1 back: the split resumes, and the daemon stops cleanly', () => {
      expect(step('recipe-recovery')).toMatchObject({
        conditions: { mail1up: '0', mail2up: '0' },
        answers: { be1: 10, be2: 10 },
      });
      expect(step('recipe-stop')).toMatchObject({ exitCode: 0, errors: [] });
    });
  });
});
