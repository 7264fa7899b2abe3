import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseNftCountersJson, parseNftMapsJson } from '../src/kernel/writers/nft.js';
import type { Snapshot } from '../src/ops/snapshot.js';
import { BIN, type DaemonProcess, type LogLine, startDaemon, waitUntil } from './support/daemon.js';
import { cleanupNetns, startServer, tempFolder } from './support/netns.js';
import {
  breakReturnRoute,
  burst,
  type PassiveLab,
  passiveLab,
  passiveYaml,
  resetClients,
  restoreReturnRoute,
  stopResettingClients,
} from './support/passive-lab.js';

// Passive health on a real kernel: a client, a balancer running the daemon (a real process
// in its namespace) with the nft writer, three SMTP backends. A backend is broken for real
// clients only (no route back to the client subnet, or resets to it), so the balancer's own
// probes still pass; the kernel's counters of the client connections must find it.
// Everything lives in namespaces made here and is removed afterwards.

const daemons = new Set<DaemonProcess>();
afterEach(async () => {
  // The daemons first (they write into the folders cleanupNetns removes).
  for (const d of daemons) d.kill('SIGKILL');
  await Promise.all([...daemons].map((d) => d.exited));
  daemons.clear();
  cleanupNetns();
});

const WINDOW = 5000;
const FAST = 100;
/** What the design allows (window + one fastInterval), several times over plus seconds: the machine is shared. */
const WIDE = 4 * (WINDOW + FAST) + 5000;

let labs = 0;
/** A lab on its own 10.2xx prefix: the test files run in parallel, each namespace is its own. */
async function lab(): Promise<PassiveLab> {
  labs++;
  return passiveLab(`10.${210 + labs}`, `10.${210 + labs}.9.1`);
}

interface Running {
  lab: PassiveLab;
  config: string;
  daemon: DaemonProcess;
  stateFile: string;
}

async function start(passive: string, timing?: string, logLevel?: string, extra?: string): Promise<Running> {
  const l = await lab();
  const dir = tempFolder('nfh-passive-');
  const stateFile = path.join(dir, 'state.json');
  const config = path.join(dir, 'config.yaml');
  writeFileSync(
    config,
    passiveYaml(l, {
      stateFile,
      passive,
      ...(timing ? { timing } : {}),
      ...(logLevel ? { logLevel } : {}),
      ...(extra ? { extra } : {}),
    }),
  );
  const rules = await l.balancer.run([process.execPath, BIN, 'rules', '-c', config, '--format', 'nft']);
  await l.balancer.run(['nft', '-f', '-'], rules);
  const daemon = startDaemon(['run', '-c', config], {}, l.balancer.name);
  daemons.add(daemon);
  await daemon.waitForLine((x) => x.event === 'ready', 60_000);
  return { lab: l, config, daemon, stateFile };
}

const isTransition = (backend: string, state: 'up' | 'down') => (l: LogLine) =>
  l.event === 'transition' && l.backend === backend && l.state === state;

function readState(file: string): Snapshot | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  } catch {
    return undefined; // not written yet
  }
}

/** The marks the service's slot table holds now: who gets new connections. */
async function inTable(l: PassiveLab): Promise<Set<number>> {
  const listing = await l.balancer.run(['nft', '-j', 'list', 'map', 'inet', 'nfh', 'slots_mail']);
  return new Set(parseNftMapsJson(listing).get('slots_mail')?.values());
}

/** Waits until the kernel's table holds exactly these marks. */
const tableHolds = (l: PassiveLab, marks: number[]) =>
  waitUntil(
    () => inTable(l),
    (held) => held.size === marks.length && marks.every((m) => held.has(m)),
    WIDE,
  );

const backendState = (r: Running, name: string) => readState(r.stateFile)?.backends.find((b) => b.backend === name);

describe('passive health counters', () => {
  it('counts new connections, answers and resets per backend in the forward hook, read and zeroed in one call', async () => {
    const l = await lab();
    const dir = tempFolder('nfh-passive-');
    const config = path.join(dir, 'config.yaml');
    writeFileSync(config, passiveYaml(l, { stateFile: path.join(dir, 'state.json'), passive: '{}' }));
    const rules = await l.balancer.run([process.execPath, BIN, 'rules', '-c', config, '--format', 'nft']);
    expect(rules).toContain('chain passive_reply');
    await l.balancer.run(['nft', '-f', '-'], rules);
    const read = async () =>
      parseNftCountersJson(await l.balancer.run(['nft', '-j', 'reset', 'counters', 'table', 'inet', 'nfh']));
    await read(); // zero whatever the load left

    const healthy = await burst(l, 30);
    expect(healthy.answers).toEqual({ backend1: 10, backend2: 10, backend3: 10 });
    const first = await read();
    for (const m of ['0x101', '0x102', '0x103']) {
      expect(first.get(`pn_${m}`)).toBe(10);
      expect(first.get(`pa_${m}`)).toBe(10);
      expect(first.get(`pr_${m}`)).toBe(0);
    }
    // The read zeroed them.
    expect((await read()).get('pn_0x101')).toBe(0);

    // No route back from backend 2: its SYN-ACKs never leave it. Backend 3 resets the clients.
    await breakReturnRoute(l, 1);
    await resetClients(l, 2);
    const broken = await burst(l, 30, 1500);
    expect(broken.answers).toEqual({ backend1: 10 });
    const second = await read();
    expect([second.get('pn_0x101'), second.get('pa_0x101'), second.get('pr_0x101')]).toEqual([10, 10, 0]);
    // A retransmitted SYN is not a new connection: the count is per connection.
    expect([second.get('pn_0x102'), second.get('pa_0x102'), second.get('pr_0x102')]).toEqual([10, 0, 0]);
    expect([second.get('pn_0x103'), second.get('pa_0x103'), second.get('pr_0x103')]).toEqual([10, 0, 10]);
  }, 60_000);
  it('counts a UDP flow as answered once, at its first reply; a silent backend leaves its flows unanswered', async () => {
    const l = await lab();
    const dir = tempFolder('nfh-passive-');
    const config = path.join(dir, 'config.yaml');
    // The SMTP service's config with the service turned into UDP port 53 (the check is a TCP connect to 25).
    const yaml = passiveYaml(l, { stateFile: path.join(dir, 'state.json'), passive: '{}' })
      .replace('    port: 25\n', '    port: 53\n    protocol: udp\n')
      .replace('check: { type: smtp }', 'check: { type: tcp, port: 25 }');
    writeFileSync(config, yaml);
    await l.balancer.run(['nft', '-f', '-'], await l.balancer.run([process.execPath, BIN, 'rules', '-c', config]));
    // Backends 1 and 2 echo every datagram; backend 3 says nothing.
    const echo =
      "const s=require('node:dgram').createSocket('udp4');s.on('message',(m,r)=>s.send(m,r.port,r.address));s.bind(53,()=>console.log('ready'))";
    await Promise.all(
      [0, 1].map((i) => startServer(l.backends[i]!, [process.execPath, '-e', echo], `echo ${i + 1}`).ready),
    );
    // 30 flows (a socket each), two datagrams per flow: two replies per flow from the echoing backends.
    const client = `const d=require('node:dgram');let got=0;const all=[];for(let i=0;i<30;i++){all.push(new Promise((res)=>{const s=d.createSocket('udp4');let n=0,done=false;const end=()=>{if(done)return;done=true;clearTimeout(t);s.close();res()};s.on('message',()=>{if(++n===2){got++;end()}});s.send('a',53,'${l.vip}',()=>s.send('b',53,'${l.vip}'));const t=setTimeout(end,1500)}))}Promise.all(all).then(()=>console.log(got))`;
    const read = async () =>
      parseNftCountersJson(await l.balancer.run(['nft', '-j', 'reset', 'counters', 'table', 'inet', 'nfh']));
    await read();
    expect(Number((await l.client.run([process.execPath, '-e', client])).trim())).toBe(20);
    const c = await read();
    expect([c.get('pn_0x101'), c.get('pa_0x101'), c.get('pr_0x101')]).toEqual([10, 10, 0]);
    expect([c.get('pn_0x102'), c.get('pa_0x102'), c.get('pr_0x102')]).toEqual([10, 10, 0]);
    expect([c.get('pn_0x103'), c.get('pa_0x103'), c.get('pr_0x103')]).toEqual([10, 0, 0]);
  }, 60_000);
});

describe('passive health in the daemon', () => {
  it('ejects a backend whose return route is broken within its window, leaves a quiet one in, and takes it back', async () => {
    const r = await start('{ window: 5s, eject: true }');
    await breakReturnRoute(r.lab, 1);
    // Quiet: 9 connections, 3 of them to mail2, all lost: below minConnections (20), no verdict.
    const quiet = await burst(r.lab, 9, 1500);
    expect(quiet.answers).toEqual({ backend1: 3, backend3: 3 });
    const seen = await waitUntil(
      () => backendState(r, 'mail2'),
      (b) => (b?.passive?.unanswered ?? 0) >= 3,
      WIDE,
    );
    expect(seen!.passive!.ratio).toBeUndefined();
    expect(seen!.passive!.detail).toContain('3 of 3 new connections');
    expect(seen!.state).toBe('up');

    const from = r.daemon.lines.length;
    const before = performance.now();
    const clients = burst(r.lab, 100, 3000);
    const out = await r.daemon.waitForLine(isTransition('mail2', 'down'), WIDE, from);
    const tookMs = performance.now() - before;
    expect(String(out.reason)).toMatch(
      /^passive: \d+ of \d+ new connections in the latest 5s unanswered, 0 reset \(ratio 1\.00\); out for 5s$/,
    );
    const failing = r.daemon.lines.slice(from).find((x) => x.event === 'passive_failing');
    expect(failing).toMatchObject({ backend: 'mail2', eject: true, ratio: 1 });
    console.log(`${JSON.stringify(failing)}\n${JSON.stringify(out)}`);
    // Out of the table: the clients' later connections all succeed (while its window runs,
    // before its checks may bring it back).
    await tableHolds(r.lab, [0x101, 0x103]);
    const later = await burst(r.lab, 30, 1000);
    expect(r.daemon.lines.some(isTransition('mail2', 'up'))).toBe(false);
    expect(later.failures).toEqual({});
    expect(later.answers).toEqual({ backend1: 15, backend3: 15 });
    const first = await clients;
    expect(first.answers.backend2 ?? 0).toBe(0);
    // Only mail2 went out.
    expect(r.daemon.lines.filter((x) => x.event === 'transition' && x.state === 'down').map((x) => x.backend)).toEqual([
      'mail2',
    ]);
    console.log(
      `mail2 out ${Math.round(tookMs)} ms after 100 client connections began (window 5s, fastInterval 100ms)`,
    );

    // Still broken, but its checks pass: back in once its window is over, and out again
    // at the next burst, now for two windows (Envoy's growing ejection time).
    await r.daemon.waitForLine(isTransition('mail2', 'up'), WIDE, from);
    const fromAgain = r.daemon.lines.length;
    const clientsAgain = burst(r.lab, 100, 3000);
    const again = await r.daemon.waitForLine(isTransition('mail2', 'down'), WIDE, fromAgain);
    expect(String(again.reason)).toMatch(/ \(ratio 1\.00\); out for 10s \(ejection 2 in a row\)$/);
    await clientsAgain;

    // Repaired: the active checks' rise brings it back once its ejection is over.
    await restoreReturnRoute(r.lab, 1);
    await r.daemon.waitForLine(isTransition('mail2', 'up'), 2 * WIDE, fromAgain);
    await tableHolds(r.lab, [0x101, 0x102, 0x103]);
    const after = await burst(r.lab, 30);
    expect(after.answers).toEqual({ backend1: 10, backend2: 10, backend3: 10 });

    // A backend that resets real clients: the same outcome.
    const from2 = r.daemon.lines.length;
    await resetClients(r.lab, 0);
    await burst(r.lab, 100, 2000);
    const reset = await r.daemon.waitForLine(isTransition('mail1', 'down'), WIDE, from2);
    // The window may still hold answered connections of the burst before the fault.
    const resetReason =
      /^passive: 0 of \d+ new connections in the latest 5s unanswered, \d+ reset \(ratio (\d\.\d\d)\); out for 5s$/.exec(
        String(reset.reason),
      );
    expect(resetReason, String(reset.reason)).not.toBeNull();
    expect(Number(resetReason![1])).toBeGreaterThanOrEqual(0.5);
    await tableHolds(r.lab, [0x102, 0x103]);
    const later2 = await burst(r.lab, 30);
    expect(later2.answers).toEqual({ backend2: 15, backend3: 15 });
    await stopResettingClients(r.lab, 0);
    await r.daemon.waitForLine(isTransition('mail1', 'up'), WIDE, from2);
    r.daemon.kill();
    expect((await r.daemon.exited).code).toBe(0);
  }, 180_000);

  it('without eject: the failing backend stays in, is checked at fastInterval and flagged in status', async () => {
    const r = await start(
      '{ window: 2s, minConnections: 10 }',
      'interval: 5s, fastInterval: 100ms, timeout: 1s, rise: 2, fall: 3',
      'debug',
      // Inside the balancer's own namespace: nothing else listens there.
      'http: { listen: 127.0.0.1:9100 }',
    );
    await breakReturnRoute(r.lab, 1);
    const from = r.daemon.lines.length;
    // Traffic goes on while status is read: the flag is about now.
    const traffic = burst(r.lab, 'rate:60:15000', 1500);
    const failing = await r.daemon.waitForLine((x) => x.event === 'passive_failing', WIDE, from);
    expect(failing).toMatchObject({ backend: 'mail2', eject: false, ratio: 1 });
    expect(String(failing.msg)).toContain('passive.eject is off: it stays in');
    const at = r.daemon.lines.indexOf(failing);
    // fastInterval (100ms) instead of interval (5s): five checks of mail2 come long before
    // anyone's interval is over.
    const checks = (backend: string) =>
      r.daemon.lines.slice(at).filter((x) => x.event === 'check' && x.backend === backend).length;
    await waitUntil(
      () => checks('mail2'),
      (n) => n >= 5,
      WIDE,
    );
    expect(checks('mail1')).toBeLessThanOrEqual(2);
    // Flagged in status while the traffic fails.
    const status = await waitUntil(
      () => r.lab.balancer.exec([process.execPath, BIN, 'status', '-c', r.config]),
      (s) => s.stdout.includes('Passive:'),
      WIDE,
    );
    expect(status.stdout).toMatch(
      /mail\/mail2: failing since \S+: \d+ of \d+ new connections in the latest 2s unanswered, 0 reset \(ratio 1\.00\)/,
    );
    console.log(status.stdout);
    // Metrics: the kernel's counts next to the probes'.
    const metrics = await r.lab.balancer.run([
      process.execPath,
      '-e',
      "fetch('http://127.0.0.1:9100/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))",
    ]);
    const passiveLines = metrics.split('\n').filter((l) => l.startsWith('nfh_passive_'));
    console.log(passiveLines.join('\n'));
    const value = (name: string, backend: string) =>
      Number(passiveLines.find((l) => l.startsWith(`${name}{service="mail",backend="${backend}"}`))?.split(' ')[1]);
    expect(value('nfh_passive_unanswered_total', 'mail2')).toBeGreaterThanOrEqual(10);
    expect(value('nfh_passive_answered_total', 'mail2')).toBe(0);
    expect(value('nfh_passive_new_total', 'mail1')).toBeGreaterThanOrEqual(10);
    expect(value('nfh_passive_failing', 'mail2')).toBe(1);
    expect(value('nfh_passive_failing', 'mail1')).toBe(0);
    expect(value('nfh_passive_failure_ratio', 'mail2')).toBe(1);
    expect(r.daemon.lines.some(isTransition('mail2', 'down'))).toBe(false);
    const sent = await traffic;
    expect(sent.answers.backend2 ?? 0).toBe(0);
    expect(sent.failures.TIMEOUT).toBeGreaterThan(0);
    r.daemon.kill();
    expect((await r.daemon.exited).code).toBe(0);
  }, 120_000);

  it('all three broken: the cap keeps at least half in and the log says why', async () => {
    const r = await start('{ window: 2s, eject: true }');
    for (const i of [0, 1, 2]) await breakReturnRoute(r.lab, i);
    const from = r.daemon.lines.length;
    await burst(r.lab, 120, 1500);
    const capped = await r.daemon.waitForLine((x) => x.event === 'passive_eject_capped', WIDE, from);
    expect(String(capped.msg)).toMatch(
      /kept in although failing: 1 of 3 backends of mail are out already and maxEjectPercent 50 lets passive health take at most 1 out/,
    );
    await waitUntil(
      () => r.daemon.lines.slice(from).filter((x) => x.event === 'passive_eject_capped').length,
      (n) => n >= 2,
      WIDE,
    );
    // More failing traffic: never more than one out at a time (an ejected one comes back
    // after its window, and another may go), and the cap is logged once per episode.
    await burst(r.lab, 60, 1500);
    await burst(r.lab, 60, 1500);
    let out = 0;
    for (const x of r.daemon.lines.filter((l) => l.event === 'transition')) {
      out += x.state === 'down' ? 1 : -1;
      expect(x.state === 'up' || String(x.reason).startsWith('passive: ')).toBe(true);
      expect(out).toBeLessThanOrEqual(1);
    }
    const cappedAt = r.daemon.lines.filter((x) => x.event === 'passive_eject_capped');
    console.log(JSON.stringify(cappedAt[0]));
    const episodes = r.daemon.lines.filter((x) => x.event === 'passive_failing');
    expect(cappedAt.length).toBeLessThanOrEqual(episodes.length);
    r.daemon.kill();
    expect((await r.daemon.exited).code).toBe(0);
  }, 120_000);
});
