import { execFile } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { IPSET_LINE_PREFIX } from '../src/kernel/rules/iptables-ipset.js';
import { BIN, type DaemonProcess, type LogLine, startDaemon, waitUntil } from './support/daemon.js';
import { eachLine } from './support/lines.js';
import { cleanupNetns, createNetns, link, type Netns, tempFolder } from './support/netns.js';

// Drain, maintenance and the connection lifecycle on a real kernel: a client, a
// balancer holding the VIP (iptables + ipset rules from `nf-healthd rules`, the daemon
// in its namespace driving the sets) and two backends, each a TCP echo and UDP server.
// Connections are real, counted by the daemon from conntrack; `nf-healthd set` runs as
// a separate process against the daemon's control socket, as an operator would.

const BACKEND = fileURLToPath(new URL('./support/drain-backend.mjs', import.meta.url));
const CLIENT = fileURLToPath(new URL('./support/drain-client.mjs', import.meta.url));
const VIP = '10.202.9.1';
const TCP_PORT = 7000;
const UDP_PORT = 7001;
const CLIENT_SPORT = 40_000;
const TIMING = { interval: 500, fastInterval: 100, timeout: 300, rise: 2, fall: 2 };
/** Generous bounds for waits that events or polling decide: the machine is shared. */
const WAIT = 15_000;

afterEach(() => cleanupNetns());

interface Backend {
  accepted: string[];
  kill(): void;
}

interface Lab {
  client: Netns;
  balancer: Netns;
  backends: [Netns, Netns];
  dir: string;
  config: string;
  servers: Backend[];
}

function startBackend(ns: Netns, name: string): Promise<Backend> {
  const child = ns.spawn([process.execPath, BACKEND, name, String(TCP_PORT), String(UDP_PORT)]);
  const accepted: string[] = [];
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    eachLine(child.stdout!, (line) => {
      const o = JSON.parse(line) as { accepted?: string; listening?: string };
      if (o.accepted) accepted.push(o.accepted);
      if (o.listening) resolve({ accepted, kill: () => child.kill('SIGKILL') });
    });
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}): ${err}`)));
  });
}

async function buildLab(service: string): Promise<Lab> {
  const dir = tempFolder('nfh-drain-');
  // Readable by `nobody` down to the socket itself: only the socket's own mode may refuse.
  chmodSync(dir, 0o755);
  const client = createNetns('dclient');
  const balancer = createNetns('dlb');
  const b1 = createNetns('dbe1');
  const b2 = createNetns('dbe2');
  await link(balancer, 'to-client', '10.202.1.1/24', client, 'eth0', '10.202.1.2/24');
  await link(balancer, 'to-be1', '10.202.2.1/24', b1, 'eth0', '10.202.2.2/24');
  await link(balancer, 'to-be2', '10.202.3.1/24', b2, 'eth0', '10.202.3.2/24');
  await balancer.run(['ip', 'addr', 'add', `${VIP}/32`, 'dev', 'lo']);
  await balancer.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  await client.run(['ip', 'route', 'add', 'default', 'via', '10.202.1.1']);
  await b1.run(['ip', 'route', 'add', 'default', 'via', '10.202.2.1']);
  await b2.run(['ip', 'route', 'add', 'default', 'via', '10.202.3.1']);
  const config = path.join(dir, 'config.yaml');
  const ms = (n: number) => `${n}ms`;
  writeFileSync(
    config,
    `defaults: { interval: ${ms(TIMING.interval)}, fastInterval: ${ms(TIMING.fastInterval)}, timeout: ${ms(TIMING.timeout)}, rise: ${TIMING.rise}, fall: ${TIMING.fall} }
log: { level: info, format: json }
stateFile: ${path.join(dir, 'state.json')}
writer: { type: ipset }
services:
${service}`,
  );
  chmodSync(config, 0o644);
  const servers = await Promise.all([startBackend(b1, 'b1'), startBackend(b2, 'b2')]);
  const rules = await balancer.run([process.execPath, BIN, 'rules', '-c', config, '--format', 'iptables-ipset']);
  const sets = rules
    .split('\n')
    .filter((l) => l.startsWith(IPSET_LINE_PREFIX))
    .map((l) => l.slice(IPSET_LINE_PREFIX.length));
  await balancer.run(['ipset', 'restore', '-exist'], `${sets.join('\n')}\n`);
  await balancer.run(['iptables-restore'], rules);
  return { client, balancer, backends: [b1, b2], dir, config, servers };
}

const TCP_SERVICE = `  - name: svc
    vip: ${VIP}
    port: ${TCP_PORT}
    backends:
      - { name: b1, address: 10.202.2.2 }
      - { name: b2, address: 10.202.3.2 }
`;

function run(argv: string[], user?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const [program, ...args] = user ? ['runuser', '-u', user, '--', ...argv] : argv;
  return new Promise((resolve) => {
    execFile(program!, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const nfh = (lab: Lab, args: string[], user?: string) => run([process.execPath, BIN, ...args, '-c', lab.config], user);

interface StatusBackend {
  id: string;
  state: string;
  connections?: number;
  admin?: { state: string; drainedAt?: string };
}

async function backendStatus(lab: Lab, id: string): Promise<StatusBackend | undefined> {
  const r = await nfh(lab, ['status', '--json']);
  const parsed = JSON.parse(r.stdout) as { backends?: StatusBackend[] };
  return parsed.backends?.find((b) => b.id === id);
}

const connectionsOf = (lab: Lab, id: string, want: number) =>
  waitUntil(
    () => backendStatus(lab, id),
    (b) => b?.connections === want,
    WAIT,
    100,
  );

/** The client driver in the client namespace: one JSON command, one JSON answer. */
function clientDriver(lab: Lab, port: number) {
  const child = lab.client.spawn([process.execPath, CLIENT, VIP, String(port), String(CLIENT_SPORT)]);
  const answers: unknown[] = [];
  const waiting: ((a: unknown) => void)[] = [];
  eachLine(child.stdout!, (line) => {
    const a = JSON.parse(line) as unknown;
    const w = waiting.shift();
    if (w) w(a);
    else answers.push(a);
  });
  return <T>(command: Record<string, unknown>): Promise<T> => {
    child.stdin!.write(`${JSON.stringify(command)}\n`);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`client: no answer to ${JSON.stringify(command)}`)), 60_000);
      waiting.push((a) => {
        clearTimeout(timer);
        resolve(a as T);
      });
    });
  };
}

type Ask = ReturnType<typeof clientDriver>;

/** Opens connections until `count` of them landed on b1; the others are closed. Returns the b1 ids. */
async function pinToB1(ask: Ask, count: number): Promise<number[]> {
  const ids: number[] = [];
  for (let round = 0; ids.length < count; round++) {
    expect(round).toBeLessThan(10);
    const { first, banners } = await ask<{ first: number; banners: string[] }>({ op: 'open', n: 2 * count });
    const others: number[] = [];
    banners.forEach((b, i) => (b === 'b1' && ids.length < count ? ids.push(first + i) : others.push(first + i)));
    await ask({ op: 'close', ids: others });
  }
  return ids;
}

async function daemonIn(lab: Lab): Promise<DaemonProcess> {
  const d = startDaemon(['run', '-c', lab.config], {}, lab.balancer.name);
  await d.waitForLine((l) => l.event === 'control_listening', WAIT);
  return d;
}

async function stopDaemon(d: DaemonProcess): Promise<void> {
  d.kill('SIGTERM');
  expect((await d.exited).code).toBe(0);
}

const eventOf =
  (event: string, backend = 'b1') =>
  (l: LogLine) =>
    l.event === event && l.backend === backend;

describe('drain on a real kernel (namespaces)', () => {
  it('drain: no new connections, the open ones go on and are counted down to `drained`; it survives a restart', async () => {
    const lab = await buildLab(TCP_SERVICE);
    let daemon = await daemonIn(lab);
    const ask = clientDriver(lab, TCP_PORT);
    const pinned = await pinToB1(ask, 5);
    await connectionsOf(lab, 'svc/b1', 5);

    const set = await nfh(lab, ['set', 'svc/b1', 'drain']);
    expect(set).toMatchObject({ code: 0, stderr: '' });
    expect(set.stdout).toMatch(/^svc\/b1: drain \(was ready\), applied to the kernel; \d+ open connections\n$/);
    expect(await ask({ op: 'burst', n: 100 })).toEqual({ answers: { b2: 100 } });
    expect(await ask({ op: 'echo', ids: pinned })).toEqual({ results: Array(5).fill('ok') });
    const status = await nfh(lab, ['status']);
    expect(status.stdout).toMatch(/svc\/b1 +up, draining +5 /);

    await ask({ op: 'close', ids: pinned.slice(0, 2) });
    await connectionsOf(lab, 'svc/b1', 3);

    // A restart mid-drain: b1 stays out of the split.
    await stopDaemon(daemon);
    daemon = await daemonIn(lab);
    expect((await backendStatus(lab, 'svc/b1'))?.admin?.state).toBe('drain');
    expect(await ask({ op: 'burst', n: 20 })).toEqual({ answers: { b2: 20 } });
    expect(await ask({ op: 'echo', ids: pinned.slice(2) })).toEqual({ results: ['ok', 'ok', 'ok'] });
    await connectionsOf(lab, 'svc/b1', 3);

    await ask({ op: 'close', ids: pinned.slice(2) });
    const drained = await daemon.waitForLine(eventOf('drained'), WAIT);
    expect(drained.msg).toMatch(/^backend b1 is drained: no open connections left/);
    expect((await backendStatus(lab, 'svc/b1'))?.connections).toBe(0);
    expect((await nfh(lab, ['status'])).stdout).toMatch(/svc\/b1 +up, drained +0 /);
    await stopDaemon(daemon);
  }, 120_000);

  it('drain --deadline: flows still open at the deadline are deleted, their clients get a reset', async () => {
    const lab = await buildLab(TCP_SERVICE);
    const daemon = await daemonIn(lab);
    const ask = clientDriver(lab, TCP_PORT);
    const pinned = await pinToB1(ask, 3);
    await connectionsOf(lab, 'svc/b1', 3);
    const setAt = performance.now();
    const set = await nfh(lab, ['set', 'svc/b1', 'drain', '--deadline', '3s']);
    expect(set.code).toBe(0);
    expect(set.stdout).toMatch(/flows left at \S+ are deleted\n$/);
    expect(await ask({ op: 'echo', ids: pinned })).toEqual({ results: ['ok', 'ok', 'ok'] });
    const line = await daemon.waitForLine(eventOf('drain_deadline'), WAIT);
    // Not before the deadline (the upper side is the machine's business: WAIT).
    expect(performance.now() - setAt).toBeGreaterThanOrEqual(2900);
    expect(line.deleted).toBe(3);
    expect(line.msg).toBe(
      'backend b1: drain deadline reached, 3 flows deleted (their clients get a reset and reconnect elsewhere)',
    );
    expect(await ask({ op: 'echo', ids: pinned })).toEqual({ results: Array(3).fill('ECONNRESET') });
    await connectionsOf(lab, 'svc/b1', 0);
    await stopDaemon(daemon);
  }, 120_000);

  it('maint: checks of b1 stop and it shows as maintenance; ready resumes them and b1 is up after rise', async () => {
    const lab = await buildLab(TCP_SERVICE);
    const daemon = await daemonIn(lab);
    const [b1, b2] = lab.servers as [Backend, Backend];
    const checks = (b: Backend) => b.accepted.filter((a) => a.endsWith('.1')).length; // from the balancer
    const set = await nfh(lab, ['set', 'svc/b1', 'maint']);
    expect(set.code).toBe(0);
    // A check of b1 already under way when the command came may still land: count from b2's next check on.
    let since = checks(b2);
    await waitUntil(
      () => checks(b2),
      (n) => n > since,
      WAIT,
    );
    const b1Before = checks(b1);
    since = checks(b2);
    await waitUntil(
      () => checks(b2),
      (n) => n >= since + 4,
      WAIT,
    ); // four intervals of b2 checks
    expect(checks(b1)).toBe(b1Before);
    const status = await nfh(lab, ['status']);
    expect(status.stdout).toMatch(/svc\/b1 +maintenance /);
    expect(status.code).toBe(0); // maintenance is not down
    expect(await clientDriver(lab, TCP_PORT)({ op: 'burst', n: 10 })).toEqual({ answers: { b2: 10 } });

    const mark = daemon.lines.length;
    expect((await nfh(lab, ['set', 'svc/b1', 'ready'])).stdout).toMatch(/^svc\/b1: ready \(was maint\)/);
    const up = await daemon.waitForLine(
      (l) => l.event === 'transition' && l.backend === 'b1' && l.state === 'up',
      WAIT,
      mark,
    );
    expect(up.reason).toMatch(/^2 consecutive successes/);
    expect(checks(b1)).toBeGreaterThanOrEqual(b1Before + TIMING.rise);
    const ask = clientDriver(lab, TCP_PORT);
    const after = await ask<{ answers: Record<string, number> }>({ op: 'burst', n: 20 });
    expect(after.answers.b1).toBeGreaterThan(0);
    await stopDaemon(daemon);
  }, 120_000);
});
