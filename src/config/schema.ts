import { z } from 'zod';
import { checkSchema } from '../probes/registry.js';
import { duration } from './duration.js';
import { address, conditionName, ipAddress, objectName, port } from './names.js';
import { operationsKeys } from './operations.js';
import { writerSchema } from './writers.js';

export { address, conditionName, ipAddress, objectName, port };

const interfaceName = z
  .string()
  .regex(/^[A-Za-z0-9_.:@-]{1,15}$/, 'expected a network interface name (1 to 15 characters)');

/** Timing keys: settable in `defaults`, per service and per backend. */
const timing = {
  interval: duration.optional(),
  fastInterval: duration.optional(),
  timeout: duration.optional(),
  rise: z.number().int().min(1).optional(),
  fall: z.number().int().min(1).optional(),
  /** Period between checks of a backend that has been down for at least this long (HAProxy's downinter); default: interval. */
  downInterval: duration.optional(),
};
export const TIMING_DEFAULTS = { interval: 2000, fastInterval: 500, timeout: 1500, rise: 2, fall: 3 } as const;

export const backendSchema = z.strictObject({
  name: objectName,
  address,
  port: port.optional(),
  condition: conditionName.optional(),
  weight: z.number().int().min(1).max(1000).default(1),
  check: checkSchema.optional(),
  /** Several checks instead of `check`: up only when every one passes. */
  checks: z.array(checkSchema).min(1).max(16).optional(),
  ...timing,
});

export const serviceSchema = z.strictObject({
  name: objectName,
  vip: ipAddress.optional(),
  port,
  /** `udp`: the rules match UDP; such a service needs an explicit check (a UDP port cannot be connect-checked). */
  protocol: z.enum(['tcp', 'udp']).default('tcp'),
  inInterface: interfaceName.optional(),
  /** Default `tcp` unless `checks` is set (a `udp` service has no default). */
  check: checkSchema.optional(),
  /** Several checks instead of `check`: up only when every one passes. */
  checks: z.array(checkSchema).min(1).max(16).optional(),
  backends: z.array(backendSchema).min(1, 'a service needs at least one backend'),
  /**
   * Flows deleted from conntrack when a backend goes down by health: `stale` (UDP flows and
   * unanswered SYNs, which would otherwise keep going to the dead backend), or `all`
   * (established TCP too: its clients get a reset and reconnect elsewhere), or `none`.
   */
  reapOnDown: z.enum(['stale', 'all', 'none']).default('stale'),
  ...timing,
});

export const logSchema = z.strictObject({
  level: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
  format: z.enum(['auto', 'json', 'journal', 'pretty']).default('auto'),
});

export const configSchema = z.strictObject({
  defaults: z.strictObject(timing).default({}),
  initialState: z.enum(['up', 'down', 'kernel']).default('up'),
  /** Checks in flight at once, across all backends. */
  concurrency: z.number().int().min(1).max(65_536).default(1000),
  writer: writerSchema.default({ type: 'condition', dir: '/proc/net/nf_condition', upValue: 0 }),
  log: logSchema.default({ level: 'info', format: 'auto' }),
  services: z.array(serviceSchema).min(1, 'at least one service is needed'),
  ...operationsKeys,
});

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.infer<typeof configSchema>;
export type ServiceConfig = z.infer<typeof serviceSchema>;
export type BackendConfig = z.infer<typeof backendSchema>;
type Timing = { [K in keyof typeof timing]?: number | undefined };
export type EffectiveTiming = { [K in keyof typeof timing]-?: number };

/** Backend value, else service value, else `defaults`, else the built-in default. */
export function effectiveTiming(defaults: Timing, service: Timing, backend: Timing): EffectiveTiming {
  const pick = (k: keyof typeof TIMING_DEFAULTS) => backend[k] ?? service[k] ?? defaults[k] ?? TIMING_DEFAULTS[k];
  const interval = pick('interval');
  const downInterval = backend.downInterval ?? service.downInterval ?? defaults.downInterval ?? interval;
  return {
    interval,
    fastInterval: pick('fastInterval'),
    timeout: pick('timeout'),
    rise: pick('rise'),
    fall: pick('fall'),
    downInterval,
  };
}
