import { formatMark, markTable, type PlannedService, RulesError, type RulesPlan } from './plan.js';

/**
 * A native nftables table for the same logic. nft cannot test a constant against a
 * set, so the split first sets a candidate mark (`numgen inc mod S map`), then asks
 * whether that mark is in the set of live marks; if not, the first live backend in
 * config order takes it; if none is live the mark goes back to 0 and nothing DNATs.
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
  }
  if (problems.length > 0) throw new RulesError(problems);
  const all = plan.services.flatMap((s) => s.backends.map((b) => formatMark(b.mark)));
  const t = '\t';
  const out: string[] = [
    `# nf-healthd rules --format nft (from ${source})`,
    `# A backend is up while its mark is in set ${family} ${table} ${set}. Load: nft -f THIS_FILE`,
    '# (replaces the whole table; the set starts as below until nf-healthd sets it right)',
    ...markTable(plan, () => ''),
    `table ${family} ${table}`,
    `delete table ${family} ${table}`,
    `table ${family} ${table} {`,
    `${t}set ${set} {`,
    `${t}${t}type mark`,
    ...(plan.initiallyUp && all.length > 0 ? [`${t}${t}elements = { ${all.join(', ')} }`] : []),
    `${t}}`,
    '',
    `${t}chain prerouting_mark {`,
    `${t}${t}type filter hook prerouting priority mangle; policy accept;`,
    ...plan.services.map((s) => `${t}${t}${serviceMatch(s)} jump ${s.nftChain}`),
    `${t}}`,
  ];
  for (const s of plan.services) {
    out.push('', `${t}chain ${s.nftChain} {`);
    const rule = (text: string) => out.push(`${t}${t}${text}`);
    rule('meta mark set ct mark');
    rule('meta mark != 0x0 return');
    if (s.slots.length === 1) rule(`meta mark set ${formatMark(s.backends[0]!.mark)}`);
    else
      rule(
        `meta mark set numgen inc mod ${s.slots.length} map { ${s.slots.map((bi, k) => `${k} : ${formatMark(s.backends[bi]!.mark)}`).join(', ')} }`,
      );
    for (const b of s.backends) rule(`meta mark != @${set} meta mark set ${formatMark(b.mark)}`);
    rule(`meta mark != @${set} meta mark set 0x0`);
    rule('ct mark set meta mark');
    out.push(`${t}}`);
  }
  out.push('', `${t}chain prerouting_nat {`, `${t}${t}type nat hook prerouting priority dstnat; policy accept;`);
  for (const s of plan.services) {
    const ip = s.family === 6 ? 'ip6' : 'ip';
    const to = s.backends.map((b) => `${formatMark(b.mark)} : ${b.address} . ${b.port}`).join(', ');
    // Address and port from one map (nft's own listing form); a mark missing from it (0: none live) means no DNAT.
    out.push(`${t}${t}${serviceMatch(s)} dnat ${ip} to meta mark map { ${to} }`);
  }
  out.push(`${t}}`, '}', '');
  return out.join('\n');
}

function serviceMatch(s: PlannedService): string {
  return `${s.inInterface ? `iifname "${s.inInterface}" ` : ''}${s.family === 6 ? 'ip6' : 'ip'} daddr ${s.vip} ${s.protocol} dport ${s.port}`;
}
