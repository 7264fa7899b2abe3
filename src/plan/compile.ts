import { formatDuration } from '../config/duration.js';
import type { PathProblem } from '../config/load.js';
import { conditionName } from '../config/names.js';
import type { PassiveConfig } from '../config/passive.js';
import { type Config, type EffectiveTiming, effectiveTiming, type ServiceConfig } from '../config/schema.js';
import type { WriterConfig } from '../config/writers.js';
import { IPSET_DEFAULT_PREFIX } from '../config/writers.js';
import type { CheckConfig } from '../probes/registry.js';
import { checkTarget } from '../probes/target.js';
import type { ProbeTarget } from '../probes/types.js';
import {
  type BackendKernelNames,
  backendMark,
  conditionOf,
  hashSeed,
  ipsetName,
  type KernelKey,
  kernelKey,
  MAX_TABLE_SLOTS,
  nftSlotMap,
  type PassiveCounterNames,
  passiveCounterNames,
  slotsNeeded,
  tableSlots,
} from './kernel-names.js';

/** One backend with every default applied and every derived name: what the scheduler, probes and writers use. */
export interface BackendPlan extends EffectiveTiming {
  /** `service/backend`: a backend's identity across reloads. */
  readonly id: string;
  readonly service: string;
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly weight: number;
  /** Gets new connections only while no primary of its service is up. */
  readonly backup: boolean;
  /** Slow start ramp in ms; 0: off. */
  readonly slowStart: number;
  /** The first of `checks` (what a backend with one check has). */
  readonly check: CheckConfig;
  /** Every check; the backend is up when all pass. */
  readonly checks: readonly CheckConfig[];
  /** The backend's address and traffic port, built once: where its checks connect unless they have a `port`. */
  readonly probe: ProbeTarget;
  /** Where each of `checks` connects (same order): `probe`, or its address at the check's own `port`. */
  readonly probes: readonly ProbeTarget[];
  /** Its names in the kernel (mark, condition, ipset set). */
  readonly kernel: BackendKernelNames;
  /** What the configured writer flips for it. */
  readonly target: KernelKey;
  /** Its passive counters' names, when its service has `passive` (docs/passive.md). */
  readonly passive: PassiveCounterNames | undefined;
}

export interface ServicePlan {
  readonly name: string;
  readonly vip: string | undefined;
  readonly port: number;
  readonly protocol: ServiceConfig['protocol'];
  readonly inInterface: string | undefined;
  readonly backends: readonly BackendPlan[];
  readonly balancing: Balancing;
  /** Passive health with every default applied; undefined: off. */
  readonly passive: PassiveConfig | undefined;
}

/** How a service's slot table is built and looked up (src/kernel/table.ts). */
export interface Balancing {
  readonly scheduler: 'roundrobin' | 'random' | 'maglev';
  /** maglev only: what the balancer hashes. */
  readonly hash: 'source' | 'flow';
  /** Slots of the table (S in `mod S`). */
  readonly slots: number;
  /** jhash seed (maglev). */
  readonly seed: number;
  /** nft map slot -> mark. */
  readonly map: string;
  /** Percent of the primary weight below which the service panics; undefined: never. */
  readonly panicThreshold: number | undefined;
}

/** Everything derived from one validated config, computed once; a reload compiles a new one and diffs. */
export interface Plan {
  /** The file it came from, for messages and `rules` headers. */
  readonly source: string;
  readonly config: Config;
  readonly writer: WriterConfig;
  readonly services: readonly ServicePlan[];
  /** Every backend in config order. */
  readonly backends: readonly BackendPlan[];
  readonly byId: ReadonlyMap<string, BackendPlan>;
  /** Every TLS `ca` file the checks name: their trusted stores are built before the first check. */
  readonly caFiles: readonly string[];
}

function balancingOf(service: ServiceConfig): Balancing {
  const scheduler = service.scheduler ?? 'roundrobin';
  return {
    scheduler,
    hash: service.hash ?? 'source',
    slots: tableSlots(
      scheduler,
      service.backends.map((b) => b.weight),
    ),
    seed: hashSeed(service.name),
    map: nftSlotMap(service.name),
    panicThreshold: service.panicThreshold,
  };
}

/** A backend's own check(s), else its service's, else a TCP connect. */
function checksOf(service: ServiceConfig, backend: ServiceConfig['backends'][number]): CheckConfig[] {
  if (backend.checks) return backend.checks;
  if (backend.check) return [backend.check];
  if (service.checks) return service.checks;
  return [service.check ?? { type: 'tcp' }];
}

/** The `ca` files one check names, wherever its TLS options sit. */
function caFilesOf(check: unknown): string[] {
  if (typeof check !== 'object' || check === null) return [];
  return Object.entries(check).flatMap(([key, value]) =>
    key === 'ca' && typeof value === 'string' ? [value] : caFilesOf(value),
  );
}

/**
 * Config -> Plan. The config must have passed the schema and `planProblems`
 * (parsePlan/loadPlan do both); the result is frozen.
 */
export function compilePlan(config: Config, source: string): Plan {
  const writer = config.writer;
  const ipsetPrefix = writer.type === 'ipset' ? writer.setPrefix : IPSET_DEFAULT_PREFIX;
  const services = config.services.map((service, si): ServicePlan => {
    const backends = service.backends.map((backend, bi): BackendPlan => {
      const checks = checksOf(service, backend);
      const port = backend.port ?? service.port;
      const probe = Object.freeze({ service: service.name, backend: backend.name, address: backend.address, port });
      const kernel: BackendKernelNames = {
        mark: backendMark(si, bi),
        condition: conditionOf(backend),
        ipset: ipsetName(ipsetPrefix, backend.name),
      };
      return Object.freeze({
        id: `${service.name}/${backend.name}`,
        service: service.name,
        name: backend.name,
        address: backend.address,
        port,
        weight: backend.weight,
        backup: backend.backup ?? false,
        slowStart: backend.slowStart ?? service.slowStart ?? config.defaults.slowStart ?? 0,
        check: checks[0]!,
        checks,
        probe,
        probes: Object.freeze(checks.map((check) => checkTarget(probe, check))),
        kernel: Object.freeze(kernel),
        target: Object.freeze(kernelKey(writer, kernel, service.vip)),
        passive: service.passive ? Object.freeze(passiveCounterNames(kernel.mark)) : undefined,
        ...effectiveTiming(config.defaults, service, backend),
      });
    });
    return Object.freeze({
      name: service.name,
      vip: service.vip,
      port: service.port,
      protocol: service.protocol,
      inInterface: service.inInterface,
      backends: Object.freeze(backends),
      balancing: Object.freeze(balancingOf(service)),
      passive: service.passive ? Object.freeze({ ...service.passive }) : undefined,
    });
  });
  const backends = services.flatMap((s) => s.backends);
  return Object.freeze({
    source,
    config,
    writer,
    services: Object.freeze(services),
    backends: Object.freeze(backends),
    byId: new Map(backends.map((b) => [b.id, b])),
    caFiles: Object.freeze([...new Set(backends.flatMap((b) => b.checks.flatMap(caFilesOf)))]),
  });
}

/**
 * Name clashes across objects: duplicate service and backend names, a condition driven
 * twice. Runs on data that may be invalid elsewhere (so every error is reported at once),
 * so it trusts nothing about its shape.
 */
export function namingProblems(raw: unknown): PathProblem[] {
  const problems: PathProblem[] = [];
  const config = raw as { services?: unknown; writer?: { type?: unknown } };
  if (!Array.isArray(config?.services)) return problems;
  const byCondition = config.writer?.type === undefined || config.writer.type === 'condition';
  const services = new Map<string, string>();
  const backends = new Map<string, string>();
  const conditions = new Map<string, string>();
  config.services.forEach((service: { name?: unknown; backends?: unknown }, si) => {
    if (typeof service?.name === 'string') {
      const other = services.get(service.name);
      if (other)
        problems.push({
          path: ['services', si, 'name'],
          message: `duplicate service name "${service.name}" (also ${other})`,
        });
      else services.set(service.name, `services[${si}]`);
    }
    if (!Array.isArray(service?.backends)) return;
    service.backends.forEach((backend: { name?: unknown; condition?: unknown }, bi) => {
      const here = `services[${si}].backends[${bi}]`;
      const path = ['services', si, 'backends', bi];
      if (typeof backend?.name === 'string') {
        const other = backends.get(backend.name);
        if (other)
          problems.push({
            path: [...path, 'name'],
            message: `duplicate backend name "${backend.name}" (also ${other})`,
          });
        else backends.set(backend.name, here);
      }
      const condition = typeof backend?.condition === 'string' ? backend.condition : backend?.name;
      if (!byCondition || typeof condition !== 'string') return;
      const owner = conditions.get(condition);
      if (owner && owner !== backends.get(String(backend.name))) {
        problems.push({
          path: [...path, typeof backend.condition === 'string' ? 'condition' : 'name'],
          message: `condition "${condition}" is already driven by ${owner}`,
        });
      } else if (!owner) conditions.set(condition, here);
    });
  });
  return problems;
}

type TimingKey = keyof EffectiveTiming;

/** The rules that span several objects of a config that passed the schema. */
export function planProblems(config: Config): PathProblem[] {
  const problems: PathProblem[] = [];
  const both = 'set either check or checks, not both';
  config.services.forEach((service, si) => {
    const at = ['services', si];
    if (service.check && service.checks) problems.push({ path: [...at, 'checks'], message: both });
    // No default check for UDP: nothing answers a bare datagram in general (a connect check
    // has no UDP equivalent), and `dns` would be a guess that fails every non-DNS service.
    if (service.protocol === 'udp' && !service.check && !service.checks) {
      const unchecked = service.backends.filter((b) => !b.check && !b.checks).map((b) => b.name);
      if (unchecked.length > 0)
        problems.push({
          path: [...at, 'protocol'],
          message: `a udp service has no default check: set "check" (dns, udp, exec, or a tcp check with a port) on the service or on backend${unchecked.length === 1 ? '' : 's'} ${unchecked.join(', ')}`,
        });
    }
    if (config.writer.type === 'ipset' && service.vip === undefined) {
      problems.push({
        path: [...at, 'name'],
        message: 'the ipset writer needs a vip on every service: its sets hold the VIP while a backend is up',
      });
    }
    if (service.passive && config.writer.type !== 'nft') {
      problems.push({
        path: [...at, 'passive'],
        message: `passive needs the nft writer (this config uses ${config.writer.type}): the counters it reads are named nft counters, read and zeroed in one call (docs/passive.md)`,
      });
    }
    if (service.backends.every((b) => b.backup)) {
      problems.push({
        path: [...at, 'backends'],
        message:
          'every backend of this service is a backup: a backup stands in for primaries, so at least one must not be "backup: true"',
      });
    }
    if (service.hash !== undefined && (service.scheduler ?? 'roundrobin') !== 'maglev') {
      problems.push({
        path: [...at, 'hash'],
        message: `hash applies to the maglev scheduler only (this service uses ${service.scheduler ?? 'roundrobin'})`,
      });
    }
    const weights = service.backends.map((b) => b.weight);
    const exact = slotsNeeded(weights);
    // Only the nft writer keeps a table; the other writers' rules split by their own slots.
    if (config.writer.type === 'nft' && exact > MAX_TABLE_SLOTS) {
      problems.push({
        path: [...at, 'backends'],
        message: `weights ${Math.min(...weights)} to ${Math.max(...weights)} over ${weights.length} backends need ${exact} slots to split within 1 %; the table has at most ${MAX_TABLE_SLOTS}: use closer weights`,
      });
    }
    service.backends.forEach((backend, bi) => {
      const bat = [...at, 'backends', bi];
      if (backend.check && backend.checks) problems.push({ path: [...bat, 'checks'], message: both });
      if (
        backend.condition === undefined &&
        config.writer.type === 'condition' &&
        !conditionName.safeParse(backend.name).success
      ) {
        problems.push({
          path: [...bat, 'name'],
          message: 'this name cannot serve as a condition name (at most 30 characters): set "condition"',
        });
      }
      const t = effectiveTiming(config.defaults, service, backend);
      const whereSet = (key: TimingKey) =>
        backend[key] !== undefined
          ? [...bat, key]
          : service[key] !== undefined
            ? [...at, key]
            : config.defaults[key] !== undefined
              ? ['defaults', key]
              : bat;
      // Checks of one backend never overlap, so a timeout somewhat past the interval only
      // stretches the period (the recipe's own example has 3s against 2s); far past it, the
      // schedule is fiction.
      if (t.timeout > 2 * t.interval) {
        problems.push({
          path: whereSet('timeout'),
          message: `timeout ${formatDuration(t.timeout)} is longer than twice the interval (${formatDuration(t.interval)}) of backend ${backend.name}: checks would fall behind their schedule`,
        });
      }
      if (t.downInterval < t.interval) {
        problems.push({
          path: whereSet('downInterval'),
          message: `downInterval ${formatDuration(t.downInterval)} is shorter than interval ${formatDuration(t.interval)} for backend ${backend.name}: it is meant to check long-dead backends less often`,
        });
      }
      if (t.fastInterval > t.interval) {
        problems.push({
          path: whereSet('fastInterval'),
          message: `fastInterval ${formatDuration(t.fastInterval)} is longer than interval ${formatDuration(t.interval)} for backend ${backend.name}`,
        });
      }
    });
  });
  return problems;
}

export function backendCount(plan: Plan): number {
  return plan.backends.length;
}
