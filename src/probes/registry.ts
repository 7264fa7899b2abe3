import { z } from 'zod';
import { execProbe } from './exec.js';
import { expectProbe } from './expect.js';
import { httpProbe } from './http.js';
import { httpsProbe } from './https.js';
import { ftpProbe, imapProbe, lmtpProbe, pop3Probe, redisProbe, sshProbe } from './presets.js';
import { smtpProbe } from './smtp.js';
import { tcpProbe } from './tcp.js';
import { tlsProbe } from './tls.js';
import type { ProbeTarget, ProbeVerdict } from './types.js';

/**
 * Every check type the daemon knows, picked by `type`. Adding a check is one file
 * exporting a ProbeDefinition plus one line in each list below.
 */
export const checkSchema = z.discriminatedUnion('type', [
  tcpProbe.schema,
  smtpProbe.schema,
  httpProbe.schema,
  tlsProbe.schema,
  httpsProbe.schema,
  expectProbe.schema,
  execProbe.schema,
  pop3Probe.schema,
  imapProbe.schema,
  ftpProbe.schema,
  sshProbe.schema,
  redisProbe.schema,
  lmtpProbe.schema,
]);
export type CheckConfig = z.infer<typeof checkSchema>;
export type CheckType = CheckConfig['type'];

type Runners = {
  [K in CheckType]: (
    target: ProbeTarget,
    options: Extract<CheckConfig, { type: K }>,
    signal: AbortSignal,
  ) => Promise<ProbeVerdict>;
};

const runners: Runners = {
  tcp: tcpProbe.run,
  smtp: smtpProbe.run,
  http: httpProbe.run,
  tls: tlsProbe.run,
  https: httpsProbe.run,
  expect: expectProbe.run,
  exec: execProbe.run,
  pop3: pop3Probe.run,
  imap: imapProbe.run,
  ftp: ftpProbe.run,
  ssh: sshProbe.run,
  redis: redisProbe.run,
  lmtp: lmtpProbe.run,
};

export const checkTypes = Object.keys(runners) as CheckType[];

export function runCheckType(check: CheckConfig, target: ProbeTarget, signal: AbortSignal): Promise<ProbeVerdict> {
  const run = runners[check.type] as (t: ProbeTarget, o: CheckConfig, s: AbortSignal) => Promise<ProbeVerdict>;
  return run(target, check, signal);
}
