import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSmtpServer, type SmtpServer } from '../../demo/smtp-server.js';
import { smtpFarmYaml } from './config.js';
import { tempDir, waitUntil } from './daemon.js';
import { type Result, run } from './exec.js';
import { restartable } from './servers.js';

/*
 * A real systemd 252 to test against: the Debian 12 minbase rootfs of
 * test/systemd/rootfs.sh (debootstrap, cached) booted with systemd-nspawn, read-only
 * with writes to a tmpfs overlay, sharing the host's network (so servers on 127.0.0.1
 * are reachable), in a cgroup of its own that test/systemd/nspawn.sh removes afterwards.
 */

const SCRIPTS = fileURLToPath(new URL('../systemd/', import.meta.url));

export interface Container {
  readonly name: string;
  /** A command inside the container (all its namespaces). */
  inside(...args: string[]): Promise<Result>;
  /** Like inside(), but rejects unless it exits 0. */
  must(...args: string[]): Promise<string>;
  systemctl(...args: string[]): Promise<Result>;
  /** `systemctl show UNIT -p ...` as an object. */
  show(unit: string, ...props: string[]): Promise<Record<string, string>>;
  /** `journalctl -u UNIT -o cat` plus args: the text of the unit's journal. */
  journal(unit: string, ...args: string[]): Promise<string>;
  /** The journal's current cursor, for --after-cursor. */
  cursor(): Promise<string>;
  /** The PRIORITY of each `event` in the unit's JSON log lines, once a message containing `until` is there. */
  priorities(unit: string, until: string): Promise<Map<string | undefined, string>>;
  /** Polls an async read until accept() holds, every 100 ms (each read is a command in the container). */
  eventually<T>(read: () => Promise<T>, accept: (v: T) => boolean, ms?: number): Promise<T>;
  /** Powers the container off (SIGKILL after 20 s) and removes its cgroup; rejects if that fails. */
  shutdown(): Promise<void>;
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

/** The cached rootfs (built on first use, minutes). */
export async function rootfs(): Promise<string> {
  const r = await run('bash', [path.join(SCRIPTS, 'rootfs.sh')], 600_000);
  if (r.code !== 0) throw new Error(`rootfs.sh failed: ${r.stderr}`);
  return r.stdout.trim();
}

/**
 * Boots the rootfs with extra systemd-nspawn options (binds) and waits until its
 * systemd runs ("degraded" is fine: units unrelated to ours).
 */
export async function bootContainer(options: string[]): Promise<Container> {
  const root = await rootfs();
  const name = `nfh-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  let bootLog = '';
  const nspawn: ChildProcess = spawn(
    'bash',
    [path.join(SCRIPTS, 'nspawn.sh'), 'run', name, '-D', root, '--volatile=overlay', '--console=pipe', ...options],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const keep = (c: string) => {
    bootLog = (bootLog + c).slice(-20_000);
  };
  nspawn.stdout!.setEncoding('utf8').on('data', keep);
  nspawn.stderr!.setEncoding('utf8').on('data', keep);
  const exited = new Promise<void>((resolve) => nspawn.once('exit', () => resolve()));

  const shutdown = async () => {
    if (nspawn.exitCode === null && nspawn.signalCode === null) {
      nspawn.kill('SIGTERM'); // nspawn turns it into an orderly poweroff of the container
      const timer = setTimeout(() => nspawn.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    }
    const cleanup = await run('bash', [path.join(SCRIPTS, 'nspawn.sh'), 'cleanup', name]);
    if (cleanup.code !== 0) throw new Error(`nspawn.sh cleanup ${name}: ${cleanup.stderr}`);
  };

  let pid1 = 0;
  const inside = (...args: string[]) => run('nsenter', ['-t', String(pid1), '-a', ...args], 120_000);
  const eventually = <T>(read: () => Promise<T>, accept: (v: T) => boolean, ms = 10_000) =>
    waitUntil(read, accept, ms, 100);
  const container: Container = {
    name,
    inside,
    async must(...args) {
      const r = await inside(...args);
      if (r.code !== 0) throw new Error(`${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
      return r.stdout;
    },
    systemctl: (...args) => inside('systemctl', ...args),
    async show(unit, ...props) {
      const r = await inside('systemctl', 'show', unit, ...props.flatMap((p) => ['-p', p]));
      return Object.fromEntries(
        r.stdout
          .trim()
          .split('\n')
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      );
    },
    journal: async (unit, ...args) =>
      (await inside('journalctl', '-u', unit, '-o', 'cat', '--no-pager', ...args)).stdout,
    async cursor() {
      const r = await inside('journalctl', '-n', '0', '--show-cursor', '--no-pager');
      const cursor = /-- cursor: (.*)/.exec(r.stdout)?.[1];
      if (!cursor) throw new Error(`no journal cursor: ${r.stdout}${r.stderr}`);
      return cursor;
    },
    async priorities(unit, until) {
      const all = await eventually(
        // All of the unit's lines: the process name is "node" or, on newer Node.js, "node-MainThread".
        () => inside('journalctl', '-u', unit, '-o', 'json', '--no-pager'),
        (r) => r.stdout.includes(until),
      );
      return new Map(
        all.stdout
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { MESSAGE: string; PRIORITY: string })
          .filter((e) => e.MESSAGE.startsWith('{'))
          .map((e) => [(JSON.parse(e.MESSAGE) as { event?: string }).event, e.PRIORITY]),
      );
    },
    eventually,
    shutdown,
  };

  try {
    pid1 = await waitUntil(
      () => findPid1(nspawn.pid!) ?? 0,
      (p) => p > 0 || nspawn.exitCode !== null,
      30_000,
      50,
    );
    if (!pid1) throw new Error(`the container did not boot: ${bootLog}`);
    await eventually(
      async () => (await inside('systemctl', 'is-system-running')).stdout.trim(),
      (s) => s === 'running' || s === 'degraded',
      60_000,
    );
  } catch (err) {
    await shutdown().catch(() => undefined);
    throw err;
  }
  return container;
}

/**
 * The host side of a container test: a folder to bind at /srv/nfh (its cond/ stands in
 * for /proc/net/nf_condition, no xt_condition module here) and two SMTP greeters on
 * 127.0.0.1, which the container reaches through the shared network.
 */
export interface ServiceHost {
  readonly dir: string;
  readonly s1: SmtpServer;
  readonly s2: SmtpServer;
  /** The bind option for systemd-nspawn. */
  readonly bind: string;
  /** A condition file's content, undefined while it does not exist. */
  cond(key: string): string | undefined;
  /** A fast-checking config for these backends, writing /srv/nfh/cond. */
  config(backends: { name: string; port: number }[]): string;
  close(): Promise<void>;
}

export async function serviceHost(prefix: string): Promise<ServiceHost> {
  const tmp = tempDir(prefix);
  chmodSync(tmp.dir, 0o755); // the service user reaches config and condition folder through it
  mkdirSync(path.join(tmp.dir, 'cond'));
  // restartable: a stopped greeter's port stays held, so a test can start it again on it.
  const s1 = restartable(createSmtpServer());
  const s2 = restartable(createSmtpServer());
  await s1.start();
  await s2.start();
  return {
    dir: tmp.dir,
    s1,
    s2,
    bind: `--bind=${tmp.dir}:/srv/nfh`,
    cond(key) {
      try {
        return readFileSync(path.join(tmp.dir, 'cond', key), 'utf8');
      } catch {
        return undefined;
      }
    },
    config: (backends) =>
      smtpFarmYaml({
        // fall 1: a stopped backend is down in the first round; 1 s: a live one never times out on a busy machine.
        timing: 'interval: 500ms, fastInterval: 200ms, timeout: 1s, rise: 1, fall: 1',
        conditionDir: '/srv/nfh/cond',
        backends,
      }),
    async close() {
      await s1.stop();
      await s2.stop();
      tmp.cleanup();
    },
  };
}
