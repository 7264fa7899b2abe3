import { createHash } from 'node:crypto';
import path from 'node:path';
import { conditionName } from '../config/names.js';
import type { WriterConfig } from '../config/writers.js';

/**
 * The one owner of kernel naming: marks, condition names, set names, chains. Everything
 * here is derived from the config's order and names, so `nf-healthd rules` and the daemon
 * agree without extra keys, and everything is validated before it reaches a rule, a path
 * or a command line.
 */

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

/** One thing a writer flips for one backend: a condition file, a set element. */
export interface KernelKey {
  /** Unique per writer: the condition name, `SET VIP` for ipset, the mark for nft. */
  key: string;
  /** Where it lives, for operators: `/proc/net/nf_condition/mail1up`, `nft set inet nfh up element 0x101`. */
  label: string;
}

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

/** What the passive counters count per backend (docs/passive.md). */
export const PASSIVE_KINDS = ['new', 'answered', 'reset'] as const;
export type PassiveKind = (typeof PASSIVE_KINDS)[number];

/** The named nft counters of one backend's passive health, by what they count. */
export type PassiveCounterNames = Readonly<Record<PassiveKind, string>>;

/** `pn_0x101`, `pa_0x101`, `pr_0x101`: named nft counters, keyed by the backend's mark. */
export function passiveCounterNames(mark: number): PassiveCounterNames {
  const m = formatMark(mark);
  return { new: `pn_${m}`, answered: `pa_${m}`, reset: `pr_${m}` };
}

/** The nft map from backend mark to its counter of this kind (one map per kind for the whole table). */
export function passiveCounterMap(kind: PassiveKind): string {
  return `passive_${kind}`;
}

/** The ct label bit that marks a UDP flow whose first reply was counted (so each flow counts once). */
export const PASSIVE_REPLIED_LABEL = 1;

/** The nft map from slot to backend mark that the daemon keeps right (`rules --format nft` declares it). */
export function nftSlotMap(serviceName: string): string {
  return `slots_${serviceName}`;
}

/** Largest slot table: 65,537 is the Maglev paper's prime; a map that size costs seconds per nft listing. */
export const MAX_TABLE_SLOTS = 65_537;
/** lcm(1..6): up to six equal backends (and weights like 1:2:3) split exactly with roundrobin. */
const SLOT_QUANTUM = 60;
/** Primes for maglev's lookup table (it must be prime so every permutation visits every slot). */
const MAGLEV_PRIMES = [509, 1021, 2039, 4093, 8191, 16_381, 32_749, 65_537];

/**
 * Slots of a service's table. Each backend's share is off by less than one slot, so a
 * table of at least 100 × (weight sum / smallest weight) slots keeps every backend within
 * 1 % of its exact share, whichever backends are live. Roundrobin and random round that up
 * to a multiple of 60 (small live sets then split exactly); maglev takes the next prime of
 * its list. Past MAX_TABLE_SLOTS the split is coarser (planProblems says so).
 */
export function tableSlots(scheduler: 'roundrobin' | 'random' | 'maglev', weights: readonly number[]): number {
  const need = slotsNeeded(weights);
  if (scheduler === 'maglev') return MAGLEV_PRIMES.find((p) => p >= need) ?? MAX_TABLE_SLOTS;
  return Math.min(65_520, Math.ceil(need / SLOT_QUANTUM) * SLOT_QUANTUM);
}

/** Slots for every backend to be within 1 % of its exact share: 100 × weight sum / smallest weight. */
export function slotsNeeded(weights: readonly number[]): number {
  const units = weightUnits(weights);
  return Math.ceil((100 * units.reduce((a, b) => a + b, 0)) / Math.min(...units));
}

/** The jhash seed of a service: from its name, so two balancers with the same config hash alike. */
export function hashSeed(serviceName: string): number {
  return createHash('sha256').update(`nfh-seed:${serviceName}`).digest().readUInt32BE(0);
}

/** The condition a backend drives: its `condition`, else its name. */
export function conditionOf(backend: { name: string; condition?: string | undefined }): string {
  return backend.condition ?? backend.name;
}

/** The path of a condition file; the name is checked again right before it becomes a path. */
export function conditionPath(dir: string, name: string): string {
  if (!conditionName.safeParse(name).success) throw new Error(`refusing condition name ${JSON.stringify(name)}`);
  return path.join(dir, name);
}

/** The names one backend has in the kernel, whichever writer drives it. */
export interface BackendKernelNames {
  mark: number;
  condition: string;
  /** The ipset set for the configured prefix (the default prefix when the writer is not ipset). */
  ipset: string;
}

/** What the configured writer flips for a backend. `vip` is required by the Plan for ipset. */
export function kernelKey(writer: WriterConfig, names: BackendKernelNames, vip: string | undefined): KernelKey {
  switch (writer.type) {
    case 'condition':
      return { key: names.condition, label: path.join(writer.dir, names.condition) };
    case 'ipset': {
      const at = vip ?? '0.0.0.0';
      return { key: `${names.ipset} ${at}`, label: `ipset ${names.ipset} ${at}` };
    }
    case 'nft': {
      const mark = formatMark(names.mark);
      return { key: mark, label: `nft set ${writer.family} ${writer.table} ${writer.set} element ${mark}` };
    }
  }
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** Weights divided by their common divisor: the fewest slots that split exactly. */
export function weightUnits(weights: readonly number[]): number[] {
  const divisor = weights.reduce(gcd);
  return weights.map((w) => w / divisor);
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
