import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { waitUntil } from './daemon.js';
import { type Result, run } from './exec.js';

/*
 * A private Docker engine for one test file: Debian's dockerd (docker.io) with its own
 * data root, exec root, pidfile, socket and config in a temp folder, no bridge and no
 * iptables rules (containers use --network host, none or container:), so the host's
 * Docker, if any, and its firewall are never touched. The client is Debian's
 * /usr/bin/docker: another `docker` earlier on the PATH may lack BuildKit support.
 */

const DOCKER = '/usr/bin/docker';

export interface Dockerd {
  readonly dir: string;
  /** /usr/bin/docker against this engine, with BuildKit. */
  docker(args: string[], timeout?: number): Promise<Result>;
  /** Like docker(), but rejects unless it exits 0; resolves with stdout. */
  must(args: string[], timeout?: number): Promise<string>;
  /** Stops the engine, unmounts what it left under its folder, removes the folder. */
  stop(): Promise<void>;
}

/** Mount points under `dir`, deepest first (from /proc/self/mountinfo, field 5). */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .map((p) => p.replace(/\\040/g, ' '))
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

export async function startDockerd(): Promise<Dockerd> {
  const dir = mkdtempSync(path.join(tmpdir(), 'nfh-dockerd-'));
  const socket = path.join(dir, 'docker.sock');
  writeFileSync(path.join(dir, 'daemon.json'), '{}\n');
  let log = '';
  const daemon: ChildProcess = spawn(
    'dockerd',
    [
      `--config-file=${path.join(dir, 'daemon.json')}`,
      `--data-root=${path.join(dir, 'data')}`,
      `--exec-root=${path.join(dir, 'exec')}`,
      `--pidfile=${path.join(dir, 'docker.pid')}`,
      `--host=unix://${socket}`,
      '--bridge=none',
      '--iptables=false',
      '--ip6tables=false',
      '--ip-forward=false',
      '--ip-masq=false',
      '--userland-proxy=false',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const keep = (c: string) => {
    log = (log + c).slice(-20_000);
  };
  daemon.stdout!.setEncoding('utf8').on('data', keep);
  daemon.stderr!.setEncoding('utf8').on('data', keep);
  const exited = new Promise<void>((resolve) => daemon.once('exit', () => resolve()));
  const env = { ...process.env, DOCKER_HOST: `unix://${socket}`, DOCKER_BUILDKIT: '1', DOCKER_CONFIG: dir };
  const docker = (args: string[], timeout = 120_000) => run(DOCKER, args, timeout, env);

  const stop = async () => {
    if (daemon.exitCode === null && daemon.signalCode === null) {
      daemon.kill('SIGTERM');
      const timer = setTimeout(() => daemon.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    }
    // dockerd leaves its nsfs mount (exec root/netns) and maybe overlays behind.
    for (const mount of mountsUnder(dir)) {
      const r = await run('umount', [mount]);
      if (r.code !== 0) await run('umount', ['-l', mount]);
    }
    const left = mountsUnder(dir);
    if (left.length > 0) throw new Error(`still mounted under ${dir}: ${left.join(', ')}`);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await waitUntil(
      async () =>
        daemon.exitCode === null ? (await docker(['version', '--format', '{{.Server.Version}}'], 10_000)).code : -1,
      (code) => code === 0 || code === -1,
      90_000,
      250,
    );
    if (daemon.exitCode !== null) throw new Error(`dockerd exited (${daemon.exitCode}): ${log}`);
  } catch (err) {
    await stop().catch(() => undefined);
    throw new Error(`dockerd did not come up: ${String(err)}\n${log}`);
  }
  return {
    dir,
    docker,
    async must(args, timeout) {
      const r = await docker(args, timeout);
      if (r.code !== 0) throw new Error(`docker ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
      return r.stdout;
    },
    stop,
  };
}
