import { z } from 'zod';
import { port } from '../config/names.js';
import type { Conversation } from './conversation.js';
import { dnsProbe } from './dns.js';
import { isLean } from './engine.js';
import { execProbe } from './exec.js';
import { expectProbe } from './expect.js';
import { httpProbe } from './http.js';
import { httpsProbe } from './https.js';
import { oncePer } from './memo.js';
import { ftpProbe, imapProbe, lmtpProbe, pop3Probe, redisProbe, sshProbe } from './presets.js';
import { smtpProbe } from './smtp.js';
import { checkTarget } from './target.js';
import { tcpProbe } from './tcp.js';
import { tlsProbe } from './tls.js';
import type { ProbeTarget, ProbeVerdict } from './types.js';
import { udpProbe } from './udp.js';

/** Keys every check has, whatever its type. */
const common = {
  /** Probe this port instead of the backend's traffic port (HAProxy's `port`, keepalived's `connect_port`). */
  port: port
    .optional()
    .describe(
      "Probe this port instead of the backend's traffic port (HAProxy's `port`, keepalived's `connect_port`); default: the backend's `port`.",
    ),
};

/** Gives `extended` the description of `original` (`extend` drops it; the configuration reference shows it). */
function describedAs<T extends z.ZodType>(extended: T, original: z.ZodType): T {
  if (original.description !== undefined) z.globalRegistry.add(extended, { description: original.description });
  return extended;
}

/**
 * Every check type the daemon knows, picked by `type`, each with the common keys. Adding a
 * check is one file exporting a ProbeDefinition plus one line in each list below.
 */
export const checkSchema = z.discriminatedUnion('type', [
  describedAs(tcpProbe.schema.extend(common), tcpProbe.schema),
  describedAs(smtpProbe.schema.extend(common), smtpProbe.schema),
  describedAs(httpProbe.schema.extend(common), httpProbe.schema),
  describedAs(tlsProbe.schema.extend(common), tlsProbe.schema),
  describedAs(httpsProbe.schema.extend(common), httpsProbe.schema),
  describedAs(expectProbe.schema.extend(common), expectProbe.schema),
  describedAs(execProbe.schema.extend(common), execProbe.schema),
  describedAs(pop3Probe.schema.extend(common), pop3Probe.schema),
  describedAs(imapProbe.schema.extend(common), imapProbe.schema),
  describedAs(ftpProbe.schema.extend(common), ftpProbe.schema),
  describedAs(sshProbe.schema.extend(common), sshProbe.schema),
  describedAs(redisProbe.schema.extend(common), redisProbe.schema),
  describedAs(lmtpProbe.schema.extend(common), lmtpProbe.schema),
  describedAs(dnsProbe.schema.extend(common), dnsProbe.schema),
  describedAs(udpProbe.schema.extend(common), udpProbe.schema),
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
  dns: dnsProbe.run,
  udp: udpProbe.run,
};

export const checkTypes = Object.keys(runners) as CheckType[];

/** The checks that are conversations (scriptedProbe), by type. */
const scripts: {
  [K in CheckType]?: (options: Extract<CheckConfig, { type: K }>) => Conversation | undefined;
} = {
  tcp: tcpProbe.script,
  http: httpProbe.script,
  smtp: smtpProbe.script,
  expect: expectProbe.script,
  pop3: pop3Probe.script,
  imap: imapProbe.script,
  ftp: ftpProbe.script,
  ssh: sshProbe.script,
  redis: redisProbe.script,
  lmtp: lmtpProbe.script,
};

/** The check's conversation when the lean engine can run it (no TLS step), else undefined. */
export const leanConversation = oncePer((check: CheckConfig): Conversation | undefined => {
  const script = scripts[check.type] as ((o: CheckConfig) => Conversation | undefined) | undefined;
  const conversation = script?.(check);
  return conversation !== undefined && isLean(conversation) ? conversation : undefined;
});

export function runCheckType(check: CheckConfig, target: ProbeTarget, signal: AbortSignal): Promise<ProbeVerdict> {
  const run = runners[check.type] as (t: ProbeTarget, o: CheckConfig, s: AbortSignal) => Promise<ProbeVerdict>;
  return run(checkTarget(target, check), check, signal);
}
