import { z } from 'zod';
import { httpProbe } from './http.js';
import { smtpProbe } from './smtp.js';
import { tcpProbe } from './tcp.js';
import type { ProbeTarget, ProbeVerdict } from './types.js';

/**
 * Every check type the daemon knows, picked by `type`. Adding a check is one file
 * exporting a ProbeDefinition plus one line in each list below.
 */
export const checkSchema = z.discriminatedUnion('type', [tcpProbe.schema, smtpProbe.schema, httpProbe.schema]);
export type CheckConfig = z.infer<typeof checkSchema>;
export type CheckType = CheckConfig['type'];

type Runners = { [K in CheckType]: (target: ProbeTarget, options: Extract<CheckConfig, { type: K }>, signal: AbortSignal) => Promise<ProbeVerdict> };

const runners: Runners = {
  tcp: tcpProbe.run,
  smtp: smtpProbe.run,
  http: httpProbe.run,
};

export const checkTypes = Object.keys(runners) as CheckType[];

export function runCheckType(check: CheckConfig, target: ProbeTarget, signal: AbortSignal): Promise<ProbeVerdict> {
  const run = runners[check.type] as (t: ProbeTarget, o: CheckConfig, s: AbortSignal) => Promise<ProbeVerdict>;
  return run(target, check, signal);
}
