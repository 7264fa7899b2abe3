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
/** Slow start: a backend that comes up ramps its share from 10 % to its weight over this time (off unless set). */
const slowStart = duration
  .optional()
  .describe(
    'Slow start: after coming up, the backend ramps its share of new connections from 10 % to its weight over this time, in steps (off unless set).',
  );

export const SCHEDULERS = ['roundrobin', 'random', 'maglev'] as const;

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
  backup: z
    .boolean()
    .optional()
    .describe('A backup backend gets new connections only while no primary backend of its service is up.'),
  slowStart,
});

export const serviceSchema = z.strictObject({
  name: objectName,
  vip: ipAddress.optional(),
  port,
  protocol: z.enum(['tcp']).default('tcp'),
  inInterface: interfaceName.optional(),
  /** Default `tcp` unless `checks` is set. */
  check: checkSchema.optional(),
  /** Several checks instead of `check`: up only when every one passes. */
  checks: z.array(checkSchema).min(1).max(16).optional(),
  backends: z.array(backendSchema).min(1, 'a service needs at least one backend'),
  ...timing,
  scheduler: z
    .enum(SCHEDULERS)
    .optional()
    .describe(
      'How new connections are spread over the slot table: roundrobin (default, nft numgen inc), random (numgen random) or maglev (consistent hashing, see hash).',
    ),
  hash: z
    .enum(['source', 'flow'])
    .optional()
    .describe(
      'What maglev hashes: source (the client address, default: a client stays on its backend) or flow (addresses and ports).',
    ),
  panicThreshold: z
    .number()
    .min(0)
    .max(100)
    .optional()
    .describe(
      'Panic threshold in percent: when the live primary weight falls below it, new connections spread over every backend that is not administratively out, live or not.',
    ),
  slowStart,
});

export const logSchema = z.strictObject({
  level: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
  format: z.enum(['auto', 'json', 'journal', 'pretty']).default('auto'),
});

export const configSchema = z.strictObject({
  defaults: z.strictObject({ ...timing, slowStart }).default({}),
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
