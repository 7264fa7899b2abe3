import type { CheckConfig } from '../probes/registry.js';
import type { ProbeTarget } from '../probes/types.js';
import { writerTarget } from '../writers/registry.js';
import type { WriterTarget } from '../writers/types.js';
import { type Config, type EffectiveTiming, effectiveTiming } from './schema.js';

/** One backend with every default applied: what the scheduler and the probes use. */
export interface BackendSpec extends EffectiveTiming {
  /** `service/backend`: a backend's identity across reloads. */
  id: string;
  service: string;
  name: string;
  address: string;
  port: number;
  weight: number;
  /** The first of `checks` (what a backend with one check has). */
  check: CheckConfig;
  /** Every check; the backend is up when all pass. */
  checks: CheckConfig[];
  target: WriterTarget;
}

/** A backend's own check(s), else its service's, else a TCP connect. */
function checksOf(
  service: Config['services'][number],
  backend: Config['services'][number]['backends'][number],
): CheckConfig[] {
  if (backend.checks) return backend.checks;
  if (backend.check) return [backend.check];
  if (service.checks) return service.checks;
  return [service.check ?? { type: 'tcp' }];
}

export function resolveBackends(config: Config): BackendSpec[] {
  return config.services.flatMap((service) =>
    service.backends.map((backend) => {
      const checks = checksOf(service, backend);
      return {
        check: checks[0]!,
        checks,
        id: `${service.name}/${backend.name}`,
        service: service.name,
        name: backend.name,
        address: backend.address,
        port: backend.port ?? service.port,
        weight: backend.weight,
        target: writerTarget(config.writer, service, backend, config.services),
        ...effectiveTiming(config.defaults, service, backend),
      };
    }),
  );
}

export function backendCount(config: Config): number {
  return config.services.reduce((n, s) => n + s.backends.length, 0);
}

export function probeTarget(spec: BackendSpec): ProbeTarget {
  return { service: spec.service, backend: spec.name, address: spec.address, port: spec.port };
}
