import { type ChildProcess, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { balancedMailYaml } from './support/config.js';
import { BIN, type DaemonProcess, startDaemon } from './support/daemon.js';
import { eachLine, waitableList } from './support/lines.js';
import { cleanupNetns, createNetns, type Netns, tempFolder } from './support/netns.js';

// Two balancers on a real kernel: lbA and lbB each run nf-healthd (same config, nft
// writer) and the real keepalived from Debian with config/keepalived-pair.conf (only its
// definitions of addresses, interfaces and paths replaced), and in one case the real
// conntrackd with config/conntrackd-pair.conf. A client and two SMTP backends sit on
// bridges in a switch namespace; the balancers share a dedicated sync link. Everything
// lives in namespaces made here; every process is killed by pid at the end.

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BACKEND = path.join(ROOT, 'test/support/smtp-backend.mjs');
const CLIENT = path.join(ROOT, 'test/support/smtp-client.mjs');
const HOLD = path.join(ROOT, 'test/support/smtp-hold.mjs');

const NET = '10.210';
const VIP = `${NET}.1.10`;
const BACK_GW = `${NET}.2.1`;
const FRONT = { A: `${NET}.1.11`, B: `${NET}.1.12` };
const BACK = { A: `${NET}.2.11`, B: `${NET}.2.12` };
const SYNC = { A: `${NET}.3.1`, B: `${NET}.3.2` };
const BACKENDS = [`${NET}.2.21`, `${NET}.2.22`];
/** advert_int in the example config, seconds. */
const ADVERT_INT = 0.1;
/** VRRPv3 master-down interval of the backup (priority 100): 3 adverts plus the skew time. */
const MASTER_DOWN_MS = (3 * ADVERT_INT + ((256 - 100) * ADVERT_INT) / 256) * 1000;
/** Wide: the machine is shared, and keepalived's timers run in a loaded namespace. */
const MOVE_BOUND_MS = MASTER_DOWN_MS + 2500;
const TIMING = { interval: 500, fastInterval: 100, timeout: 300, rise: 2, fall: 2 };
/** The vrrp_script (pgrep) runs every second and fails once: FAULT within a second or two; wide margin. */
const DEATH_BOUND_MS = 2 * 1000 + 3000;

type Node = 'A' | 'B';

/** lbA's packets to the backends dropped: lbA alone loses them. */
const CUT_BACKENDS = `table inet cut {
  chain out { type filter hook output priority 0; ip daddr { ${BACKENDS.join(', ')} } drop; }
}
`;

interface Balancer {
  node: Node;
  ns: Netns;
  dir: string;
  config: string;
  trackFile: string;
  daemon?: DaemonProcess;
  keepalived?: ChildProcess & { log: ReturnType<typeof waitableList<string>> };
  conntrackd?: ChildProcess;
}

interface Lab {
  client: Netns;
  lbs: Record<Node, Balancer>;
  backends: Netns[];
  dir: string;
}

/** Every nf-healthd started here: killed by pid after each test, also when the lab failed half-built. */
const daemons = new Set<DaemonProcess>();

afterEach(async () => {
  for (const d of daemons) {
    if (d.child.exitCode === null && d.child.signalCode === null) {
      d.kill('SIGKILL');
      await d.exited;
    }
  }
  daemons.clear();
  cleanupNetns();
});

/** A bridge port: a veth from the switch's bridge into `member`, named `ifName` there. */
async function plug(
  sw: Netns,
  bridge: string,
  member: Netns,
  ifName: string,
  cidr: string,
  tag: string,
): Promise<void> {
  await sw.run(['ip', 'link', 'add', tag, 'type', 'veth', 'peer', 'name', ifName, 'netns', member.name]);
  await sw.run(['ip', 'link', 'set', tag, 'master', bridge, 'up']);
  await member.run(['ip', 'addr', 'add', cidr, 'dev', ifName]);
  await member.run(['ip', 'link', 'set', ifName, 'up']);
}

function nfConfig(dir: string, trackFile: string): string {
  return balancedMailYaml({
    timing: TIMING,
    stateFile: path.join(dir, 'state.json'),
    writer: '{ type: nft }',
    extra: `vrrp: { trackFile: ${trackFile} }`,
    vip: VIP,
    addresses: BACKENDS,
  });
}

/** config/keepalived-pair.conf with its `$NAME=` definitions set for this lab. */
function keepalivedConfig(b: Balancer): string {
  const defs: Record<string, string> = {
    FRONT_IF: 'front',
    BACK_IF: 'back',
    VIP: `${VIP}/24`,
    BACK_GW: `${BACK_GW}/24`,
    ROUTER_ID: '51',
    TRACK_FILE: b.trackFile,
  };
  let text = readFileSync(path.join(ROOT, 'config/keepalived-pair.conf'), 'utf8');
  for (const [name, value] of Object.entries(defs)) {
    const line = new RegExp(`^\\$${name}=.*$`, 'm');
    expect(text).toMatch(line);
    text = text.replace(line, `$${name}=${value}`);
  }
  // The daemon's command line in the vrrp_script (keepalived expands no $NAME inside quotes).
  expect(text).toContain('-c./etc/nf-healthd/config.yaml"');
  return text.replace('-c./etc/nf-healthd/config.yaml"', `-c.${b.config}"`);
}

/** config/conntrackd-pair.conf with this lab's sync addresses and paths. */
function conntrackdConfig(b: Balancer): string {
  const [self, peer] = b.node === 'A' ? [SYNC.A, SYNC.B] : [SYNC.B, SYNC.A];
  const example = readFileSync(path.join(ROOT, 'config/conntrackd-pair.conf'), 'utf8');
  const replaced = example
    .replace('IPv4_address 10.255.0.1\n', `IPv4_address ${self}\n`)
    .replace('IPv4_Destination_Address 10.255.0.2', `IPv4_Destination_Address ${peer}`)
    .replace('IPv4_address 10.255.0.1\n', `IPv4_address ${SYNC.A}\n`)
    .replace('IPv4_address 10.255.0.2\n', `IPv4_address ${SYNC.B}\n`)
    .replace('/var/log/conntrackd.log', path.join(b.dir, 'conntrackd.log'))
    .replace('/var/lock/conntrackd.lock', path.join(b.dir, 'conntrackd.lock'))
    .replace('/run/conntrackd.ctl', path.join(b.dir, 'conntrackd.ctl'));
  expect(replaced).not.toContain('10.255.');
  return replaced;
}

async function buildLab(options: { conntrackd: boolean }): Promise<Lab> {
  const dir = tempFolder('nfh-pair-');
  const sw = createNetns('sw');
  const client = createNetns('cl');
  const backends = [createNetns('be1'), createNetns('be2')];
  const lbs = {} as Record<Node, Balancer>;
  for (const node of ['A', 'B'] as const) {
    const lbDir = path.join(dir, node);
    execFileSync('mkdir', ['-p', lbDir]);
    lbs[node] = {
      node,
      ns: createNetns(`lb${node}`),
      dir: lbDir,
      config: path.join(lbDir, 'config.yaml'),
      trackFile: path.join(lbDir, 'vrrp-weight'),
    };
  }
  for (const bridge of ['front', 'back']) {
    await sw.run(['ip', 'link', 'add', bridge, 'type', 'bridge']);
    await sw.run(['ip', 'link', 'set', bridge, 'up']);
  }
  await plug(sw, 'front', client, 'eth0', `${NET}.1.100/24`, 'p-client');
  for (const node of ['A', 'B'] as const) {
    const { ns } = lbs[node];
    await plug(sw, 'front', ns, 'front', `${FRONT[node]}/24`, `p-front${node}`);
    await plug(sw, 'back', ns, 'back', `${BACK[node]}/24`, `p-back${node}`);
    await ns.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  }
  // The dedicated sync link between the balancers.
  await lbs.A.ns.run(['ip', 'link', 'add', 'sync', 'type', 'veth', 'peer', 'name', 'sync', 'netns', lbs.B.ns.name]);
  for (const node of ['A', 'B'] as const) {
    await lbs[node].ns.run(['ip', 'addr', 'add', `${SYNC[node]}/24`, 'dev', 'sync']);
    await lbs[node].ns.run(['ip', 'link', 'set', 'sync', 'up']);
  }
  for (const [i, be] of backends.entries()) {
    await plug(sw, 'back', be!, 'eth0', `${BACKENDS[i]}/24`, `p-be${i + 1}`);
    // Replies go to the floating gateway, held by whichever balancer is master.
    await be!.run(['ip', 'route', 'add', 'default', 'via', BACK_GW]);
    await startBackend(be!, i);
  }
  const lab: Lab = { client, lbs, backends, dir };
  for (const node of ['A', 'B'] as const) {
    const b = lbs[node];
    writeFileSync(b.config, nfConfig(b.dir, b.trackFile));
    const rules = await b.ns.run([process.execPath, BIN, 'rules', '-c', b.config]);
    await b.ns.run(['nft', '-f', '-'], rules);
    if (options.conntrackd) startConntrackd(b);
    startNfHealthd(b);
  }
  // The first round of checks on a busy machine: a wide bound.
  await Promise.all(['A', 'B'].map((n) => waitTrackValue(lbs[n as Node], '0', 60_000)));
  startKeepalived(lbs.A);
  await waitState(lbs.A, 'MASTER');
  startKeepalived(lbs.B);
  await waitState(lbs.B, 'BACKUP');
  return lab;
}

function startBackend(ns: Netns, i: number): Promise<void> {
  const child = ns.spawn([process.execPath, BACKEND, '0.0.0.0', '25', `backend${i + 1} ESMTP`]);
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`backend ${i + 1} exited (${code}): ${err}`)));
  });
}

function startNfHealthd(b: Balancer): void {
  b.daemon = startDaemon(['run', '-c', b.config], {}, b.ns.name);
  daemons.add(b.daemon);
}

function startKeepalived(b: Balancer): void {
  const conf = path.join(b.dir, 'keepalived.conf');
  writeFileSync(conf, keepalivedConfig(b));
  const child = b.ns.spawn([
    'keepalived',
    ...['--dont-fork', '--log-console', '--log-detail', '--vrrp', '--dont-respawn', '--no-syslog'],
    ...['-f', conf, '-i', `lb${b.node}`],
    ...['-p', path.join(b.dir, 'keepalived.pid'), '-r', path.join(b.dir, 'vrrp.pid')],
  ]);
  const log = waitableList<string>((got) => `keepalived lb${b.node} said: ${got.slice(-8).join(' | ')}`);
  for (const stream of [child.stdout!, child.stderr!])
    eachLine(stream, (line) => {
      log.items.push(line);
      log.changed();
    });
  b.keepalived = Object.assign(child, { log });
}

function startConntrackd(b: Balancer): void {
  const conf = path.join(b.dir, 'conntrackd.conf');
  writeFileSync(conf, conntrackdConfig(b));
  b.conntrackd = b.ns.spawn(['conntrackd', '-C', conf]);
}

/** keepalived's own word that the instance entered `state`; resolves with when it said so. */
async function waitState(b: Balancer, state: 'MASTER' | 'BACKUP' | 'FAULT', from = 0, ms = 15_000): Promise<number> {
  await b.keepalived!.log.waitFor((l) => l.includes(`(lb) Entering ${state} STATE`), ms, from);
  return performance.now();
}

async function holdsVip(b: Balancer): Promise<boolean> {
  return (await b.ns.run(['ip', '-o', '-4', 'addr', 'show', 'dev', 'front'])).includes(` ${VIP}/24 `);
}

/** Bounded polling of the track file until it holds `value`. */
async function waitTrackValue(b: Balancer, value: string, ms = 15_000): Promise<void> {
  const since = performance.now();
  for (;;) {
    let text = '';
    try {
      text = readFileSync(b.trackFile, 'utf8').trim();
    } catch {
      // not written yet
    }
    if (text === value) return;
    if (performance.now() - since > ms) throw new Error(`track file of lb${b.node} holds "${text}", not ${value}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function connect(lab: Lab, count: number): Promise<{ answers: Record<string, number>; failures: string[] }> {
  return JSON.parse(await lab.client.run([process.execPath, CLIENT, VIP, '25', String(count), '2000'])) as {
    answers: Record<string, number>;
    failures: string[];
  };
}

interface Held {
  banner: string;
  /** Sends EHLO and resolves with the reply, or the error that ended the connection. */
  ehlo(ms: number): Promise<{ reply?: string; error?: string }>;
}

/** One long-lived client connection, greeted by its backend. */
async function hold(lab: Lab): Promise<Held> {
  const child = lab.client.spawn([process.execPath, HOLD, VIP, '25']);
  const events = waitableList<{ banner?: string; reply?: string; error?: string }>((got) => JSON.stringify(got));
  eachLine(child.stdout!, (line) => {
    events.items.push(JSON.parse(line));
    events.changed();
  });
  const first = await events.waitFor(() => true, 5000);
  if (!first.banner) throw new Error(`a held connection was not greeted: ${JSON.stringify(first)}`);
  return {
    banner: first.banner,
    async ehlo(ms) {
      const from = events.items.length;
      child.stdin!.write('\n');
      return events.waitFor(() => true, ms, from);
    },
  };
}

/** A crash of lbA: its links go down first (nothing more leaves it), then its programs die by SIGKILL. */
async function crash(b: Balancer): Promise<void> {
  for (const dev of ['front', 'back', 'sync']) await b.ns.run(['ip', 'link', 'set', dev, 'down']);
  for (const p of [b.keepalived, b.conntrackd]) p?.kill('SIGKILL');
  b.daemon?.kill('SIGKILL');
}

function stopAll(lab: Lab): Promise<unknown> {
  return Promise.all(
    Object.values(lab.lbs).map(async (b) => {
      b.keepalived?.kill('SIGTERM');
      b.conntrackd?.kill('SIGTERM');
      if (b.daemon && b.daemon.child.exitCode === null && b.daemon.child.signalCode === null) {
        b.daemon.kill('SIGTERM');
        await b.daemon.exited;
      }
    }),
  );
}

/** The crash scenario; returns the figures it measured. */
async function crashScenario(conntrackd: boolean) {
  const lab = await buildLab({ conntrackd });
  try {
    expect(await holdsVip(lab.lbs.A)).toBe(true);
    expect(await holdsVip(lab.lbs.B)).toBe(false);
    const held: Held[] = [];
    for (let i = 0; i < 5; i++) held.push(await hold(lab));
    const before = await connect(lab, 10);
    expect(before.failures).toEqual([]);
    for (const h of held) expect(await h.ehlo(3000)).toEqual({ reply: `250 ${h.banner}` });
    if (conntrackd) {
      // lbB's kernel already holds the 5 connections, NAT and mark included, before any move.
      const listed = await lab.lbs.B.ns.run(['conntrack', '-L', '-p', 'tcp', '--orig-dst', VIP]);
      expect(listed.split('\n').filter((l) => l.includes('ESTABLISHED')).length).toBeGreaterThanOrEqual(5);
    }

    const markB = lab.lbs.B.keepalived!.log.items.length;
    const crashedAt = performance.now();
    await crash(lab.lbs.A);
    const moveMs = (await waitState(lab.lbs.B, 'MASTER', markB)) - crashedAt;
    expect(await holdsVip(lab.lbs.B)).toBe(true);
    expect(moveMs).toBeLessThanOrEqual(MOVE_BOUND_MS);

    // Backend 2's connections first: without state sync lbB's round robin starts at backend 1.
    const order = [...held].sort((x, y) => y.banner.localeCompare(x.banner));
    const outcomes: { banner: string; reply?: string; error?: string }[] = [];
    for (const h of order) outcomes.push({ banner: h.banner, ...(await h.ehlo(15_000)) });
    const kept = outcomes.filter((o) => o.reply === `250 ${o.banner}`).length;

    const after = await connect(lab, 10);
    expect(after.failures).toEqual([]);
    expect(Object.values(after.answers).reduce((a, n) => a + n, 0)).toBe(10);
    return { moveMs, kept, outcomes, banners: held.map((h) => h.banner) };
  } finally {
    await stopAll(lab);
  }
}

describe('a keepalived pair of nf-healthd balancers (namespaces, real keepalived and conntrackd)', () => {
  it('crash of the master with conntrackd: the VIP moves, the 5 established connections keep echoing', async () => {
    const r = await crashScenario(true);
    console.log(
      `pair crash with conntrackd: VIP on lbB ${Math.round(r.moveMs)}ms after the crash (master-down ${Math.round(MASTER_DOWN_MS)}ms, bound ${Math.round(MOVE_BOUND_MS)}ms); ${r.kept}/5 established connections kept`,
    );
    expect(r.kept).toBe(5);
  }, 120_000);

  it('crash of the master without conntrackd, round robin: new connections work, established ones are reset', async () => {
    const r = await crashScenario(false);
    console.log(
      `pair crash without conntrackd (round robin): VIP on lbB ${Math.round(r.moveMs)}ms after the crash; ${r.kept}/5 established connections kept; ${JSON.stringify(r.outcomes)}`,
    );
    // Both backends held connections, and the first one lbB saw went to the other backend.
    expect(new Set(r.banners).size).toBe(2);
    expect(r.kept).toBeLessThan(5);
    expect(r.outcomes.filter((o) => o.error).length).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it('the track file moves the VIP: backends unreachable from lbA only, nf-healthd stopped, nf-healthd killed', async () => {
    const lab = await buildLab({ conntrackd: false });
    const { A, B } = lab.lbs;
    try {
      // lbA cut from both backends by a firewall rule (its links stay up, so only the
      // track file can tell keepalived), while lbB still reaches them.
      let mark = B.keepalived!.log.items.length;
      let since = performance.now();
      await A.ns.run(['nft', '-f', '-'], CUT_BACKENDS);
      await waitTrackValue(A, '-254');
      const trackMs = (await waitState(B, 'MASTER', mark)) - since;
      expect(readFileSync(B.trackFile, 'utf8').trim()).toBe('0');
      await waitState(A, 'FAULT');
      expect(A.keepalived!.log.items.some((l) => l.includes('tracked file nf_healthd_capacity'))).toBe(true);
      expect(await holdsVip(B)).toBe(true);
      expect(await holdsVip(A)).toBe(false);
      expect((await connect(lab, 6)).failures).toEqual([]);

      // Reachable again: lbA sees its backends, preempts (priority 150 > 100).
      mark = A.keepalived!.log.items.length;
      await A.ns.run(['nft', 'delete', 'table', 'inet', 'cut']);
      await waitTrackValue(A, '0');
      await waitState(A, 'MASTER', mark);

      // nf-healthd stopped on the master: its last word is FAULT.
      mark = B.keepalived!.log.items.length;
      since = performance.now();
      A.daemon!.kill('SIGTERM');
      expect((await A.daemon!.exited).code).toBe(0);
      const stopMs = (await waitState(B, 'MASTER', mark)) - since;
      expect(readFileSync(A.trackFile, 'utf8').trim()).toBe('-254');
      expect(A.daemon!.lines.some((l) => l.event === 'vrrp_track_value' && l.value === -254)).toBe(true);

      // Started again: lbA takes the VIP back.
      mark = A.keepalived!.log.items.length;
      startNfHealthd(A);
      await waitTrackValue(A, '0');
      await waitState(A, 'MASTER', mark);

      // nf-healthd killed (no last word): the track file still says 0, but keepalived's
      // vrrp_script (pgrep on the daemon's command line) fails and the instance is FAULT.
      mark = B.keepalived!.log.items.length;
      since = performance.now();
      A.daemon!.kill('SIGKILL');
      await A.daemon!.exited;
      const killMs = (await waitState(B, 'MASTER', mark, DEATH_BOUND_MS + 5000)) - since;
      expect(readFileSync(A.trackFile, 'utf8').trim()).toBe('0');
      expect(killMs).toBeLessThanOrEqual(DEATH_BOUND_MS);
      expect(await holdsVip(B)).toBe(true);
      expect((await connect(lab, 6)).failures).toEqual([]);
      console.log(
        `pair track file: backends cut from lbA -> VIP on lbB in ${Math.round(trackMs)}ms; nf-healthd stopped -> ${Math.round(stopMs)}ms; nf-healthd killed -> ${Math.round(killMs)}ms (bound ${DEATH_BOUND_MS}ms)`,
      );
    } catch (err) {
      console.log(`lbA keepalived: ${A.keepalived!.log.items.slice(-15).join('\n')}`);
      console.log(
        `lbA daemon: ${A.daemon!.lines.slice(-8)
          .map((l) => l.msg)
          .join('\n')}`,
      );
      throw err;
    } finally {
      await stopAll(lab);
    }
  }, 180_000);
});
