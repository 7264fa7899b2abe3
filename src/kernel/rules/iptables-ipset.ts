import { renderIptables } from './iptables.js';
import { iptablesProblems, markTable, RulesError, type RulesPlan } from './plan.js';

/** Lines of the ipset part start with this inside the iptables file, so one file carries both. */
export const IPSET_LINE_PREFIX = '#ipset ';

/**
 * `ipset restore` input: a hash:ip set per backend holding the service's VIP while
 * the backend is up. `create` of an existing set with `-exist` keeps its members.
 */
export function renderIpsetRestore(plan: RulesPlan): string[] {
  const lines: string[] = [];
  for (const s of plan.services) {
    for (const b of s.backends) {
      lines.push(`create ${b.ipset} hash:ip family ${s.family === 6 ? 'inet6' : 'inet'} hashsize 64 maxelem 4`);
      if (plan.initiallyUp) lines.push(`add ${b.ipset} ${s.vip}`);
    }
  }
  return lines;
}

/** `--format ipset`: only the sets, for `ipset restore -exist`. */
export function renderIpsetOnly(plan: RulesPlan, source: string): string {
  return [
    `# nf-healthd rules --format ipset (from ${source}): ipset restore -exist < THIS_FILE`,
    ...renderIpsetRestore(plan),
    '',
  ].join('\n');
}

/** `--format iptables-ipset`: the recipe with `-m set --match-set SET dst` for liveness. */
export function renderIptablesIpset(plan: RulesPlan, source: string): string {
  const problems = iptablesProblems(plan, 'ipset');
  if (problems.length > 0) throw new RulesError(problems);
  const header = [
    `# nf-healthd rules --format iptables-ipset (from ${source})`,
    '# A backend is up while its set holds the service VIP. Load the sets first, then the rules:',
    `#   sed -n 's/^${IPSET_LINE_PREFIX}//p' THIS_FILE | ipset restore -exist`,
    '#   iptables-restore < THIS_FILE',
    ...markTable(plan, (b) => `, set ${b.ipset}`),
    ...renderIpsetRestore(plan).map((l) => `${IPSET_LINE_PREFIX}${l}`),
  ];
  return renderIptables(plan, (b) => `-m set --match-set ${b.ipset} dst`, header);
}
