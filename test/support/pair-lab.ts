import { type ChildProcess, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { balancedMailYaml, type Timing } from './config.js';
import { BIN, type DaemonProcess, startDaemon, waitUntil } from './daemon.js';
import { eachLine, waitableList } from './lines.js';
import { cleanupNetns, createNetns, type Netns, startServer, tempFolder } from './netns.js';

// Two balancers on a real kernel (test/pair.test.ts, test/pair-maglev.test.ts): lbA and
// lbB each run nf-healthd (same config, nft writer). A client and two SMTP backends sit
// on bridges in a switch namespace; the balancers share a dedicated sync link.
// - mode 'vrrp': the real keepalived from Debian with config/keepalived-pair.conf (only
//   its definitions of addresses, interfaces and paths replaced) moves the VIP, and
//   optionally the real conntrackd with config/conntrackd-pair.conf syncs connections.
// - mode 'ecmp': both balancers hold the VIP on lo, the client reaches it over a
//   multipath route through both (L4 hash), the backends send replies back the way each
//   connection came with config/ecmp-backend.nft. No keepalived.
// Everything lives in namespaces made here; every process is killed by pid at the end.

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BACKEND = path.join(ROOT, 'test/support/smtp-backend.mjs');
const CLIENT = path.join(ROOT, 'test/support/smtp-client.mjs');
const HOLD = path.join(ROOT, 'test/support/smtp-hold.mjs');

const NET = '10.210';
/** The VIP of mode 'vrrp', on the front LAN, moved by keepalived. */
const VRRP_VIP = `${NET}.1.10`;
/** The VIP of mode 'ecmp', off every LAN: the client routes it through both balancers. */
const ECMP_VIP = `${NET}.9.10`;
const BACK_GW = `${NET}.2.1`;
export const FRONT = { A: `${NET}.1.11`, B: `${NET}.1.12` };
const BACK = { A: `${NET}.2.11`, B: `${NET}.2.12` };
const SYNC = { A: `${NET}.3.1`, B: `${NET}.3.2` };
export const BACKENDS = [`${NET}.2.21`, `${NET}.2.22`];
/** advert_int in the example config, seconds. */
const ADVERT_INT = 0.1;
/** VRRPv3 master-down interval of the backup (priority 100): 3 adverts plus the skew time. */
export const MASTER_DOWN_MS = (3 * ADVERT_INT + ((256 - 100) * ADVERT_INT) / 256) * 1000;
/** Wide: the machine is shared, and keepalived's timers run in a loaded namespace (3.9 s seen at load 11). */
export const MOVE_BOUND_MS = MASTER_DOWN_MS + 5000;
/** Fast checks: the track file tests measure how soon nf-healthd moves the VIP. */
const TIMING = { interval: 500, fastInterval: 100, timeout: 300, rise: 2, fall: 2 };
/**
 * Lenient checks, for tests that time nothing of nf-healthd's: on a loaded machine a
 * 300 ms timeout can fail a live backend, and a table that changes under held
 * connections would muddle what the test counts.
 */
export const LENIENT_TIMING: Timing = { interval: 1000, fastInterval: 200, timeout: 2000, rise: 2, fall: 3 };

export type Node = 'A' | 'B';

export interface Balancer {
  node: Node;
  ns: Netns;
  dir: string;
  config: string;
  trackFile: string;
  daemon?: DaemonProcess;
  keepalived?: ChildProcess & { log: ReturnType<typeof waitableList<string>> };
  conntrackd?: ChildProcess;
}

export interface LabOptions {
  /** 'vrrp' (default): keepalived moves the VIP; 'ecmp': both hold it, the client's route spreads flows. */
  mode?: 'vrrp' | 'ecmp';
  conntrackd?: boolean;
  /** Extra keys of the service (the scheduler; round robin without). */
  service?: Record<string, string>;
  /** The checks' timing (default: fast, for the track file tests). */
  timing?: Timing;
}

export interface Lab {
  vip: string;
  client: Netns;
  lbs: Record<Node, Balancer>;
  backends: Netns[];
  dir: string;
}

/** Every nf-healthd started here: killed by pid after each test, also when the lab failed half-built. */
const daemons = new Set<DaemonProcess>();

/** What the daemons said about the backends and their tables: for a failing test's message. */
export function daemonStory(lab: Lab): string {
  return Object.values(lab.lbs)
    .map((b) => {
      const said = (b.daemon?.lines ?? []).filter((l) => l.event !== 'check').slice(-12);
      return `lb${b.node}: ${said.map((l) => `${String(l.event)}: ${l.msg}`).join(' | ')}`;
    })
    .join('\n');
}

/** For afterEach: every daemon, process, namespace and folder of the labs is gone. */
export async function cleanupLabs(): Promise<void> {
  for (const d of daemons) {
    if (d.child.exitCode === null && d.child.signalCode === null) {
      d.kill('SIGKILL');
      await d.exited;
    }
  }
  daemons.clear();
  cleanupNetns();
}

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

/** An example config from config/ with its `<marker>NAME=` definitions set; each must be there. */
function exampleWithDefinitions(file: string, marker: string, defs: Record<string, string>): string {
  let text = readFileSync(path.join(ROOT, 'config', file), 'utf8');
  for (const [name, value] of Object.entries(defs)) {
    const line = new RegExp(`^${marker.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}${name} ?=.*$`, 'm');
    expect(text).toMatch(line);
    text = text.replace(line, `${marker}${name}=${value}`);
  }
  return text;
}

/** config/keepalived-pair.conf with its `$NAME=` definitions set for this lab. */
function keepalivedConfig(b: Balancer): string {
  const text = exampleWithDefinitions('keepalived-pair.conf', '$', {
    FRONT_IF: 'front',
    BACK_IF: 'back',
    VIP: `${VRRP_VIP}/24`,
    BACK_GW: `${BACK_GW}/24`,
    ROUTER_ID: '51',
    TRACK_FILE: b.trackFile,
  });
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

async function macOf(ns: Netns, dev: string): Promise<string> {
  const [link] = JSON.parse(await ns.run(['ip', '-j', 'link', 'show', 'dev', dev])) as { address: string }[];
  return link!.address;
}

/**
 * The backends' return path of mode 'ecmp': config/ecmp-backend.nft with the balancers'
 * MAC addresses, and the policy routes its comment lists.
 */
async function returnTheWayItCame(be: Netns, lbs: Record<Node, Balancer>): Promise<void> {
  const rules = exampleWithDefinitions('ecmp-backend.nft', 'define LB_', {
    A_MAC: ` ${await macOf(lbs.A.ns, 'back')}`,
    B_MAC: ` ${await macOf(lbs.B.ns, 'back')}`,
  });
  await be.run(['nft', '-f', '-'], rules);
  await be.run(['ip', 'route', 'add', 'default', 'via', BACK.A]);
  for (const [mark, node] of [
    ['1', 'A'],
    ['2', 'B'],
  ] as const) {
    await be.run(['ip', 'rule', 'add', 'fwmark', mark, 'lookup', `10${mark}`]);
    await be.run(['ip', 'route', 'add', 'default', 'via', BACK[node], 'table', `10${mark}`]);
  }
}

export async function buildLab(options: LabOptions = {}): Promise<Lab> {
  const mode = options.mode ?? 'vrrp';
  const vip = mode === 'vrrp' ? VRRP_VIP : ECMP_VIP;
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
    if (mode === 'ecmp') await ns.run(['ip', 'addr', 'add', `${vip}/32`, 'dev', 'lo']);
  }
  // The dedicated sync link between the balancers.
  await lbs.A.ns.run(['ip', 'link', 'add', 'sync', 'type', 'veth', 'peer', 'name', 'sync', 'netns', lbs.B.ns.name]);
  for (const node of ['A', 'B'] as const) {
    await lbs[node].ns.run(['ip', 'addr', 'add', `${SYNC[node]}/24`, 'dev', 'sync']);
    await lbs[node].ns.run(['ip', 'link', 'set', 'sync', 'up']);
  }
  if (mode === 'ecmp') {
    // The router's part, played by the client: both balancers as next hops, chosen per
    // flow by a hash of addresses and ports.
    await client.run(['sysctl', '-q', '-w', 'net.ipv4.fib_multipath_hash_policy=1']);
    await client.run(['ip', 'route', 'add', `${vip}/32`, 'nexthop', 'via', FRONT.A, 'nexthop', 'via', FRONT.B]);
  }
  for (const [i, be] of backends.entries()) {
    await plug(sw, 'back', be!, 'eth0', `${BACKENDS[i]}/24`, `p-be${i + 1}`);
    // Replies go to the floating gateway, held by whichever balancer is master; with
    // ECMP, back to the balancer each connection came through.
    if (mode === 'vrrp') await be!.run(['ip', 'route', 'add', 'default', 'via', BACK_GW]);
    else await returnTheWayItCame(be!, lbs);
    await startServer(be!, [process.execPath, BACKEND, '0.0.0.0', '25', `backend${i + 1} ESMTP`], `backend ${i + 1}`)
      .ready;
  }
  const lab: Lab = { vip, client, lbs, backends, dir };
  for (const node of ['A', 'B'] as const) {
    const b = lbs[node];
    writeFileSync(
      b.config,
      balancedMailYaml({
        timing: options.timing ?? TIMING,
        stateFile: path.join(b.dir, 'state.json'),
        writer: '{ type: nft }',
        // With ECMP nobody reads the track file: the test waits on it for the first round of checks.
        extra: `vrrp: { trackFile: ${b.trackFile} }`,
        vip,
        addresses: BACKENDS,
        ...(options.service ? { service: options.service } : {}),
      }),
    );
    const rules = await b.ns.run([process.execPath, BIN, 'rules', '-c', b.config]);
    await b.ns.run(['nft', '-f', '-'], rules);
    if (options.conntrackd) startConntrackd(b);
    startNfHealthd(b);
  }
  // The first round of checks on a busy machine: a wide bound.
  await Promise.all(['A', 'B'].map((n) => waitTrackValue(lbs[n as Node], '0', 60_000)));
  if (mode === 'vrrp') {
    startKeepalived(lbs.A);
    await waitState(lbs.A, 'MASTER');
    startKeepalived(lbs.B);
    await waitState(lbs.B, 'BACKUP');
  }
  return lab;
}

export function startNfHealthd(b: Balancer): void {
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
export async function waitState(
  b: Balancer,
  state: 'MASTER' | 'BACKUP' | 'FAULT',
  from = 0,
  ms = 15_000,
): Promise<number> {
  await b.keepalived!.log.waitFor((l) => l.includes(`(lb) Entering ${state} STATE`), ms, from);
  return performance.now();
}

async function holdsVip(b: Balancer): Promise<boolean> {
  return (await b.ns.run(['ip', '-o', '-4', 'addr', 'show', 'dev', 'front'])).includes(` ${VRRP_VIP}/24 `);
}

/**
 * Whether `b` holds the VIP, once it does as `expected` (rejects after 5 s): keepalived logs
 * "Entering MASTER STATE" (or FAULT) before it adds (removes) the address.
 */
export function vipHeld(b: Balancer, expected: boolean): Promise<boolean> {
  return waitUntil(
    () => holdsVip(b),
    (held) => held === expected,
    5_000,
  );
}

/** Bounded polling of the track file until it holds `value`. */
export async function waitTrackValue(b: Balancer, value: string, ms = 15_000): Promise<void> {
  const read = () => {
    try {
      return readFileSync(b.trackFile, 'utf8').trim();
    } catch {
      return 'not written yet';
    }
  };
  await waitUntil(read, (text) => text === value, ms).catch(() => {
    throw new Error(`track file of lb${b.node} holds "${read()}", not ${value}`);
  });
}

/** The established connections to the VIP in a balancer's connection table. */
export async function establishedToVip(lab: Lab, b: Balancer): Promise<number> {
  const listed = await b.ns.run(['conntrack', '-L', '-p', 'tcp', '--orig-dst', lab.vip]);
  return listed.split('\n').filter((l) => l.includes('ESTABLISHED')).length;
}

export async function connect(
  lab: Lab,
  count: number,
): Promise<{ answers: Record<string, number>; failures: string[] }> {
  return JSON.parse(await lab.client.run([process.execPath, CLIENT, lab.vip, '25', String(count), '2000'])) as {
    answers: Record<string, number>;
    failures: string[];
  };
}

export interface Held {
  /** The backend that greeted it (each backend says its own name). */
  banner: string;
  /** Sends EHLO and resolves with the reply, or the error that ended the connection, or none within `ms`. */
  ehlo(ms: number): Promise<{ reply?: string; error?: string }>;
}

/** `count` long-lived client connections (one client process), each greeted by its backend. */
export async function hold(lab: Lab, count: number): Promise<Held[]> {
  const child = lab.client.spawn([process.execPath, HOLD, lab.vip, '25', String(count)]);
  type Event = { conn: number; banner?: string; reply?: string; error?: string };
  const events = waitableList<Event>((got) => JSON.stringify(got.slice(-5)));
  eachLine(child.stdout!, (line) => {
    events.items.push(JSON.parse(line) as Event);
    events.changed();
  });
  const held: Held[] = [];
  for (let conn = 0; conn < count; conn++) {
    const { conn: _, ...first } = await events.waitFor((e) => e.conn === conn, 10_000);
    if (!first.banner) throw new Error(`held connection ${conn} was not greeted: ${JSON.stringify(first)}`);
    held.push({
      banner: first.banner,
      async ehlo(ms) {
        const from = events.items.length;
        child.stdin!.write(`${conn}\n`);
        try {
          const { conn: _, ...answer } = await events.waitFor((e) => e.conn === conn, ms, from);
          return answer;
        } catch {
          return { error: `no answer within ${ms}ms` };
        }
      },
    });
  }
  return held;
}

/** Sends EHLO on each in turn; how many got their own backend's name back, and every outcome. */
export async function echoes(held: readonly Held[], ms: number) {
  const outcomes: { banner: string; reply?: string; error?: string }[] = [];
  for (const h of held) outcomes.push({ banner: h.banner, ...(await h.ehlo(ms)) });
  return { kept: outcomes.filter((o) => o.reply === `250 ${o.banner}`).length, outcomes };
}

/** Backend 2's connections first: a round robin that starts at backend 1 gets the first one wrong. */
export function backend2First(held: readonly Held[]): Held[] {
  return [...held].sort((x, y) => y.banner.localeCompare(x.banner));
}

/** A crash of a balancer: its links go down first, at once (nothing more leaves it), then its programs die by SIGKILL. */
export async function crash(b: Balancer): Promise<void> {
  await b.ns.run(['ip', '-batch', '-'], ['front', 'back', 'sync'].map((dev) => `link set ${dev} down\n`).join(''));
  for (const p of [b.keepalived, b.conntrackd]) p?.kill('SIGKILL');
  b.daemon?.kill('SIGKILL');
}

export function stopAll(lab: Lab): Promise<unknown> {
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

/**
 * The crash scenario of mode 'vrrp': 5 held connections, lbA crashes, lbB takes the VIP;
 * returns the figures it measured. `looseOnB`: lbB's net.netfilter.nf_conntrack_tcp_loose.
 */
export async function crashScenario(options: LabOptions & { looseOnB?: 0 | 1 }) {
  const lab = await buildLab(options);
  try {
    const { A, B } = lab.lbs;
    if (options.looseOnB !== undefined)
      await B.ns.run(['sysctl', '-q', '-w', `net.netfilter.nf_conntrack_tcp_loose=${options.looseOnB}`]);
    expect(await vipHeld(A, true)).toBe(true);
    expect(await vipHeld(B, false)).toBe(false);
    const held = await hold(lab, 5);
    const before = await connect(lab, 10);
    expect(before.failures).toEqual([]);
    expect((await echoes(held, 3000)).kept).toBe(5);
    if (options.conntrackd) {
      // lbB's kernel already holds the 5 connections, NAT and mark included, before any move.
      expect(await establishedToVip(lab, B)).toBeGreaterThanOrEqual(5);
    } else {
      // Nothing synced: lbB has never seen them.
      expect(await establishedToVip(lab, B)).toBe(0);
    }

    const markB = B.keepalived!.log.items.length;
    const crashedAt = performance.now();
    await crash(A);
    const moveMs = (await waitState(B, 'MASTER', markB)) - crashedAt;
    expect(await vipHeld(B, true)).toBe(true);
    expect(moveMs).toBeLessThanOrEqual(MOVE_BOUND_MS);

    const { kept, outcomes } = await echoes(backend2First(held), 15_000);

    const after = await connect(lab, 10);
    expect(after.failures).toEqual([]);
    expect(Object.values(after.answers).reduce((a, n) => a + n, 0)).toBe(10);
    return { moveMs, kept, outcomes, banners: held.map((h) => h.banner) };
  } catch (err) {
    console.log(daemonStory(lab));
    throw err;
  } finally {
    await stopAll(lab);
  }
}
