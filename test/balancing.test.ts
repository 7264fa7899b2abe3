import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { waitUntil } from './support/daemon.js';
import { eachLine, waitableList } from './support/lines.js';
import { cleanupNetns, createNetns, link, type Netns, startServer, tempFolder } from './support/netns.js';

// The balancing table on a real kernel: a client, one or two balancers running the
// daemon with the nft writer, three or four backends serving SMTP banners, all in
// namespaces made here (removed afterwards, also on failure). Shares are counted from
// real connections; the kernel's map is read to know when a change has landed.

const BIN = fileURLToPath(new URL('../bin/nf-healthd.js', import.meta.url));
const BACKEND = fileURLToPath(new URL('./support/smtp-backend.mjs', import.meta.url));
const CLIENT = fileURLToPath(new URL('./support/smtp-client.mjs', import.meta.url));
const VIP = '10.202.9.1';
/** Backend i (from 1) answers on this address, routed through every balancer. */
const backendAddress = (i: number) => `10.202.100.${i}`;
const TIMING = '{ interval: 300ms, fastInterval: 100ms, timeout: 250ms, rise: 2, fall: 2 }';

type LogLine = Record<string, unknown> & { msg: string };

interface Lab {
  client: Netns;
  balancers: Netns[];
  backends: Netns[];
  servers: (ChildProcess | undefined)[];
  dir: string;
}

afterEach(() => cleanupNetns());

async function buildLab(backends: number, balancers = 1): Promise<Lab> {
  const dir = tempFolder('nfh-balancing-');
  const client = createNetns('bclient');
  const lab: Lab = { client, balancers: [], backends: [], servers: [], dir };
  for (let n = 0; n < balancers; n++) lab.balancers.push(createNetns(`blb${n + 1}`));
  const lb = lab.balancers[0]!;
  await link(lb, 'to-client', '10.202.1.1/24', client, 'eth0', '10.202.1.2/24');
  await client.run(['ip', 'route', 'add', 'default', 'via', '10.202.1.1']);
  for (const b of lab.balancers) {
    await b.run(['ip', 'addr', 'add', `${VIP}/32`, 'dev', 'lo']);
    await b.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  }
  for (let i = 1; i <= backends; i++) {
    const be = createNetns(`bbe${i}`);
    lab.backends.push(be);
    await be.run(['ip', 'addr', 'add', `${backendAddress(i)}/32`, 'dev', 'lo']);
    for (const [n, b] of lab.balancers.entries()) {
      const net = `10.202.${10 * (n + 1) + i}`;
      await link(b, `to-be${i}`, `${net}.1/24`, be, `eth${n}`, `${net}.2/24`);
      await b.run(['ip', 'route', 'add', `${backendAddress(i)}/32`, 'via', `${net}.2`]);
    }
    // Replies to clients go back through the first balancer, which un-NATs them.
    await be.run(['ip', 'route', 'add', 'default', 'via', `10.202.${10 + i}.1`]);
  }
  await Promise.all(lab.backends.map((_, i) => startBackend(lab, i)));
  return lab;
}

function startBackend(lab: Lab, i: number): Promise<void> {
  const argv = [process.execPath, BACKEND, '0.0.0.0', '25', `be${i + 1} ESMTP`];
  const { child, ready } = startServer(lab.backends[i]!, argv, `backend ${i + 1}`);
  lab.servers[i] = child;
  return ready;
}

function killBackend(lab: Lab, i: number): void {
  lab.servers[i]?.kill('SIGKILL');
  lab.servers[i] = undefined;
}

interface Connections {
  answers: Record<string, number>;
  failures: string[];
  bySource?: Record<string, string>;
  timeline?: [number, string][];
}

async function connect(lab: Lab, count: number | string, sources?: string[]): Promise<Connections> {
  const argv = [process.execPath, CLIENT, VIP, '25', String(count), '2000', ...(sources ? [sources.join(',')] : [])];
  return JSON.parse(await lab.client.run(argv)) as Connections;
}

interface DaemonProc {
  lines: LogLine[];
  waitFor(match: (l: LogLine) => boolean, ms?: number, from?: number): Promise<LogLine>;
  signal(signal: NodeJS.Signals): void;
  stop(): Promise<number | null>;
}

function startDaemon(ns: Netns, config: string): DaemonProc {
  const child = ns.spawn([process.execPath, BIN, 'run', '-c', config]);
  let stderr = '';
  const list = waitableList<LogLine>(
    (got) =>
      `stderr: ${stderr}; last: ${got
        .slice(-8)
        .map((l) => l.msg)
        .join(' | ')}`,
  );
  eachLine(child.stdout!, (text) => {
    try {
      list.items.push(JSON.parse(text) as LogLine);
    } catch {
      list.items.push({ msg: text });
    }
    list.changed();
  });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    lines: list.items,
    waitFor: (match, ms = 10_000, from = 0) => list.waitFor(match, ms, from),
    signal: (signal) => child.kill(signal),
    async stop() {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** Runs `body` against a daemon started in `ns`; it must exit 0 on SIGTERM when `body` succeeded (else the failure is the news). */
async function withDaemon(ns: Netns, config: string, body: (daemon: DaemonProc) => Promise<void>): Promise<void> {
  const daemon = startDaemon(ns, config);
  let finished = false;
  try {
    await body(daemon);
    finished = true;
  } finally {
    const code = await daemon.stop();
    if (finished) expect(code).toBe(0);
  }
}

/** Slots per banner name (`be1`...) in the balancer's map; `reset` for slots that answer with a reset. */
async function mapShares(lb: Netns): Promise<Record<string, number>> {
  const listed = JSON.parse(await lb.run(['nft', '-j', 'list', 'map', 'inet', 'nfh', 'slots_svc'])) as {
    nftables: { map?: { elem?: [number, number][] } }[];
  };
  const shares: Record<string, number> = {};
  for (const [, mark] of listed.nftables.find((e) => e.map)?.map?.elem ?? []) {
    const name = mark === 0 ? 'reset' : `be${mark & 0xff}`;
    shares[name] = (shares[name] ?? 0) + 1;
  }
  return shares;
}

/** Polls the kernel's map until `accept` holds (bounded); returns the shares. */
async function untilShares(
  lb: Netns,
  accept: (s: Record<string, number>) => boolean,
  ms = 10_000,
): Promise<Record<string, number>> {
  const deadline = performance.now() + ms;
  for (;;) {
    const shares = await mapShares(lb);
    if (accept(shares)) return shares;
    if (performance.now() > deadline) throw new Error(`map shares ${JSON.stringify(shares)} not as wanted in ${ms}ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const only =
  (...names: string[]) =>
  (s: Record<string, number>) =>
    Object.keys(s).sort().join(',') === [...names].sort().join(',');

function configFile(lab: Lab, name: string, services: string, timing = TIMING): string {
  const file = path.join(lab.dir, name);
  writeFileSync(
    file,
    `defaults: ${timing}
log: { level: info, format: json }
stateFile: ${path.join(lab.dir, `${name}.state.json`)}
writer: { type: nft }
services:
  - name: svc
    vip: ${VIP}
    port: 25
${services}`,
  );
  return file;
}

const backendLines = (lab: Lab, extra: (i: number) => string = () => '') =>
  `    backends:\n${lab.backends.map((_, i) => `      - { name: be${i + 1}, address: ${backendAddress(i + 1)}${extra(i + 1)} }`).join('\n')}\n`;

async function loadRules(lb: Netns, config: string): Promise<string> {
  const rules = await lb.run([process.execPath, BIN, 'rules', '-c', config, '--format', 'nft']);
  await lb.run(['nft', '-f', '-'], rules);
  return rules;
}

const isTransition = (backend: string, state: string) => (l: LogLine) =>
  l.event === 'transition' && l.backend === backend && l.state === state;

function within(value: number | undefined, expected: number, margin: number): void {
  expect(value ?? 0).toBeGreaterThanOrEqual(expected - margin);
  expect(value ?? 0).toBeLessThanOrEqual(expected + margin);
}

describe('balancing table on a real kernel (namespaces)', () => {
  it("roundrobin: a dead backend's share spreads evenly, comes back, backups stand in, weights by reload, reset when nobody serves", async () => {
    const lab = await buildLab(4);
    const lb = lab.balancers[0]!;
    const config = configFile(
      lab,
      'rr.yaml',
      `    check: { type: smtp }\n${backendLines(lab, (i) => (i === 4 ? ', backup: true' : ''))}`,
    );
    await loadRules(lb, config);
    await withDaemon(lb, config, async (daemon) => {
      await daemon.waitFor((l) => l.event === 'ready');
      const even = await connect(lab, 60);
      expect(even.failures).toEqual([]);
      for (const be of ['be1', 'be2', 'be3']) within(even.answers[be], 20, 3);
      expect(even.answers.be4).toBeUndefined();

      // be1 dies: its share goes to be2 and be3 alike, and the log says so.
      let mark = daemon.lines.length;
      killBackend(lab, 0);
      const moved = await daemon.waitFor((l) => l.event === 'table_changed' && l.backend === 'be1', 10_000, mark);
      expect(moved.msg).toMatch(/backend be1 is down: \d+ slots of be1 to be2 \(\d+\), be3 \(\d+\)/);
      await untilShares(lb, only('be2', 'be3'));
      const spread = await connect(lab, 60);
      expect(spread.failures).toEqual([]);
      within(spread.answers.be2, 30, 3);
      within(spread.answers.be3, 30, 3);

      // be1 returns: its own share again.
      mark = daemon.lines.length;
      await startBackend(lab, 0);
      await daemon.waitFor(isTransition('be1', 'up'), 10_000, mark);
      await untilShares(lb, only('be1', 'be2', 'be3'));
      const back = await connect(lab, 60);
      expect(back.failures).toEqual([]);
      for (const be of ['be1', 'be2', 'be3']) within(back.answers[be], 20, 3);

      // Every primary down: the backup takes all; a primary back: the backup gets nothing.
      mark = daemon.lines.length;
      for (const i of [0, 1, 2]) killBackend(lab, i);
      await daemon.waitFor((l) => l.event === 'backup_active', 10_000, mark);
      await untilShares(lb, only('be4'));
      expect(await connect(lab, 20)).toEqual({ answers: { be4: 20 }, failures: [] });
      mark = daemon.lines.length;
      await startBackend(lab, 1);
      await daemon.waitFor(isTransition('be2', 'up'), 10_000, mark);
      await untilShares(lb, only('be2'));
      expect(await connect(lab, 20)).toEqual({ answers: { be2: 20 }, failures: [] });

      // Nobody left: a TCP reset from the balancer at once (no SYN left to time out).
      mark = daemon.lines.length;
      killBackend(lab, 1);
      killBackend(lab, 3);
      await daemon.waitFor((l) => l.event === 'service_rejecting', 10_000, mark);
      await untilShares(lb, only('reset'));
      expect(await connect(lab, 5)).toEqual({ answers: {}, failures: Array(5).fill('ECONNREFUSED') });

      // Weights 1:2:3 by a reload: the table is rebuilt at its new size.
      await Promise.all([0, 1, 2].map((i) => startBackend(lab, i)));
      writeFileSync(
        config,
        readFileSync(config, 'utf8')
          .replace(/\n {6}- \{ name: be4.*\n/, '\n')
          .replace(/(name: be(\d), address: [\d.]+)/g, (_m, head: string, n: string) => `${head}, weight: ${n}`),
      );
      await untilShares(lb, only('be1', 'be2', 'be3'), 15_000);
      mark = daemon.lines.length;
      daemon.signal('SIGHUP');
      await daemon.waitFor((l) => l.event === 'reloaded', 10_000, mark);
      const weighted = await untilShares(lb, (s) => s.be3 === 3 * (s.be1 ?? 0) && s.be2 === 2 * (s.be1 ?? 0));
      expect(Object.values(weighted).reduce((a, b) => a + b, 0)).toBe(600);
      const byWeight = await connect(lab, 120);
      expect(byWeight.failures).toEqual([]);
      within(byWeight.answers.be1, 20, 6);
      within(byWeight.answers.be2, 40, 6);
      within(byWeight.answers.be3, 60, 6);
    });
  }, 120_000);

  it('maglev (hash: source): survivors keep their sources when one backend dies; two balancers agree slot for slot', async () => {
    const lab = await buildLab(3, 2);
    const sources = Array.from({ length: 40 }, (_, k) => `10.202.1.${100 + k}`);
    for (const a of sources) await lab.client.run(['ip', 'addr', 'add', `${a}/32`, 'dev', 'eth0']);
    const yaml = `    scheduler: maglev\n    hash: source\n    check: { type: smtp }\n${backendLines(lab)}`;
    const configs = lab.balancers.map((_, n) => configFile(lab, `maglev${n + 1}.yaml`, yaml));
    const rules = await Promise.all(lab.balancers.map((lb, n) => loadRules(lb, configs[n]!)));
    // Same config, same table, same seed: only the file name in the header differs.
    expect(rules[1]!.replace(/maglev2/g, 'maglev1')).toBe(rules[0]);
    const daemons = lab.balancers.map((lb, n) => startDaemon(lb, configs[n]!));
    const map = async (lb: Netns) => lb.run(['nft', '-j', 'list', 'map', 'inet', 'nfh', 'slots_svc']);
    let finished = false;
    try {
      await Promise.all(daemons.map((d) => d.waitFor((l) => l.event === 'ready')));
      const before = await connect(lab, sources.length, sources);
      expect(before.failures).toEqual([]);
      // Each backend has some of the 40 sources.
      for (const be of ['be1', 'be2', 'be3']) expect(before.answers[be] ?? 0).toBeGreaterThanOrEqual(4);
      // Every source sticks to its backend while nothing changes.
      expect((await connect(lab, sources.length, sources)).bySource).toEqual(before.bySource);

      const marks = daemons.map((d) => d.lines.length);
      killBackend(lab, 1);
      await Promise.all(daemons.map((d, n) => d.waitFor(isTransition('be2', 'down'), 10_000, marks[n])));
      await Promise.all(lab.balancers.map((lb) => untilShares(lb, only('be1', 'be3'))));
      const after = await connect(lab, sources.length, sources);
      expect(after.failures).toEqual([]);
      const survivors = sources.filter((a) => before.bySource![a] !== 'be2');
      const stayed = survivors.filter((a) => after.bySource![a] === before.bySource![a]);
      expect(stayed.length / survivors.length).toBeGreaterThanOrEqual(0.95);
      // The two balancers' daemons computed the same table, slot for slot.
      expect(await map(lab.balancers[1]!)).toBe(await map(lab.balancers[0]!));
      console.log(
        `maglev: ${stayed.length}/${survivors.length} sources on the survivors stayed; be2's ${sources.length - survivors.length} moved`,
      );
      finished = true;
    } finally {
      const codes = await Promise.all(daemons.map((d) => d.stop()));
      if (finished) expect(codes).toEqual([0, 0]);
    }
  }, 120_000);

  it("slow start: a returning backend's share of new connections rises step by step to its weight", async () => {
    const lab = await buildLab(3);
    const lb = lab.balancers[0]!;
    const config = configFile(lab, 'slow.yaml', `    slowStart: 10s\n    check: { type: smtp }\n${backendLines(lab)}`);
    await loadRules(lb, config);
    await withDaemon(lb, config, async (daemon) => {
      await daemon.waitFor((l) => l.event === 'ready');
      let mark = daemon.lines.length;
      killBackend(lab, 2);
      await daemon.waitFor(isTransition('be3', 'down'), 10_000, mark);
      await untilShares(lb, only('be1', 'be2'));
      mark = daemon.lines.length;
      await startBackend(lab, 2);
      const up = await daemon.waitFor(isTransition('be3', 'up'), 10_000, mark);
      expect(
        (await daemon.waitFor((l) => l.event === 'table_changed' && l.backend === 'be3', 5000, mark)).msg,
      ).toContain('slow start begins');
      const stream = await connect(lab, 'for:12000');
      expect(stream.failures).toEqual([]);
      // be3's share in 2 s windows from when it came up: rising, then its full third.
      const windows = Array.from({ length: 6 }, () => ({ all: 0, be3: 0 }));
      for (const [ms, banner] of stream.timeline!) {
        const w = windows[Math.min(5, Math.floor(ms / 2000))]!;
        w.all++;
        if (banner === 'be3') w.be3++;
      }
      const shares = windows.map((w) => w.be3 / Math.max(1, w.all));
      console.log(
        `slow start: be3's share per 2 s window ${shares.map((x) => `${(100 * x).toFixed(0)}%`).join(' ')} (${windows.map((w) => w.all).join('/')} connections), up at ${String(up.time ?? '')}`,
      );
      for (const w of windows) expect(w.all).toBeGreaterThanOrEqual(5);
      expect(shares[0]!).toBeLessThan(0.2);
      for (let k = 1; k < shares.length; k++) expect(shares[k]!).toBeGreaterThanOrEqual(shares[k - 1]! - 0.02);
      // The last window (10 s to 12 s after it came up) is at its weight: a third.
      expect(Math.abs(shares[5]! - 1 / 3)).toBeLessThanOrEqual(0.06);
      const full = await mapShares(lb);
      expect(full.be3).toBe(full.be1);
    });
  }, 120_000);

  it('panic: checks fail on every backend but traffic works; all of them keep serving and status says panic', async () => {
    const lab = await buildLab(3);
    const lb = lab.balancers[0]!;
    // An http check against an SMTP server fails (a banner is no HTTP status line) while
    // its TCP service works: checks broken, traffic fine, the case panic mode is for.
    const config = configFile(
      lab,
      'panic.yaml',
      `    panicThreshold: 50\n    check: { type: http, path: /health }\n${backendLines(lab)}`,
    );
    await loadRules(lb, config);
    await withDaemon(lb, config, async (daemon) => {
      const panic = await daemon.waitFor((l) => l.event === 'panic_started', 15_000);
      expect(panic.msg).toContain('below 50 %');
      await daemon.waitFor((l) => l.event === 'transition' && l.state === 'down' && l.backend === 'be3', 10_000);
      await untilShares(lb, only('be1', 'be2', 'be3'));
      const served = await connect(lab, 60);
      expect(served.failures).toEqual([]);
      for (const be of ['be1', 'be2', 'be3']) within(served.answers[be], 20, 3);
      // status: the state file is written periodically; wait for one that shows the panic.
      const status = async (...args: string[]) => lb.exec([process.execPath, BIN, 'status', '-c', config, ...args]);
      const deadline = performance.now() + 10_000;
      let text = await status();
      while (!text.stdout.includes('PANIC') && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        text = await status();
      }
      expect(text.stdout).toContain('svc: PANIC');
      expect(text.stdout).toMatch(/SHARE/);
      expect(text.code).toBe(2);
      const json = JSON.parse((await status('--json')).stdout) as {
        backends: { backend: string; state: string; share?: { mode: string; slots: number; of: number } }[];
      };
      for (const b of json.backends) {
        expect(b.state).toBe('down');
        expect(b.share?.mode).toBe('panic');
        expect(b.share!.slots * 3).toBe(b.share!.of);
      }
    });
  }, 120_000);

  it('200 state changes under load: no connection refused or sent to a backend that is out', async () => {
    const lab = await buildLab(3);
    const lb = lab.balancers[0]!;
    // The test decides each backend's state: a rule in the backend refuses the balancer's
    // checks (the clients' connections still pass), and its server stops accepting only
    // once the kernel no longer sends it anything; it accepts again before its checks pass.
    const failChecks = (i: number, fail: boolean) =>
      lab.backends[i]!.run(
        ['nft', '-f', '-'],
        fail
          ? `add rule inet chk in ip saddr 10.202.${11 + i}.1 tcp dport 25 reject with tcp reset\n`
          : 'flush chain inet chk in\n',
      );
    for (const be of lab.backends)
      await be.run(
        ['nft', '-f', '-'],
        'table inet chk {\n\tchain in {\n\t\ttype filter hook input priority 0;\n\t}\n}\n',
      );
    const config = configFile(
      lab,
      'churn.yaml',
      `    check: { type: tcp }\n${backendLines(lab)}`,
      // fall 3: the lone live backend of a moment must not time out of service on a busy machine.
      '{ interval: 200ms, fastInterval: 50ms, timeout: 400ms, rise: 1, fall: 3 }',
    );
    // Debug: the loop logs each table write (table_written), which the lanes wait for.
    writeFileSync(config, readFileSync(config, 'utf8').replace('level: info', 'level: debug'));
    await loadRules(lb, config);
    const daemon = startDaemon(lb, config);
    // "listening" and "closed" lines per server: a signal's effect is awaited before the next.
    const acks = [0, 0, 0];
    lab.servers.forEach((child, i) => {
      child!.stdout!.on('data', (c: Buffer) => {
        acks[i]! += c.toString().split(/listening|closed/).length - 1;
      });
    });
    const signal = async (i: number, name: NodeJS.Signals) => {
      const before = acks[i]!;
      lab.servers[i]!.kill(name);
      await waitUntil(
        () => acks[i]!,
        (n) => n > before,
      );
    };
    let finished = false;
    let churning = true;
    const totals: Connections = { answers: {}, failures: [] };
    const load = (async () => {
      while (churning) {
        const r = await connect(lab, 'for:2000');
        for (const [k, n] of Object.entries(r.answers)) totals.answers[k] = (totals.answers[k] ?? 0) + n;
        totals.failures.push(...r.failures);
      }
    })();
    try {
      await daemon.waitFor((l) => l.event === 'ready');
      // Three lanes, one per backend, flip their backend down and up concurrently; a lane
      // takes its backend down only while another is live (decided before any await).
      const live = [true, true, true];
      let changes = 0;
      const landed = async (i: number, up: boolean, from: number) => {
        const name = `be${i + 1}`;
        const changed = await daemon.waitFor(
          (l) => l.event === 'table_changed' && l.backend === name && l.msg.includes(up ? 'is up' : 'is down'),
          10_000,
          from,
        );
        await daemon.waitFor((l) => l.event === 'table_written', 10_000, daemon.lines.indexOf(changed));
        await untilShares(lb, (s) => (up ? (s[name] ?? 0) > 0 : s[name] === undefined));
      };
      const lane = async (i: number) => {
        while (changes < 200) {
          const from = daemon.lines.length;
          if (live[i] && live.filter(Boolean).length > 1) {
            live[i] = false;
            await failChecks(i, true);
            await landed(i, false, from);
            await signal(i, 'SIGUSR1');
          } else if (!live[i]) {
            await signal(i, 'SIGUSR2');
            await failChecks(i, false);
            await landed(i, true, from);
            live[i] = true;
          } else {
            await new Promise((r) => setTimeout(r, 20));
            continue;
          }
          changes++;
        }
      };
      await Promise.all([0, 1, 2].map(lane));
      churning = false;
      await load;
      const served = Object.values(totals.answers).reduce((a, b) => a + b, 0);
      console.log(
        `churn: ${changes} state changes, ${served} connections served (${JSON.stringify(totals.answers)}), ${totals.failures.length} failed`,
      );
      expect(totals.failures).toEqual([]);
      expect(served).toBeGreaterThanOrEqual(100);
      for (const be of ['be1', 'be2', 'be3']) expect(totals.answers[be] ?? 0).toBeGreaterThan(0);
      finished = true;
    } finally {
      churning = false;
      await load.catch(() => undefined);
      const code = await daemon.stop();
      if (finished) expect(code).toBe(0);
    }
  }, 600_000);
});
