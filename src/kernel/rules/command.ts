import { EXIT } from '../../exit-codes.js';
import type { Plan } from '../../plan/compile.js';
import { renderIptablesCondition } from './iptables.js';
import { renderIpsetOnly, renderIptablesIpset } from './iptables-ipset.js';
import { renderNft } from './nft.js';
import { planRules, RulesError, type RulesPlan } from './plan.js';

export const RULES_FORMATS = ['iptables', 'iptables-ipset', 'ipset', 'nft'] as const;
export type RulesFormat = (typeof RULES_FORMATS)[number];

const renderers: Record<RulesFormat, (plan: RulesPlan, source: string) => string> = {
  iptables: renderIptablesCondition,
  'iptables-ipset': renderIptablesIpset,
  ipset: renderIpsetOnly,
  nft: renderNft,
};

/** The format that matches the config's writer, so `rules` and `run` agree by default. */
export function defaultFormat(plan: Plan): RulesFormat {
  const type = plan.writer.type;
  return type === 'ipset' ? 'iptables-ipset' : type === 'nft' ? 'nft' : 'iptables';
}

export function isRulesFormat(text: string): text is RulesFormat {
  return (RULES_FORMATS as readonly string[]).includes(text);
}

/** The ruleset as text, or a RulesError listing everything the scheme cannot express. */
export function renderRules(plan: Plan, format: RulesFormat): string {
  return renderers[format](planRules(plan), plan.source);
}

export { RulesError };

/** `nf-healthd rules`: the ruleset on stdout; 64 for an unknown format, 78 when the config cannot be expressed. */
export function printRules(
  io: { out: (t: string) => void; err: (t: string) => void },
  plan: Plan,
  format: string | undefined,
): number {
  const chosen = format ?? defaultFormat(plan);
  if (!isRulesFormat(chosen)) {
    io.err(
      `nf-healthd: unknown rules format '${chosen}' (expected ${RULES_FORMATS.join(', ')}). Try 'nf-healthd --help'.\n`,
    );
    return EXIT.usage;
  }
  let text: string;
  try {
    text = renderRules(plan, chosen);
  } catch (err) {
    if (!(err instanceof RulesError)) throw err;
    io.err(`${plan.source}: cannot render --format ${chosen}:\n${err.problems.map((p) => `  ${p}\n`).join('')}`);
    return EXIT.config;
  }
  io.out(text);
  return 0;
}
