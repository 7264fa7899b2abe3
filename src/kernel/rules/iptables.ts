import {
  formatMark,
  iptablesProblems,
  markTable,
  type PlannedBackend,
  type PlannedService,
  RulesError,
  type RulesPlan,
} from './plan.js';

/** How a rule asks "is this backend up?": `-m condition ...` or `-m set ...`. */
export type LivenessMatch = (backend: PlannedBackend) => string;

/**
 * iptables-restore input in the recipe's shape, for N weighted backends:
 *
 * - mangle: a chain per service restores the connection's mark; a marked packet
 *   (an existing connection) returns, so only new connections reach the split;
 * - the split: one rule per slot, `-m statistic --mode nth --every S --packet P`
 *   FIRST in the rule so every slot's counter advances on every new connection in
 *   lockstep: exactly one slot fires per connection, slot k on the k-th of each S;
 *   it marks when its backend is up (and nothing marked before);
 * - fall-through: still unmarked (the chosen backend is down), the first live
 *   backend in config order takes it, as the recipe's third rule does;
 * - CONNMARK --save-mark keeps the choice for the connection;
 * - nat: DNAT by mark. No live backend: no mark, no DNAT, the balancer itself
 *   answers (connection refused, unless it listens there).
 */
export function renderIptables(plan: RulesPlan, live: LivenessMatch, header: string[]): string {
  const out: string[] = [
    ...header,
    "# When a backend fails, its slots' new connections fall through to the first live backend in config",
    '# order (earlier backends take more); the nft format with the nft writer spreads them over all live',
    '# backends by weight instead.',
    '*mangle',
  ];
  for (const s of plan.services) out.push(`:${s.chain} - [0:0]`);
  for (const s of plan.services) out.push(...serviceChain(s, live));
  for (const s of plan.services) out.push(`-A PREROUTING ${serviceMatch(s)} -j ${s.chain}`);
  out.push('COMMIT', '*nat');
  for (const s of plan.services) {
    for (const b of s.backends) {
      const to = b.dnatPort === undefined ? b.address : `${b.address}:${b.dnatPort}`;
      out.push(`-A PREROUTING ${serviceMatch(s)} -m mark --mark ${formatMark(b.mark)} -j DNAT --to-destination ${to}`);
    }
  }
  // iptables-restore wants the newline after the last COMMIT.
  out.push('COMMIT', '');
  return out.join('\n');
}

function serviceMatch(s: PlannedService): string {
  return `-d ${s.vip}/32${s.inInterface ? ` -i ${s.inInterface}` : ''} -p ${s.protocol} -m ${s.protocol} --dport ${s.port}`;
}

function serviceChain(s: PlannedService, live: LivenessMatch): string[] {
  const c = s.chain;
  const rules = [`-A ${c} -j CONNMARK --restore-mark`, `-A ${c} -m mark ! --mark 0x0 -j RETURN`];
  const every = s.slots.length;
  s.slots.forEach((bi, k) => {
    const b = s.backends[bi]!;
    // --packet P starts the counter at P; the rule fires when it wraps: slot k on connection k+1 of every S.
    const nth = every > 1 ? `-m statistic --mode nth --every ${every} --packet ${every - 1 - k} ` : '';
    rules.push(`-A ${c} ${nth}-m mark --mark 0x0 ${live(b)} -j MARK --set-mark ${formatMark(b.mark)}`);
  });
  if (s.backends.length > 1) {
    for (const b of s.backends)
      rules.push(`-A ${c} -m mark --mark 0x0 ${live(b)} -j MARK --set-mark ${formatMark(b.mark)}`);
  }
  rules.push(`-A ${c} -j CONNMARK --save-mark`);
  return rules;
}

/** `--format iptables`: xtables-addons' condition match, as in the recipe. */
export function renderIptablesCondition(plan: RulesPlan, source: string): string {
  const problems = iptablesProblems(plan, 'condition');
  if (problems.length > 0) throw new RulesError(problems);
  // The recipe's rules say `! --condition`: 0 means up. With upValue 1 the test is positive.
  const not = plan.conditionUpValue === 0 ? '! ' : '';
  const header = [
    `# nf-healthd rules --format iptables (from ${source})`,
    '# Needs xt_condition (xtables-addons). Load: iptables-restore < THIS_FILE',
    `# A backend is up while /proc/net/nf_condition/NAME holds ${plan.conditionUpValue}; the files start at 0 when the rules load.`,
    ...markTable(plan, (b) => `, condition ${b.condition}`),
  ];
  return renderIptables(plan, (b) => `-m condition ${not}--condition ${b.condition}`, header);
}
