import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config/load.js';
import { renderRules } from '../src/kernel/rules/command.js';
import { parsePlan } from '../src/plan/load.js';
import { checkSchema } from '../src/probes/registry.js';
import { runCheck } from '../src/probes/run.js';
import type { ProbeResult } from '../src/probes/types.js';
import { BIN, type DaemonProcess, startDaemon, waitUntil } from './support/daemon.js';
import { A, dnsReply, ipv4, udpResponder } from './support/dns.js';
import { cleanupNetns, createNetns, link, loadIptablesIpset, type Netns, tempFolder } from './support/netns.js';
import { closedPort } from './support/servers.js';

// UDP services end to end: the dns and udp checks against loopback responders that
// misbehave on purpose, the rules in every format, and a DNS service on a real kernel
// (two dnsmasq resolvers in namespaces behind an nft balancer that the daemon drives).

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});

async function responder(answer: (request: Buffer) => Buffer[]) {
  const r = await udpResponder(answer);
  closers.push(r.close);
  return r;
}

const TIMEOUT = 1500;

function probe(check: unknown, port: number, timeout = TIMEOUT): Promise<ProbeResult> {
  return runCheck(checkSchema.parse(check), { service: 'dns', backend: 'r1', address: '127.0.0.1', port }, timeout);
}

const svcA = { type: 'dns', name: 'svc.test', recordType: 'A' } as const;

describe('dns check against a loopback responder', () => {
  it('sends one well-formed query and reads the answer', async () => {
    const r = await responder((q) => [dnsReply(q, { answers: [{ type: A, data: ipv4('192.0.2.7') }] })]);
    const result = await probe({ ...svcA, minAnswers: 1 }, r.port);
    expect(result).toMatchObject({ up: true, detail: 'NOERROR, 1 A answer (192.0.2.7)' });
    expect(r.received).toHaveLength(1);
    const query = r.received[0]!;
    expect(query.readUInt16BE(2)).toBe(0x0100); // a standard query, recursion desired
    expect(query.readUInt16BE(4)).toBe(1);
    // \x03svc\x04test\x00, type A, class IN
    expect(query.subarray(12).toString('hex')).toBe('03737663047465737400' + '0001' + '0001');
    expect(result.bytesRead).toBe(dnsReply(query, { answers: [{ type: A, data: ipv4('192.0.2.7') }] }).length);
  });

  it('the root SOA by default; a new ID and source port per check', async () => {
    const r = await responder((q) => [dnsReply(q, { answers: [{ type: 6, data: Buffer.alloc(22) }] })]);
    const first = await probe({ type: 'dns' }, r.port);
    const second = await probe({ type: 'dns' }, r.port);
    expect([first.detail, second.up]).toEqual(['NOERROR, 1 SOA answer', true]);
    for (const q of r.received) expect(q.subarray(12).toString('hex')).toBe('00' + '0006' + '0001');
    // Random IDs from random ports: the same pair twice is a 1 in 10^9 event, a counter is caught.
    const pairs = r.received.map((q, i) => `${q.readUInt16BE(0)}@${r.sources[i]}`);
    expect(new Set(pairs).size).toBe(2);
  });

  it('rcode: NOERROR by default, a list when asked; answers of the type asked are counted', async () => {
    const nx = await responder((q) => [dnsReply(q, { rcode: 3 })]);
    expect(await probe(svcA, nx.port)).toMatchObject({
      up: false,
      detail: 'NXDOMAIN, 0 A answers; expected rcode NOERROR',
    });
    expect(await probe({ ...svcA, rcode: ['NOERROR', 'NXDOMAIN'] }, nx.port)).toMatchObject({ up: true });
    const cname = await responder((q) => [dnsReply(q, { answers: [{ type: 5, data: Buffer.from([0]) }] })]);
    expect(await probe({ ...svcA, minAnswers: 1 }, cname.port)).toMatchObject({
      up: false,
      detail: 'NOERROR, 0 A answers; expected at least 1',
    });
    const servfail = await responder((q) => [dnsReply(q, { rcode: 2 })]);
    expect((await probe(svcA, servfail.port)).detail).toBe('SERVFAIL, 0 A answers; expected rcode NOERROR');
  });

  // Each hostile reply gets a verdict of its own well inside the timeout (the no-reply one
  // at it): nothing waits for a second datagram and nothing reads past the bound.
  const hostile: [string, (q: Buffer) => Buffer[], RegExp][] = [
    [
      'truncated packet',
      (q) => [dnsReply(q).subarray(0, 7)],
      /^malformed DNS reply: 7 bytes, shorter than the 12-byte header$/,
    ],
    [
      'answer section cut short',
      (q) => [dnsReply(q, { answers: [{ type: A, data: ipv4('192.0.2.1') }] }).subarray(0, -2)],
      /^malformed DNS reply: answer 1 of 1 cut short$/,
    ],
    [
      'ANCOUNT larger than the packet',
      (q) => [dnsReply(q, { ancount: 40 })],
      /^malformed DNS reply: a name runs past the end$/,
    ],
    [
      'wrong ID',
      (q) => [dnsReply(q, { id: q.readUInt16BE(0) ^ 0x5a5a })],
      /^DNS reply has ID \d+, the query had \d+: not our answer$/,
    ],
    [
      'wrong question',
      (q) => [dnsReply(q, { question: Buffer.from('05657669667804746573740000010001', 'hex') })],
      /^DNS reply is for another question: not our answer$/,
    ],
    ['a query instead of a reply', (q) => [q], /^DNS reply has the QR bit clear/],
    [
      'huge datagram',
      (q) => [Buffer.concat([dnsReply(q), Buffer.alloc(60_000)])],
      /^reply of 60\d\d\d bytes, more than the 512-byte bound$/,
    ],
    // A forged reply first, the real one right after: only the first datagram is read.
    [
      'spoofed reply ahead of the real one',
      (q) => [
        dnsReply(q, { id: q.readUInt16BE(0) ^ 1 }),
        dnsReply(q, { answers: [{ type: A, data: ipv4('192.0.2.1') }] }),
      ],
      /: not our answer$/,
    ],
  ];
  for (const [name, answer, detail] of hostile) {
    it(`hostile: ${name} is down at once`, async () => {
      const r = await responder(answer);
      const result = await probe(svcA, r.port, 5000);
      expect(result.up).toBe(false);
      expect(result.detail).toMatch(detail);
      expect(result.latencyMs).toBeLessThan(5000);
    });
  }

  it('hostile: no reply is down at the timeout', async () => {
    const r = await responder(() => []);
    const result = await probe(svcA, r.port, 500);
    expect(result).toMatchObject({ up: false, detail: 'timeout after 500ms (waiting for the reply)' });
    expect(result.latencyMs).toBeGreaterThanOrEqual(490);
    expect(r.received).toHaveLength(1);
  });

  it('a closed port is down from the ICMP port unreachable, not at the timeout', async () => {
    const port = await closedPort();
    const result = await probe(svcA, port, 5000);
    expect(result.detail).toBe(
      `waiting for the reply: port unreachable (ECONNREFUSED): nothing listens on UDP port ${port}`,
    );
    expect(result.latencyMs).toBeLessThan(5000);
  });

  it('config errors name the key', () => {
    expect(() => checkSchema.parse({ type: 'dns', name: 'bad..name' })).toThrow(/not a DNS name/);
    expect(() => checkSchema.parse({ type: 'dns', name: `${'a'.repeat(64)}.test` })).toThrow(/not a DNS label/);
    expect(() => checkSchema.parse({ type: 'dns', recordType: 'AXFR' })).toThrow(/recordType|expected one of/);
    expect(() => checkSchema.parse({ type: 'dns', rcode: 'OK' })).toThrow();
  });
});

describe('udp check against a loopback responder', () => {
  const echo = () => responder((q) => [Buffer.concat([Buffer.from('pong '), q])]);

  it('send text, expect text, hex or a pattern', async () => {
    const r = await echo();
    expect(await probe({ type: 'udp', send: 'ping\n', expect: 'pong' }, r.port)).toMatchObject({
      up: true,
      detail: '10 bytes: "pong ping?"',
    });
    expect(
      await probe({ type: 'udp', send: { hex: 'de ad be ef' }, expect: { hex: 'deadbeef' } }, r.port),
    ).toMatchObject({
      up: true,
    });
    expect(r.received[1]!.toString('hex')).toBe('deadbeef');
    expect(await probe({ type: 'udp', send: 'x', expect: { regex: '^pong x$' } }, r.port)).toMatchObject({ up: true });
    expect(await probe({ type: 'udp', send: 'x' }, r.port)).toMatchObject({ up: true });
  });

  it('a reply without the expected bytes, a huge one, none: down with the reason', async () => {
    const r = await echo();
    expect(await probe({ type: 'udp', send: 'x', expect: 'PONG' }, r.port)).toMatchObject({
      up: false,
      detail: 'expected a reply containing "PONG", got 6 bytes: "pong x"',
    });
    const big = await responder(() => [Buffer.alloc(20_000, 0x41)]);
    expect((await probe({ type: 'udp', send: 'x', maxBytes: 1024 }, big.port)).detail).toBe(
      'reply of 20000 bytes, more than the 1024-byte bound',
    );
    const silent = await responder(() => []);
    expect((await probe({ type: 'udp', send: 'x' }, silent.port, 300)).detail).toBe(
      'timeout after 300ms (waiting for the reply)',
    );
    expect(() => checkSchema.parse({ type: 'udp', send: { hex: 'abc' } })).toThrow(/even number of hex digits/);
    expect(() => checkSchema.parse({ type: 'udp', send: 'caf\u20ac' })).toThrow(/not one byte each/);
  });
});

describe('udp services in the config and the rules', () => {
  const yaml = (check: string) => `
writer: { type: nft }
services:
  - name: dns
    vip: 10.0.0.53
    port: 53
    protocol: udp
${check}    backends:
      - { name: r1, address: 192.168.0.1 }
      - { name: r2, address: 192.168.0.2, port: 5353 }
`;
  const checked = yaml('    check: { type: dns }\n');

  it('a udp service without a check is a config error at its protocol key', () => {
    let error: unknown;
    try {
      parsePlan(yaml(''), 'dns.yaml');
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message).toBe(
      'dns.yaml:7:15: services[0].protocol: a udp service has no default check: set "check" (dns, udp, exec, or a tcp check with a port) on the service or on backends r1, r2',
    );
    // A check on every backend is enough.
    expect(() =>
      parsePlan(yaml('').replace(/(address: [\d.]+)/g, '$1, check: { type: udp, send: x }'), 'dns.yaml'),
    ).not.toThrow();
  });

  it('every format matches UDP', () => {
    const plan = parsePlan(checked, 'dns.yaml');
    const nft = renderRules(plan, 'nft');
    expect(nft).toContain('\t\tip daddr 10.0.0.53 udp dport 53 jump svc_dns\n');
    expect(nft).toContain(
      '\t\tip daddr 10.0.0.53 udp dport 53 dnat ip to meta mark map { 0x101 : 192.168.0.1 . 53, 0x102 : 192.168.0.2 . 5353 }\n',
    );
    expect(nft).toContain('# service dns: 10.0.0.53 port 53/udp\n');
    expect(nft).toContain('1/2 of new flows');
    expect(nft).not.toMatch(/\btcp\b/);
    for (const format of ['iptables', 'iptables-ipset'] as const) {
      const text = renderRules(plan, format);
      expect(text).toContain('-A PREROUTING -d 10.0.0.53/32 -p udp -m udp --dport 53 -j nfh-dns\n');
      expect(text).toContain(
        '-A PREROUTING -d 10.0.0.53/32 -p udp -m udp --dport 53 -m mark --mark 0x102 -j DNAT --to-destination 192.168.0.2:5353\n',
      );
      expect(text).not.toMatch(/\btcp\b/);
    }
  });

  describe('the kernel parses them', () => {
    let ns: Netns;
    afterAll(() => cleanupNetns());
    it('nft -f and iptables-restore load the UDP rules', async () => {
      ns = createNetns('udprules');
      const plan = parsePlan(checked, 'dns.yaml');
      await ns.run(['nft', '-f', '-'], renderRules(plan, 'nft'));
      const listed = await ns.run(['nft', 'list', 'chain', 'inet', 'nfh', 'prerouting_nat']);
      expect(listed).toMatch(/ip daddr 10\.0\.0\.53 udp dport 53 dnat ip to meta mark map/);
      await loadIptablesIpset(ns, renderRules(plan, 'iptables-ipset'));
      expect(await ns.run(['iptables', '-t', 'nat', '-S', 'PREROUTING'])).toContain(
        '-A PREROUTING -d 10.0.0.53/32 -p udp -m udp --dport 53 -m mark --mark 0x101 -j DNAT --to-destination 192.168.0.1',
      );
    });
  });
});

// The DNS service on a real kernel. Client, balancer and two resolvers, each a
// namespace; the resolvers are dnsmasq (Debian's dnsmasq-base), each answering
// svc.test with its own address so an answer says which one served it.
const CLIENT = fileURLToPath(new URL('./support/dns-client.mjs', import.meta.url));
const VIP = '10.202.9.1';
const RESOLVERS = ['10.202.2.2', '10.202.3.2'] as const;
const ANSWERS = ['10.9.9.1', '10.9.9.2'] as const;
const TIMING = { interval: 500, fastInterval: 100, timeout: 300, rise: 2, fall: 2 };

interface Lab {
  client: Netns;
  balancer: Netns;
  resolvers: [Netns, Netns];
  dir: string;
  servers: (ChildProcess | undefined)[];
}

async function buildLab(): Promise<Lab> {
  const dir = tempFolder('nfh-udp-');
  const client = createNetns('dnsc');
  const balancer = createNetns('dnslb');
  const r1 = createNetns('dns1');
  const r2 = createNetns('dns2');
  await link(balancer, 'to-client', '10.202.1.1/24', client, 'eth0', '10.202.1.2/24');
  await link(balancer, 'to-r1', '10.202.2.1/24', r1, 'eth0', `${RESOLVERS[0]}/24`);
  await link(balancer, 'to-r2', '10.202.3.1/24', r2, 'eth0', `${RESOLVERS[1]}/24`);
  await balancer.run(['ip', 'addr', 'add', `${VIP}/32`, 'dev', 'lo']);
  await balancer.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  await client.run(['ip', 'route', 'add', 'default', 'via', '10.202.1.1']);
  await r1.run(['ip', 'route', 'add', 'default', 'via', '10.202.2.1']);
  await r2.run(['ip', 'route', 'add', 'default', 'via', '10.202.3.1']);
  const lab: Lab = { client, balancer, resolvers: [r1, r2], dir, servers: [] };
  await Promise.all([startResolver(lab, 0), startResolver(lab, 1)]);
  return lab;
}

/** dnsmasq in the foreground, no config file, no upstream: it answers svc.test itself. */
function startResolver(lab: Lab, i: 0 | 1): Promise<void> {
  const child = lab.resolvers[i].spawn([
    'dnsmasq',
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    '--bind-interfaces',
    `--listen-address=${RESOLVERS[i]}`,
    '--port=53',
    `--address=/svc.test/${ANSWERS[i]}`,
    `--pid-file=${path.join(lab.dir, `dnsmasq${i}.pid`)}`,
    '--user=root',
    '--log-facility=-',
  ]);
  lab.servers[i] = child;
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (c: string) => {
      err += c;
      // It binds its sockets before it says so.
      if (err.includes('started')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`dnsmasq ${i + 1} exited (${code}): ${err}`)));
  });
}

function stopResolver(lab: Lab, i: 0 | 1): void {
  lab.servers[i]!.kill('SIGKILL');
  lab.servers[i] = undefined;
}

/** `count` queries to the VIP, each from its own new local port (a new flow each). */
let nextPort = 20_000;
async function query(lab: Lab, count: number): Promise<{ answers: Record<string, number>; failures: string[] }> {
  const first = nextPort;
  nextPort += count;
  const out = await lab.client.run([
    process.execPath,
    CLIENT,
    VIP,
    '53',
    'svc.test',
    String(first),
    String(count),
    '2000',
  ]);
  return JSON.parse(out) as { answers: Record<string, number>; failures: string[] };
}

async function members(lab: Lab): Promise<[boolean, boolean]> {
  const listed = await lab.balancer.run(['nft', 'list', 'set', 'inet', 'nfh', 'up']);
  return [/\b0x0*101\b/.test(listed), /\b0x0*102\b/.test(listed)];
}

/** Polls the nft set until it holds exactly the backends `want` says are up. */
function until(lab: Lab, want: [boolean, boolean]): Promise<[boolean, boolean]> {
  return waitUntil(
    () => members(lab),
    (now) => now[0] === want[0] && now[1] === want[1],
    5000,
  );
}

const transition = (backend: string, state: string) => (l: Record<string, unknown>) =>
  l.event === 'transition' && l.backend === backend && l.state === state;

describe('a DNS service on a real kernel (namespaces, dnsmasq, nft)', () => {
  afterEach(() => cleanupNetns());

  it('split over two resolvers, failover to one, back, all down refused', async () => {
    const lab = await buildLab();
    const config = path.join(lab.dir, 'config.yaml');
    writeFileSync(
      config,
      `defaults: { interval: ${TIMING.interval}ms, fastInterval: ${TIMING.fastInterval}ms, timeout: ${TIMING.timeout}ms, rise: ${TIMING.rise}, fall: ${TIMING.fall} }
log: { level: info, format: json }
writer: { type: nft }
services:
  - name: dns
    vip: ${VIP}
    port: 53
    protocol: udp
    check: { type: dns, name: svc.test, recordType: A, minAnswers: 1 }
    backends:
      - { name: r1, address: ${RESOLVERS[0]} }
      - { name: r2, address: ${RESOLVERS[1]} }
`,
    );
    const rules = await lab.balancer.run([process.execPath, BIN, 'rules', '-c', config, '--format', 'nft']);
    expect(rules).toContain(`ip daddr ${VIP} udp dport 53 jump svc_dns`);
    await lab.balancer.run(['nft', '-f', '-'], rules);
    const probed = JSON.parse(await lab.balancer.run([process.execPath, BIN, 'probe', '-c', config, '--json'])) as {
      backend: string;
      up: boolean;
      detail: string;
    }[];
    expect(probed.map((r) => [r.backend, r.up, r.detail])).toEqual([
      ['r1', true, `NOERROR, 1 A answer (${ANSWERS[0]}), authoritative`],
      ['r2', true, `NOERROR, 1 A answer (${ANSWERS[1]}), authoritative`],
    ]);

    const daemon: DaemonProcess = startDaemon(['run', '-c', config], {}, lab.balancer.name);
    let finished = false;
    try {
      await daemon.waitForLine((l) => l.event === 'ready', 15_000);

      const both = await query(lab, 40);
      expect(both.failures).toEqual([]);
      expect(both.answers[ANSWERS[0]]).toBeGreaterThanOrEqual(12);
      expect(both.answers[ANSWERS[1]]).toBeGreaterThanOrEqual(12);

      let mark = daemon.lines.length;
      const stoppedAt = performance.now();
      stopResolver(lab, 0);
      const down = await daemon.waitForLine(transition('r1', 'down'), 10_000, mark);
      expect(String(down.reason)).toContain('port unreachable (ECONNREFUSED)');
      await until(lab, [false, true]);
      const failoverMs = performance.now() - stoppedAt;
      expect(await query(lab, 30)).toEqual({ answers: { [ANSWERS[1]]: 30 }, failures: [] });

      mark = daemon.lines.length;
      await startResolver(lab, 0);
      await daemon.waitForLine(transition('r1', 'up'), 10_000, mark);
      await until(lab, [true, true]);
      const again = await query(lab, 40);
      expect(again.failures).toEqual([]);
      expect(again.answers[ANSWERS[0]]).toBeGreaterThanOrEqual(12);
      expect(again.answers[ANSWERS[1]]).toBeGreaterThanOrEqual(12);

      // Both stopped: no mark, no DNAT; the balancer has nothing on port 53 and says so.
      mark = daemon.lines.length;
      stopResolver(lab, 0);
      stopResolver(lab, 1);
      await daemon.waitForLine((l) => l.event === 'service_down' && l.service === 'dns', 10_000, mark);
      await until(lab, [false, false]);
      expect(await query(lab, 5)).toEqual({ answers: {}, failures: Array(5).fill('ECONNREFUSED') });
      finished = true;
      console.log(
        `udp dns: ${both.answers[ANSWERS[0]]} of 40 to r1; failover ${Math.round(failoverMs)}ms from the stop to the set without r1`,
      );
    } finally {
      daemon.kill();
      const { code } = await daemon.exited;
      if (finished) expect(code).toBe(0);
    }
  }, 90_000);
});
