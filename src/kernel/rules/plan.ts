import net from 'node:net';
import { conditionName } from '../../config/names.js';
import { IPSET_DEFAULT_PREFIX, NFT_DEFAULTS, type NftFamily, nftIdentifierPattern } from '../../config/writers.js';
import type { Balancing, Plan } from '../../plan/compile.js';
import {
  formatMark,
  iptablesChain,
  MAX_BACKENDS_PER_SERVICE,
  MAX_SERVICES,
  MAX_SLOTS,
  nftChain,
  type PassiveCounterNames,
  weightedSlots,
  weightUnits,
} from '../../plan/kernel-names.js';
import { computeTable, type ServiceTable } from '../table.js';

/**
 * The rules' view of a Plan: what every format renders, with the problems that a
 * format cannot express (no vip, a host name to DNAT to, too many slots). The names
 * come from the Plan (src/plan/kernel-names.ts), so the rules and the writers agree.
 */

export { formatMark };

export interface PlannedBackend {
  name: string;
  address: string;
  port: number;
  /** Port to DNAT to when it differs from the service port, else undefined (address only). */
  dnatPort: number | undefined;
  weight: number;
  backup: boolean;
  mark: number;
  ipset: string;
  condition: string;
  /** Its passive counters (nft format), when its service has `passive`. */
  passive: PassiveCounterNames | undefined;
}

export interface PlannedService {
  name: string;
  vip: string;
  family: 4 | 6;
  port: number;
  /** The transport the rules match; the writers are per backend and do not care. */
  protocol: 'tcp' | 'udp';
  inInterface: string | undefined;
  chain: string;
  nftChain: string;
  backends: PlannedBackend[];
  /** Backend index for each slot of the split, interleaved (smooth weighted round robin). */
  slots: number[];
  /** Why the iptables split cannot hold these weights, if it cannot. */
  iptablesSplit: string | undefined;
  /** The nft slot table's shape and its initial content (every backend in its initial state). */
  balancing: Balancing;
  table: ServiceTable;
}

export interface RulesPlan {
  services: PlannedService[];
  /** The condition value that means up (xt_condition writer's upValue; 0 in the recipe). */
  conditionUpValue: 0 | 1;
  ipsetPrefix: string;
  nft: { table: string; family: NftFamily; set: string };
  /** Backends start up in freshly loaded sets, as condition files start at "up" in the recipe. */
  initiallyUp: boolean;
}

export class RulesError extends Error {
  override readonly name = 'RulesError';
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}

/** The rules' view of a Plan, or every reason it cannot be expressed. */
export function planRules(source: Plan): RulesPlan {
  const config = source.config;
  const problems: string[] = [];
  // The writer's names when it is the matching one, else the defaults: `rules` and `run` agree.
  const writer = config.writer;
  const initiallyUp = config.initialState !== 'down';
  const plan: RulesPlan = {
    services: [],
    conditionUpValue: writer.type === 'condition' ? writer.upValue : 0,
    ipsetPrefix: writer.type === 'ipset' ? writer.setPrefix : IPSET_DEFAULT_PREFIX,
    nft: writer.type === 'nft' ? { table: writer.table, family: writer.family, set: writer.set } : { ...NFT_DEFAULTS },
    initiallyUp,
  };
  if (config.services.length > MAX_SERVICES)
    problems.push(`${config.services.length} services: the marks number at most ${MAX_SERVICES}`);
  const ipsets = new Map<string, string>();
  const chains = new Map<string, string>();
  source.services.forEach((service) => {
    const where = `service ${service.name}`;
    if (service.vip === undefined) {
      problems.push(
        `${where} has no vip: the rules match on the service address, so it cannot be rendered (add "vip")`,
      );
      return;
    }
    const family = net.isIPv6(service.vip) ? 6 : 4;
    if (service.backends.length > MAX_BACKENDS_PER_SERVICE) {
      problems.push(
        `${where} has ${service.backends.length} backends: the marks have room for ${MAX_BACKENDS_PER_SERVICE} per service`,
      );
    }
    const weights = service.backends.map((b) => b.weight);
    const units = weightUnits(weights);
    const divisor = weights[0]! / units[0]!;
    const total = units.reduce((a, b) => a + b, 0);
    const iptablesSplit =
      total > MAX_SLOTS
        ? `${where}: weights ${weights.join(', ')} need ${total} slots (sum of the weights divided by their common divisor ${divisor}); the iptables split has at most ${MAX_SLOTS}: use smaller weights`
        : undefined;
    const chain = iptablesChain(service.name);
    const otherChain = chains.get(chain);
    if (otherChain) problems.push(`${where} and service ${otherChain} map to the same chain ${chain}: rename one`);
    chains.set(chain, service.name);
    const backends: PlannedBackend[] = service.backends.map((backend) => {
      const bwhere = `${where} backend ${backend.name}`;
      const kind = net.isIP(backend.address);
      if (kind === 0) problems.push(`${bwhere}: address ${backend.address} is a host name; DNAT needs an IP address`);
      else if (kind !== family)
        problems.push(`${bwhere}: address ${backend.address} is IPv${kind} but the vip ${service.vip} is IPv${family}`);
      const set = backend.kernel.ipset;
      const otherSet = ipsets.get(set);
      if (otherSet) problems.push(`${bwhere} and backend ${otherSet} map to the same ipset ${set}: rename one`);
      ipsets.set(set, backend.name);
      const port = backend.port;
      return {
        name: backend.name,
        address: backend.address,
        port,
        dnatPort: port === service.port ? undefined : port,
        weight: backend.weight,
        backup: backend.backup,
        mark: backend.kernel.mark,
        ipset: set,
        condition: backend.kernel.condition,
        passive: backend.passive,
      };
    });
    plan.services.push({
      name: service.name,
      vip: service.vip,
      family,
      port: service.port,
      protocol: service.protocol,
      inInterface: service.inInterface,
      chain,
      nftChain: nftChain(service.name),
      backends,
      slots: total <= MAX_SLOTS ? weightedSlots(units) : [],
      iptablesSplit,
      balancing: service.balancing,
      table: computeTable(service, () => ({ up: initiallyUp })),
    });
  });
  if (!nftIdentifierPattern.test(plan.nft.table))
    problems.push(`nft table name ${JSON.stringify(plan.nft.table)} is not an nft identifier`);
  if (!nftIdentifierPattern.test(plan.nft.set))
    problems.push(`nft set name ${JSON.stringify(plan.nft.set)} is not an nft identifier`);
  if (problems.length > 0) throw new RulesError(problems);
  return plan;
}

/** Checks only the iptables formats need. */
export function iptablesProblems(plan: RulesPlan, kind: 'condition' | 'ipset'): string[] {
  const problems: string[] = [];
  for (const s of plan.services) {
    if (s.iptablesSplit) problems.push(s.iptablesSplit);
    if (s.family === 6)
      problems.push(
        `service ${s.name}: vip ${s.vip} is IPv6; the iptables formats render IPv4 (iptables-restore) only: use --format nft`,
      );
    if (kind === 'condition') {
      for (const b of s.backends) {
        if (!conditionName.safeParse(b.condition).success) {
          problems.push(
            `service ${s.name} backend ${b.name}: "${b.condition}" cannot be a condition name (1 to 30 characters, no "/"): set "condition"`,
          );
        }
      }
    }
  }
  return problems;
}

/** Comment lines that tell an operator which mark is which backend (and its share of the split). */
export function markTable(
  plan: RulesPlan,
  extra: (b: PlannedBackend) => string,
  share: (s: PlannedService, b: PlannedBackend) => string = (s, b) =>
    `${s.slots.filter((i) => s.backends[i] === b).length}/${s.slots.length} of new ${s.protocol === 'udp' ? 'flows' : 'connections'}`,
): string[] {
  const lines: string[] = [];
  for (const s of plan.services) {
    const proto = s.protocol === 'tcp' ? '' : `/${s.protocol}`;
    lines.push(`# service ${s.name}: ${s.vip} port ${s.port}${proto}${s.inInterface ? ` on ${s.inInterface}` : ''}`);
    for (const b of s.backends)
      lines.push(`#   mark ${formatMark(b.mark)}: backend ${b.name} ${b.address}:${b.port}, ${share(s, b)}${extra(b)}`);
  }
  return lines;
}
