import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import { RulesError, renderRules } from '../src/kernel/rules/command.js';
import { IPSET_LINE_PREFIX } from '../src/kernel/rules/iptables-ipset.js';
import { ipsetName, weightedSlots } from '../src/plan/kernel-names.js';
import { parsePlan } from '../src/plan/load.js';
import { cleanupNetns, createNetns, type Netns } from './support/netns.js';

const base = (writer = '', extra = '') => `
${writer}
${extra}
services:
  - name: mail
    vip: 10.0.0.1
    port: 25
    check: { type: smtp }
    backends:
      - { name: mail1, address: 192.168.0.1 }
      - { name: mail2, address: 192.168.0.2 }
`;

const three = `
writer: { type: nft }
services:
  - name: web
    vip: 10.0.0.2
    port: 80
    inInterface: eth1
    backends:
      - { name: web1, address: 192.168.1.1, weight: 2 }
      - { name: web2, address: 192.168.1.2, weight: 1 }
      - { name: web3, address: 192.168.1.3, port: 8080, weight: 1 }
  - name: v6
    vip: fd00::10
    port: 25
    backends:
      - { name: v6a, address: fd00::11 }
      - { name: v6b, address: fd00::12 }
`;

function render(yaml: string, format: Parameters<typeof renderRules>[1]): string {
  return renderRules(parsePlan(yaml, 'test.yaml'), format);
}

function problems(yaml: string, format: Parameters<typeof renderRules>[1]): string[] {
  try {
    render(yaml, format);
  } catch (err) {
    if (err instanceof RulesError) return err.problems;
    throw err;
  }
  throw new Error('rendered a config that should be refused');
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(args, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

describe('rules: text', () => {
  it('renders the recipe for the condition match, generalised and with --packet', () => {
    const text = render(base(), 'iptables');
    const lines = text.split('\n');
    expect(lines).toContain('-A nfh-mail -j CONNMARK --restore-mark');
    expect(lines).toContain('-A nfh-mail -m mark ! --mark 0x0 -j RETURN');
    // Two slots, one per backend, the statistic match first so both counters move together.
    expect(lines).toContain(
      '-A nfh-mail -m statistic --mode nth --every 2 --packet 1 -m mark --mark 0x0 -m condition ! --condition mail1 -j MARK --set-mark 0x101',
    );
    expect(lines).toContain(
      '-A nfh-mail -m statistic --mode nth --every 2 --packet 0 -m mark --mark 0x0 -m condition ! --condition mail2 -j MARK --set-mark 0x102',
    );
    // Fall-through to a live backend, as the recipe's third rule.
    expect(lines).toContain('-A nfh-mail -m mark --mark 0x0 -m condition ! --condition mail1 -j MARK --set-mark 0x101');
    expect(lines).toContain('-A nfh-mail -j CONNMARK --save-mark');
    expect(lines).toContain('-A PREROUTING -d 10.0.0.1/32 -p tcp -m tcp --dport 25 -j nfh-mail');
    expect(lines).toContain(
      '-A PREROUTING -d 10.0.0.1/32 -p tcp -m tcp --dport 25 -m mark --mark 0x102 -j DNAT --to-destination 192.168.0.2',
    );
    expect(text.endsWith('COMMIT\n')).toBe(true);
    expect(lines.filter((l) => l === 'COMMIT')).toHaveLength(2);
  });

  it('tests the condition positively when the writer says 1 means up, and uses the condition key', () => {
    const yaml = base('writer: { type: condition, upValue: 1 }').replace(
      '{ name: mail1, address: 192.168.0.1 }',
      '{ name: mail1, address: 192.168.0.1, condition: m1up }',
    );
    const text = render(yaml, 'iptables');
    expect(text).toContain('-m condition --condition m1up -j MARK --set-mark 0x101');
    expect(text).not.toContain('! --condition');
  });

  it('splits by weight in interleaved slots, DNATs to a backend port, matches the interface', () => {
    const text = render(three.replace(/ {2}- name: v6[\s\S]*$/, ''), 'iptables-ipset');
    const slots = text.split('\n').filter((l) => l.includes('--mode nth'));
    expect(slots).toHaveLength(4);
    expect(slots.map((l) => l.match(/--set-mark (0x\w+)/)![1])).toEqual(['0x101', '0x102', '0x103', '0x101']);
    expect(slots.map((l) => l.match(/--packet (\d)/)![1])).toEqual(['3', '2', '1', '0']);
    expect(text).toContain('-m set --match-set nfh-web1 dst -j MARK --set-mark 0x101');
    expect(text).toContain(
      '-A PREROUTING -d 10.0.0.2/32 -i eth1 -p tcp -m tcp --dport 80 -m mark --mark 0x103 -j DNAT --to-destination 192.168.1.3:8080',
    );
    expect(text).toContain(`${IPSET_LINE_PREFIX}create nfh-web3 hash:ip family inet hashsize 64 maxelem 4`);
    expect(text).toContain(`${IPSET_LINE_PREFIX}add nfh-web3 10.0.0.2`);
  });

  it('renders nft with a slot map per service, the live-mark set, a reset when nobody serves and a DNAT map', () => {
    const text = render(three, 'nft');
    expect(text).toContain('meta mark set numgen inc mod 420 map @slots_web');
    expect(text).toContain('\tmap slots_web {\n\t\ttypeof numgen inc mod 2 : meta mark\n');
    expect(text).toContain('elements = { 0 : 0x101, 1 : 0x102, 2 : 0x103, 3 : 0x101, 4 : 0x101,');
    expect(text).toContain('#   mark 0x101: backend web1 192.168.1.1:80, 210/420 slots');
    expect(text).toContain('elements = { 0x101, 0x102, 0x103, 0x201, 0x202 }');
    expect(text).toContain('meta mark 0x0 reject with tcp reset');
    expect(render(three.replace('port: 25', 'port: 25\n    scheduler: maglev'), 'nft')).toMatch(
      /meta mark set jhash ip6 saddr mod 509 seed 0x[0-9a-f]{8} map @slots_v6/,
    );
    expect(text).toContain(
      'iifname "eth1" ip daddr 10.0.0.2 tcp dport 80 dnat ip to meta mark map { 0x101 : 192.168.1.1 . 80, 0x102 : 192.168.1.2 . 80, 0x103 : 192.168.1.3 . 8080 }',
    );
    expect(text).toContain(
      'ip6 daddr fd00::10 tcp dport 25 dnat ip6 to meta mark map { 0x201 : fd00::11 . 25, 0x202 : fd00::12 . 25 }',
    );
  });

  it('starts the sets empty with initialState down', () => {
    const down = render(base('writer: { type: nft }', 'initialState: down'), 'nft');
    expect(down).not.toContain('elements = { 0x');
    // Nobody up: every slot says 0x0, which the chain answers with a reset.
    expect(down).not.toMatch(/\d+ : 0x(?!0\b)/);
    expect(down).toContain('#   mark 0x101: backend mail1 192.168.0.1:25, 0/240 slots');
    expect(render(base('writer: { type: ipset }', 'initialState: down'), 'ipset')).not.toContain('add ');
  });

  it('derives stable names: long ipset names get a hash, within 31 characters', () => {
    const long = 'a-very-long-backend-name-that-goes-on-and-on';
    const name = ipsetName('nfh-', long);
    expect(name.length).toBeLessThanOrEqual(31);
    expect(name).toBe(ipsetName('nfh-', long));
    expect(name).not.toBe(ipsetName('nfh-', `${long}2`));
    expect(weightedSlots([5, 1, 1])).toEqual([0, 0, 1, 0, 2, 0, 0]);
  });

  it('refuses what the scheme cannot express, saying why', () => {
    expect(problems(base().replace('vip: 10.0.0.1', ''), 'nft')).toEqual([
      expect.stringContaining('service mail has no vip'),
    ]);
    expect(problems(base().replace('192.168.0.2', 'mail2.example'), 'nft')).toEqual([
      expect.stringContaining('DNAT needs an IP address'),
    ]);
    expect(problems(three, 'iptables-ipset')).toEqual([expect.stringContaining('vip fd00::10 is IPv6')]);
    expect(problems(base().replace('192.168.0.1 }', '192.168.0.1, weight: 1000 }'), 'nft')).toEqual([
      expect.stringContaining('need 100100 slots to split within 1 %'),
    ]);
    expect(problems(base().replace('192.168.0.1 }', '192.168.0.1, weight: 1000 }'), 'iptables')).toEqual([
      expect.stringContaining('need 1001 slots'),
    ]);
    const longName = base('writer: { type: nft }').replace(
      'name: mail1,',
      'name: this-backend-name-is-too-long-for-xt,',
    );
    expect(problems(longName, 'iptables')).toEqual([expect.stringContaining('cannot be a condition name')]);
    expect(problems(three.replace('writer: { type: nft }', 'writer: { type: nft, family: ip }'), 'nft')).toEqual([
      expect.stringContaining('is IPv6 but the nft table family is ip'),
    ]);
  });
});

describe('rules: command line', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'nfh-rules-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('prints the format that matches the writer by default, and exits 78 on what it cannot render', async () => {
    const file = path.join(dir, 'nft.yaml');
    writeFileSync(file, base('writer: { type: nft }'));
    const ok = await cli(['rules', '-c', file]);
    expect(ok.code).toBe(0);
    expect(ok.out).toContain('table inet nfh {');
    const bad = path.join(dir, 'novip.yaml');
    writeFileSync(bad, base().replace('vip: 10.0.0.1', ''));
    const refused = await cli(['rules', '-c', bad, '--format', 'iptables']);
    expect(refused.code).toBe(78);
    expect(refused.out).toBe('');
    expect(refused.err).toContain('cannot render --format iptables');
    expect(refused.err).toContain('service mail has no vip');
    const unknown = await cli(['rules', '-c', file, '--format', 'pf']);
    expect(unknown.code).toBe(64);
    expect(unknown.err).toContain("unknown rules format 'pf'");
  });

  it('rejects an ipset writer config whose service has no vip', async () => {
    const file = path.join(dir, 'ipset-novip.yaml');
    writeFileSync(file, base('writer: { type: ipset }').replace('vip: 10.0.0.1', ''));
    const r = await cli(['check', '-c', file]);
    expect(r.code).toBe(78);
    expect(r.err).toContain('the ipset writer needs a vip');
  });
});

// The kernel's own parsers judge the output: iptables-restore --test and nft -c, in a
// namespace of our own. The condition variant needs xt_condition, which this kernel
// lacks: its text is checked above.
describe('rules: the kernel accepts them', () => {
  let ns: Netns;
  beforeAll(() => {
    ns = createNetns('rules');
  });
  afterAll(() => cleanupNetns());

  it('iptables-ipset: the sets load with ipset restore, the rules with iptables-restore', async () => {
    const text = render(
      three.replace(/ {2}- name: v6[\s\S]*$/, '').replace('type: nft', 'type: ipset'),
      'iptables-ipset',
    );
    const sets = text
      .split('\n')
      .filter((l) => l.startsWith(IPSET_LINE_PREFIX))
      .map((l) => l.slice(IPSET_LINE_PREFIX.length));
    await ns.run(['ipset', 'restore', '-exist'], `${sets.join('\n')}\n`);
    await ns.run(['iptables-restore', '--test'], text);
    await ns.run(['iptables-restore'], text);
    const saved = await ns.run(['iptables-save', '-t', 'mangle']);
    expect(saved).toContain('--match-set nfh-web2 dst');
    // Loading the sets twice keeps them (-exist): a reload at run time is safe.
    await ns.run(['ipset', 'restore', '-exist'], `${sets.join('\n')}\n`);
  });

  it('nft: nft -c accepts the table (inet, ip and ip6), and it loads twice in a row', async () => {
    const text = render(three, 'nft');
    await ns.run(['nft', '-c', '-f', '-'], text);
    await ns.run(['nft', '-f', '-'], text);
    await ns.run(['nft', '-f', '-'], text);
    const listed = await ns.run(['nft', 'list', 'table', 'inet', 'nfh']);
    expect(listed).toContain('numgen inc mod 4');
    const v4 = three.replace(/ {2}- name: v6[\s\S]*$/, '').replace('type: nft', 'type: nft, family: ip, table: lb');
    await ns.run(['nft', '-c', '-f', '-'], render(v4, 'nft'));
    const v6 = three
      .replace(/ {2}- name: web[\s\S]*?(?= {2}- name: v6)/, '')
      .replace('type: nft', 'type: nft, family: ip6');
    await ns.run(['nft', '-c', '-f', '-'], render(v6, 'nft'));
  });
});
