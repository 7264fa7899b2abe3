import type { CheckConfig } from '../probes/registry.js';
import type { ProbeTarget } from '../probes/types.js';
import { writerTarget } from '../writers/registry.js';
import type { WriterTarget } from '../writers/types.js';
import { effectiveTiming, type Config, type EffectiveTiming } from './schema.js';

/** One backend with every default applied: what the scheduler and the probes use. */
export interface BackendSpec extends EffectiveTiming {
  /** `service/backend`: a backend's identity across reloads. */
  id: string;
  service: string;
  name: string;
  address: string;
  port: number;
  weight: number;
  check: CheckConfig;
  target: WriterTarget;
}

export function resolveBackends(config: Config): BackendSpec[] {
  return config.services.flatMap((service) =>
    service.backends.map((backend) => ({
      id: `${service.name}/${backend.name}`,
      service: service.name,
      name: backend.name,
      address: backend.address,
      port: backend.port ?? service.port,
      weight: backend.weight,
      check: backend.check ?? service.check,
      target: writerTarget(config.writer, service, backend),
      ...effectiveTiming(config.defaults, service, backend),
    })),
  );
}

export function probeTarget(spec: BackendSpec): ProbeTarget {
  return { service: spec.service, backend: spec.name, address: spec.address, port: spec.port };
}
