import type { Balancing } from '../../plan/compile.js';
import {
  MAX_TABLE_SLOTS,
  PASSIVE_KINDS,
  PASSIVE_REPLIED_LABEL,
  passiveCounterMap,
  slotsNeeded,
} from '../../plan/kernel-names.js';
import { formatMark, markTable, type PlannedService, RulesError, type RulesPlan } from './plan.js';

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/** Map elements per line in the rendered table. */
const ELEMENTS_PER_LINE = 10;

/** The expression that picks a slot for a new connection (nft's `numgen` or `jhash`). */
export function slotLookup(b: Balancing, family: 4 | 6, protocol: PlannedService['protocol']): string {
  const ip = family === 6 ? 'ip6' : 'ip';
  const mod = `mod ${b.slots}`;
  switch (b.scheduler) {
    case 'roundrobin':
      return `numgen inc ${mod}`;
    case 'random':
      return `numgen random ${mod}`;
    case 'maglev': {
      const seed = `seed 0x${b.seed.toString(16).padStart(8, '0')}`;
      const key =
        b.hash === 'flow' ? `${ip} saddr . ${protocol} sport . ${ip} daddr . ${protocol} dport` : `${ip} saddr`;
      return `jhash ${key} ${mod} ${seed}`;
    }
  }
}

/** `elements = { 0 : 0x101, ... }` lines of a slot map, wrapped. */
export function slotElements(slots: Uint32Array, indent: string): string[] {
  const items = Array.from(slots, (mark, k) => `${k} : ${formatMark(mark)}`);
  const lines: string[] = [];
  for (let i = 0; i < items.length; i += ELEMENTS_PER_LINE) {
    const part = items.slice(i, i + ELEMENTS_PER_LINE).join(', ');
    const first = i === 0;
    const last = i + ELEMENTS_PER_LINE >= items.length;
    lines.push(`${indent}${first ? 'elements = { ' : '             '}${part}${last ? ' }' : ','}`);
  }
  return lines;
}

/**
 * A native nftables table. Each service has a map from slot to backend mark that
 * nf-healthd keeps right: a new connection's slot comes from `numgen` (roundrobin,
 * random) or `jhash` (maglev), the map gives its backend's mark, conntrack keeps it.
 * A dead backend's slots are dealt to the live ones by weight (src/kernel/table.ts). A
 * slot mapped to 0x0 (nobody to serve) gets a TCP reset from the balancer. The set of
 * live marks records health for other rules and tools; the split does not consult it
 * (in panic mode the table serves backends that fail their checks).
 * The file replaces the table in one transaction (`table; delete table; table {...}`).
 */
export function renderNft(plan: RulesPlan, source: string): string {
  const { table, family, set } = plan.nft;
  const problems: string[] = [];
  for (const s of plan.services) {
    if (family === 'ip' && s.family === 6)
      problems.push(`service ${s.name}: vip ${s.vip} is IPv6 but the nft table family is ip: use family inet or ip6`);
    if (family === 'ip6' && s.family === 4)
      problems.push(`service ${s.name}: vip ${s.vip} is IPv4 but the nft table family is ip6: use family inet or ip`);
    const weights = s.backends.map((b) => b.weight);
    if (slotsNeeded(weights) > MAX_TABLE_SLOTS)
      problems.push(
        `service ${s.name}: weights ${weights.join(', ')} need ${slotsNeeded(weights)} slots to split within 1 %; the table has at most ${MAX_TABLE_SLOTS}: use closer weights`,
      );
  }
  if (problems.length > 0) throw new RulesError(problems);
  const all = plan.services.flatMap((s) => s.backends.map((b) => formatMark(b.mark)));
  const t = '\t';
  const out: string[] = [
    `# nf-healthd rules --format nft (from ${source})`,
    `# New connections pick a slot; map slots_SERVICE gives the slot's backend mark. nf-healthd rewrites`,
    "# the maps as backends come and go: a dead backend's slots go to the live ones by weight, and",
    '# back to it when it returns. Load: nft -f THIS_FILE (replaces the whole table; the maps and the',
    `# set ${family} ${table} ${set} of live marks start as below, every backend in its initial state).`,
    ...markTable(
      plan,
      () => '',
      (s, b) => {
        const slots = s.table.shares.get(b.name) ?? 0;
        const of = s.balancing.slots;
        const divisor = gcd(slots, of);
        const share =
          slots === 0
            ? ''
            : ` (${slots / divisor}/${of / divisor} of new ${s.protocol === 'udp' ? 'flows' : 'connections'})`;
        return `${slots}/${of} slots${share}${b.backup ? ' (backup)' : ''}`;
      },
    ),
    `table ${family} ${table}`,
    `delete table ${family} ${table}`,
    `table ${family} ${table} {`,
    `${t}set ${set} {`,
    `${t}${t}type mark`,
    ...(plan.initiallyUp && all.length > 0 ? [`${t}${t}elements = { ${all.join(', ')} }`] : []),
    `${t}}`,
  ];
  for (const s of plan.services) {
    out.push(
      '',
      `${t}map ${s.balancing.map} {`,
      `${t}${t}typeof numgen inc mod 2 : meta mark`,
      ...slotElements(s.table.slots, `${t}${t}`),
      `${t}}`,
    );
  }
  out.push(
    '',
    `${t}chain prerouting_mark {`,
    `${t}${t}type filter hook prerouting priority mangle; policy accept;`,
    ...plan.services.map((s) => `${t}${t}${serviceMatch(s)} jump ${s.nftChain}`),
    `${t}}`,
  );
  for (const s of plan.services) {
    out.push('', `${t}chain ${s.nftChain} {`);
    const rule = (text: string) => out.push(`${t}${t}${text}`);
    rule('meta mark set ct mark');
    rule('meta mark != 0x0 return');
    rule(`meta mark set ${slotLookup(s.balancing, s.family, s.protocol)} map @${s.balancing.map}`);
    // Nobody to serve: say so at once (a TCP reset; ICMP port unreachable for UDP) rather than let clients time out.
    rule(`meta mark 0x0 reject${s.protocol === 'tcp' ? ' with tcp reset' : ''}`);
    rule('ct mark set meta mark');
    // Passive health: one count per new connection, here where its backend is chosen (a
    // retransmitted SYN finds the ct mark set and returned above).
    if (s.backends.some((b) => b.passive)) rule(`counter name meta mark map @${passiveCounterMap('new')}`);
    out.push(`${t}}`);
  }
  out.push(...passiveLines(plan));
  out.push('', `${t}chain prerouting_nat {`, `${t}${t}type nat hook prerouting priority dstnat; policy accept;`);
  for (const s of plan.services) {
    const ip = s.family === 6 ? 'ip6' : 'ip';
    const to = s.backends.map((b) => `${formatMark(b.mark)} : ${b.address} . ${b.port}`).join(', ');
    // Address and port from one map (nft's own listing form).
    out.push(`${t}${t}${serviceMatch(s)} dnat ${ip} to meta mark map { ${to} }`);
  }
  out.push(`${t}}`, '}', '');
  return out.join('\n');
}

/**
 * Passive health (docs/passive.md): a counter per backend and kind, a map per kind from
 * mark to counter, and a forward-hook chain that counts what the backends send back. After
 * DNAT both directions of a balanced connection are forwarded; the reply direction is told
 * by conntrack and the backend by the connection's mark. A SYN-ACK answers a TCP connection,
 * a RST resets it; a UDP flow counts as answered at its first reply, once (a ct label bit).
 */
function passiveLines(plan: RulesPlan): string[] {
  const backends = plan.services.flatMap((s) => s.backends.filter((b) => b.passive));
  if (backends.length === 0) return [];
  const t = '\t';
  const out: string[] = [];
  for (const b of backends)
    for (const kind of PASSIVE_KINDS) out.push('', `${t}counter ${b.passive![kind]} {`, `${t}}`);
  for (const kind of PASSIVE_KINDS) {
    const elements = backends.map((b) => `${formatMark(b.mark)} : "${b.passive![kind]}"`).join(', ');
    out.push(
      '',
      `${t}map ${passiveCounterMap(kind)} {`,
      `${t}${t}type mark : counter`,
      `${t}${t}elements = { ${elements} }`,
      `${t}}`,
    );
  }
  const answered = passiveCounterMap('answered');
  const reset = passiveCounterMap('reset');
  out.push(
    '',
    `${t}chain passive_reply {`,
    `${t}${t}type filter hook forward priority filter; policy accept;`,
    `${t}${t}ct direction original return`,
    `${t}${t}ct mark 0x0 return`,
    `${t}${t}tcp flags & (syn | ack) == syn | ack counter name ct mark map @${answered}`,
    `${t}${t}tcp flags & rst == rst counter name ct mark map @${reset}`,
    `${t}${t}meta l4proto udp ct label ${PASSIVE_REPLIED_LABEL} return`,
    `${t}${t}meta l4proto udp ct label set ${PASSIVE_REPLIED_LABEL} counter name ct mark map @${answered}`,
    `${t}}`,
  );
  return out;
}

function serviceMatch(s: PlannedService): string {
  return `${s.inInterface ? `iifname "${s.inInterface}" ` : ''}${s.family === 6 ? 'ip6' : 'ip'} daddr ${s.vip} ${s.protocol} dport ${s.port}`;
}
