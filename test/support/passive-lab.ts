import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createNetns, link, type Netns, startServer } from './netns.js';

/**
 * The passive-health lab (test/passive.test.ts, bench/passive.ts): a client, a balancer
 * holding the VIP with forwarding on, three backends running SMTP banner servers, and ways
 * to break a backend for real clients only (its probes from the balancer still pass).
 */

const BACKEND = fileURLToPath(new URL('./smtp-backend.mjs', import.meta.url));
const BURST = fileURLToPath(new URL('./burst-client.mjs', import.meta.url));

export interface PassiveLab {
  prefix: string;
  vip: string;
  client: Netns;
  balancer: Netns;
  backends: Netns[];
  /** The SMTP servers: SIGUSR1 stops accepting (the kernel then resets new connections), SIGUSR2 accepts again. */
  servers: ChildProcess[];
  /** The client subnet, `PREFIX.1.0/24`. */
  clientNet: string;
}

export interface Burst {
  startedAt: number;
  answers: Record<string, number>;
  failures: Record<string, number>;
  timeline: [number, string][];
}

/** Client `PREFIX.1.2`, backends `PREFIX.{2,3,4}.2` (banners backend1..3), the balancer `.1` on each link. */
export async function passiveLab(prefix: string, vip: string): Promise<PassiveLab> {
  const client = createNetns('pclient');
  const balancer = createNetns('plb');
  const backends = [createNetns('pbe1'), createNetns('pbe2'), createNetns('pbe3')];
  await link(balancer, 'to-client', `${prefix}.1.1/24`, client, 'eth0', `${prefix}.1.2/24`);
  for (const [i, b] of backends.entries())
    await link(balancer, `to-be${i + 1}`, `${prefix}.${i + 2}.1/24`, b, 'eth0', `${prefix}.${i + 2}.2/24`);
  await balancer.run(['ip', 'addr', 'add', `${vip}/32`, 'dev', 'lo']);
  await balancer.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  await client.run(['ip', 'route', 'add', 'default', 'via', `${prefix}.1.1`]);
  for (const [i, b] of backends.entries())
    await b.run(['ip', 'route', 'add', 'default', 'via', `${prefix}.${i + 2}.1`]);
  const started = backends.map((b, i) =>
    startServer(b, [process.execPath, BACKEND, '0.0.0.0', '25', `backend${i + 1} ESMTP`], `backend ${i + 1}`),
  );
  await Promise.all(started.map((s) => s.ready));
  const servers = started.map((s) => s.child);
  return { prefix, vip, client, balancer, backends, servers, clientNet: `${prefix}.1.0/24` };
}

/** Backend i (from 0) can no longer reach the client subnet; the balancer's own subnet still works. */
export const breakReturnRoute = (lab: PassiveLab, i: number) =>
  lab.backends[i]!.run(['ip', 'route', 'add', 'unreachable', lab.clientNet]);
export const restoreReturnRoute = (lab: PassiveLab, i: number) =>
  lab.backends[i]!.run(['ip', 'route', 'del', 'unreachable', lab.clientNet]);

/** Backend i answers the client subnet's connections with a TCP reset (and nobody else's). */
export const resetClients = (lab: PassiveLab, i: number) =>
  lab.backends[i]!.run(
    ['nft', '-f', '-'],
    `table inet clientreset {\n chain input {\n  type filter hook input priority filter; policy accept;\n  ip saddr ${lab.clientNet} tcp dport 25 reject with tcp reset\n }\n}\n`,
  );
export const stopResettingClients = (lab: PassiveLab, i: number) =>
  lab.backends[i]!.run(['nft', 'delete', 'table', 'inet', 'clientreset']);

/** `count` connections at once (or `rate:PER_S:FOR_MS`), each given `timeoutMs`. */
export async function burst(lab: PassiveLab, count: number | string, timeoutMs = 2000): Promise<Burst> {
  return JSON.parse(
    await lab.client.run([process.execPath, BURST, lab.vip, '25', String(count), String(timeoutMs)]),
  ) as Burst;
}

/** The balancer's config: one SMTP service on the VIP over the three backends, with `passive`. */
export function passiveYaml(
  lab: PassiveLab,
  o: { stateFile: string; passive: string; timing?: string; logLevel?: string; extra?: string },
): string {
  return `defaults: { ${o.timing ?? 'interval: 1s, fastInterval: 100ms, timeout: 1s, rise: 2, fall: 3'} }
log: { level: ${o.logLevel ?? 'info'}, format: json }
stateFile: ${o.stateFile}
writer: { type: nft }
${o.extra ? `${o.extra}\n` : ''}services:
  - name: mail
    vip: ${lab.vip}
    port: 25
    check: { type: smtp }
    passive: ${o.passive}
    backends:
${lab.backends.map((_, i) => `      - { name: mail${i + 1}, address: ${lab.prefix}.${i + 2}.2 }`).join('\n')}
`;
}
