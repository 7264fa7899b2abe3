import { z } from 'zod';
import { checkSchema } from '../probes/registry.js';
import { duration } from './duration.js';
import { address, conditionName, ipAddress, objectName, port } from './names.js';
import { operationsKeys } from './operations.js';
import { passiveSchema } from './passive.js';
import { writerSchema } from './writers.js';

export { address, conditionName, ipAddress, objectName, port };

const interfaceName = z
  .string()
  .regex(/^[A-Za-z0-9_.:@-]{1,15}$/, 'expected a network interface name (1 to 15 characters)');

/** Timing keys: settable in `defaults`, per service and per backend. */
const timing = {
  interval: duration
    .optional()
    .describe('Period between checks of a settled backend, start to start, less up to 10% of random jitter.'),
  fastInterval: duration
    .optional()
    .describe(
      'Period while a backend is changing state (a failure while up, a success while down); at most `interval`.',
    ),
  timeout: duration
    .optional()
    .describe(
      'One whole check: DNS, connect, TLS handshake and exchange. More than twice `interval` is refused (checks would fall behind).',
    ),
  rise: z.number().int().min(1).optional().describe('Consecutive successes that mark a down backend up.'),
  fall: z.number().int().min(1).optional().describe('Consecutive failures that mark an up backend down.'),
  /** Period between checks of a backend that has been down for at least this long (HAProxy's downinter); default: interval. */
  downInterval: duration
    .optional()
    .describe(
      "Period between checks of a backend that has been down for at least this long (HAProxy's downinter); default: `interval`. Shorter than `interval` is refused.",
    ),
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
  name: objectName.describe(
    "The backend's name, unique across the config: 1 to 63 of `A-Za-z0-9_.-`, starting with a letter or digit. It names the backend in logs, metrics, hooks and the rules.",
  ),
  address: address.describe(
    'IPv4 address, IPv6 address or host name the check connects to (and, for `rules`, the DNAT target: an address).',
  ),
  port: port
    .optional()
    .describe(
      "The traffic port: where the DNAT goes, and the checks unless one sets its own `port`; default: the service's `port`.",
    ),
  condition: conditionName
    .optional()
    .describe(
      "Condition writer: the condition name (the file in `writer.dir`); default: the backend's name. 1 to 30 printable characters, no `/`, not `.` or `..` (the kernel's rules).",
    ),
  weight: z
    .number()
    .int()
    .min(1)
    .max(1000)
    .default(1)
    .describe('Share of new connections in the rules `nf-healthd rules` prints.'),
  check: checkSchema.optional().describe("This backend's own check, replacing the service's (see the check types)."),
  /** Several checks instead of `check`: up only when every one passes. */
  checks: z
    .array(checkSchema)
    .min(1)
    .max(16)
    .optional()
    .describe("Several checks instead of `check`, replacing the service's: up only when every one passes."),
  ...timing,
  backup: z
    .boolean()
    .optional()
    .describe('A backup backend gets new connections only while no primary backend of its service is up.'),
  slowStart,
});

export const serviceSchema = z.strictObject({
  name: objectName.describe("The service's name, unique: 1 to 63 of `A-Za-z0-9_.-`, starting with a letter or digit."),
  vip: ipAddress
    .optional()
    .describe('The service address the rules match (needed by `rules`, and by the ipset writer, whose sets hold it).'),
  port: port.describe("The service port, and the backends' port unless they set their own."),
  /** `udp`: the rules match UDP; such a service needs an explicit check (a UDP port cannot be connect-checked). */
  protocol: z
    .enum(['tcp', 'udp'])
    .default('tcp')
    .describe(
      'The transport the rules balance. A `udp` service needs an explicit check: a UDP port cannot be connect-checked.',
    ),
  inInterface: interfaceName.optional().describe('The rules match only packets coming in on this interface.'),
  /** Default `tcp` unless `checks` is set (a `udp` service has no default). */
  check: checkSchema
    .optional()
    .describe(
      "The check for the service's backends; default `{type: tcp}` unless `checks` is set (a `udp` service has no default).",
    ),
  /** Several checks instead of `check`: up only when every one passes. */
  checks: z
    .array(checkSchema)
    .min(1)
    .max(16)
    .optional()
    .describe('Several checks instead of `check`: a backend is up only when every one passes.'),
  backends: z
    .array(backendSchema)
    .min(1, 'a service needs at least one backend')
    .describe('The backends new connections are spread over.'),
  /**
   * Flows deleted from conntrack when a backend goes down by health: `stale` (UDP flows and
   * unanswered SYNs, which would otherwise keep going to the dead backend), `all`
   * (established TCP too: its clients get a reset and reconnect elsewhere), or `none`.
   */
  reapOnDown: z
    .enum(['stale', 'all', 'none'])
    .default('stale')
    .describe(
      'Flows deleted when a backend goes down by health: `stale` (its UDP flows and unanswered SYNs), `all` (established TCP too: clients get a reset), `none` (docs/drain.md).',
    ),
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
  passive: passiveSchema.optional(),
});

export const logSchema = z.strictObject({
  level: z
    .enum(['error', 'warn', 'info', 'debug'])
    .default('info')
    .describe('The least severe level logged; successful checks log at `debug`.'),
  format: z
    .enum(['auto', 'json', 'journal', 'pretty'])
    .default('auto')
    .describe(
      '`json` lines; `journal`: the same with sd-daemon priority prefixes; `pretty`: one readable line per event; `auto`: journal when `JOURNAL_STREAM` is set, else json.',
    ),
});

export const configSchema = z.strictObject({
  defaults: z
    .strictObject({ ...timing, slowStart })
    .default({})
    .describe(
      "Timing for every backend; a service's or backend's own value wins (backend, then service, then defaults).",
    ),
  initialState: z
    .enum(['up', 'down', 'kernel'])
    .default('up')
    .describe(
      'State written for a backend at start when no state file is resumed: `kernel` adopts the value the writer holds now (unreadable or unset counts as up).',
    ),
  /** Checks in flight at once, across all backends. */
  concurrency: z
    .number()
    .int()
    .min(1)
    .max(65_536)
    .default(1000)
    .describe('Checks in flight at once, across all backends.'),
  writer: writerSchema
    .default({ type: 'condition', dir: '/proc/net/nf_condition', upValue: 0 })
    .describe('What the daemon drives in the kernel: condition files, ipset sets or an nft set.'),
  log: logSchema.default({ level: 'info', format: 'auto' }).describe('Logging: JSON lines on stdout.'),
  services: z
    .array(serviceSchema)
    .min(1, 'at least one service is needed')
    .describe('The balanced services and their backends.'),
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
