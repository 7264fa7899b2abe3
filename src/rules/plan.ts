import { createHash } from 'node:crypto';
import net from 'node:net';
import { conditionName } from '../config/names.js';
import type { Config } from '../config/schema.js';

/**
 * The names and numbers the rules and the writers share: marks, chains, sets. All
 * derived from the config, so `nf-healthd rules` and the daemon agree without extra
 * keys. Everything here is validated before it reaches a rule or a command line.
 */

export const IPSET_DEFAULT_PREFIX = 'nfh-';
export const NFT_DEFAULTS = { table: 'nfh', family: 'inet', set: 'up' } as const;
export type NftFamily = 'inet' | 'ip' | 'ip6';

/** ipset's IPSET_MAXNAMELEN is 32 with the NUL. */
export const IPSET_NAME_MAX = 31;
/** xtables chain names: XT_EXTENSION_MAXNAMELEN 29 with the NUL. */
export const IPTABLES_CHAIN_MAX = 28;
/** One byte of the mark numbers the backends of a service. */
export const MAX_BACKENDS_PER_SERVICE = 255;
/** The other bytes number the services (mark 0 stays "not chosen yet"). */
export const MAX_SERVICES = 0xffffff;
/**
 * The split uses one slot per unit of weight (after dividing by the weights' common
 * divisor); iptables evaluates one rule per slot for every new connection.
 */
export const MAX_SLOTS = 256;

export const ipsetNamePattern = /^[A-Za-z0-9_.:-]{1,31}$/;
/** What nft's scanner accepts unquoted as a table, chain or set name (we stay within letters, digits, "_", ".", "-"). */
export const nftIdentifierPattern = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

/** Mark of backend `bi` of service `si` (both from 0): 0xSSSSBB, e.g. 0x101, 0x102, 0x201. */
export function backendMark(si: number, bi: number): number {
  return ((si + 1) << 8) | (bi + 1);
}

export function formatMark(mark: number): string {
  return `0x${mark.toString(16)}`;
}

/** A name that fits `max`: as is when short enough, else a prefix and a hash of the whole (stable, unique in practice). */
function fitName(prefix: string, name: string, max: number): string {
  const whole = `${prefix}${name}`;
  if (whole.length <= max) return whole;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${prefix}${name.slice(0, max - prefix.length - hash.length - 1)}-${hash}`;
}

/** The ipset set that holds the service's VIP while this backend is up. */
export function ipsetName(prefix: string, backendName: string): string {
  const name = fitName(prefix, backendName, IPSET_NAME_MAX);
  if (!ipsetNamePattern.test(name)) throw new Error(`refusing ipset name ${JSON.stringify(name)}`);
  return name;
}

export function iptablesChain(serviceName: string): string {
  return fitName('nfh-', serviceName, IPTABLES_CHAIN_MAX);
}

export function nftChain(serviceName: string): string {
  return `svc_${serviceName}`;
}

/** Index of a backend in its service and of the service in the config, for marks. */
export function markOf(
  services: readonly { name: string; backends: readonly { name: string }[] }[],
  serviceName: string,
  backendName: string,
): number {
  const si = services.findIndex((s) => s.name === serviceName);
  const bi = si < 0 ? -1 : services[si]!.backends.findIndex((b) => b.name === backendName);
  if (bi < 0) throw new Error(`no backend ${serviceName}/${backendName} in the config`);
  return backendMark(si, bi);
}

export interface PlannedBackend {
  name: string;
  address: string;
  port: number;
  /** Port to DNAT to when it differs from the service port, else undefined (address only). */
  dnatPort: number | undefined;
  weight: number;
  mark: number;
  ipset: string;
  condition: string;
}

export interface PlannedService {
  name: string;
  vip: string;
  family: 4 | 6;
  port: number;
  inInterface: string | undefined;
  chain: string;
  nftChain: string;
  backends: PlannedBackend[];
  /** Backend index for each slot of the split, interleaved (smooth weighted round robin). */
  slots: number[];
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

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** Slots in nginx's smooth weighted round-robin order: weights 2,1 give 0,1,0, not 0,0,1. */
export function weightedSlots(weights: readonly number[]): number[] {
  const total = weights.reduce((a, b) => a + b, 0);
  const current = weights.map(() => 0);
  const slots: number[] = [];
  for (let n = 0; n < total; n++) {
    let best = 0;
    for (let i = 0; i < weights.length; i++) {
      current[i]! += weights[i]!;
      if (current[i]! > current[best]!) best = i;
    }
    current[best]! -= total;
    slots.push(best);
  }
  return slots;
}

/** The rules' view of the config, or every reason it cannot be expressed. */
export function planRules(config: Config): RulesPlan {
  const problems: string[] = [];
  // The writer's names when it is the matching one, else the defaults: `rules` and `run` agree.
  const writer = config.writer;
  const plan: RulesPlan = {
    services: [],
    conditionUpValue: writer.type === 'condition' ? writer.upValue : 0,
    ipsetPrefix: writer.type === 'ipset' ? writer.setPrefix : IPSET_DEFAULT_PREFIX,
    nft: writer.type === 'nft' ? { table: writer.table, family: writer.family, set: writer.set } : { ...NFT_DEFAULTS },
    initiallyUp: config.initialState !== 'down',
  };
  if (config.services.length > MAX_SERVICES)
    problems.push(`${config.services.length} services: the marks number at most ${MAX_SERVICES}`);
  const ipsets = new Map<string, string>();
  const chains = new Map<string, string>();
  config.services.forEach((service, si) => {
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
    const divisor = weights.reduce(gcd);
    const units = weights.map((w) => w / divisor);
    const total = units.reduce((a, b) => a + b, 0);
    if (total > MAX_SLOTS) {
      problems.push(
        `${where}: weights ${weights.join(', ')} need ${total} slots (sum of the weights divided by their common divisor ${divisor}); the split has at most ${MAX_SLOTS}: use smaller weights`,
      );
    }
    const chain = iptablesChain(service.name);
    const otherChain = chains.get(chain);
    if (otherChain) problems.push(`${where} and service ${otherChain} map to the same chain ${chain}: rename one`);
    chains.set(chain, service.name);
    const backends: PlannedBackend[] = service.backends.map((backend, bi) => {
      const bwhere = `${where} backend ${backend.name}`;
      const kind = net.isIP(backend.address);
      if (kind === 0) problems.push(`${bwhere}: address ${backend.address} is a host name; DNAT needs an IP address`);
      else if (kind !== family)
        problems.push(`${bwhere}: address ${backend.address} is IPv${kind} but the vip ${service.vip} is IPv${family}`);
      const set = ipsetName(plan.ipsetPrefix, backend.name);
      const otherSet = ipsets.get(set);
      if (otherSet) problems.push(`${bwhere} and backend ${otherSet} map to the same ipset ${set}: rename one`);
      ipsets.set(set, backend.name);
      const port = backend.port ?? service.port;
      return {
        name: backend.name,
        address: backend.address,
        port,
        dnatPort: port === service.port ? undefined : port,
        weight: backend.weight,
        mark: backendMark(si, bi),
        ipset: set,
        condition: backend.condition ?? backend.name,
      };
    });
    plan.services.push({
      name: service.name,
      vip: service.vip,
      family,
      port: service.port,
      inInterface: service.inInterface,
      chain,
      nftChain: nftChain(service.name),
      backends,
      slots: total <= MAX_SLOTS ? weightedSlots(units) : [],
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

/** Comment lines that tell an operator which mark is which backend. */
export function markTable(plan: RulesPlan, extra: (b: PlannedBackend) => string): string[] {
  const lines: string[] = [];
  for (const s of plan.services) {
    const share = s.slots.length;
    lines.push(`# service ${s.name}: ${s.vip} port ${s.port}${s.inInterface ? ` on ${s.inInterface}` : ''}`);
    for (const b of s.backends) {
      const slots = s.slots.filter((i) => s.backends[i] === b).length;
      lines.push(
        `#   mark ${formatMark(b.mark)}: backend ${b.name} ${b.address}:${b.port}, ${slots}/${share} of new connections${extra(b)}`,
      );
    }
  }
  return lines;
}
