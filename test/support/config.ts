/** A daemon config for tests: one SMTP service on loopback, its backends on their own ports. */
export interface FarmConfig {
  /** The `defaults` flow mapping's inside: `interval: 300ms, fall: 2`. */
  timing: string;
  conditionDir: string;
  backends: { name: string; port: number }[];
  stateFile?: string;
  /** Extra top-level YAML lines. */
  extra?: string;
}

export function smtpFarmYaml(c: FarmConfig): string {
  return `defaults: {${c.timing}}
writer: {type: condition, dir: ${c.conditionDir}}
${c.stateFile ? `stateFile: ${c.stateFile}\n` : ''}${c.extra ? `${c.extra}\n` : ''}services:
  - name: mail
    port: 25
    check: {type: smtp}
    backends:
${c.backends.map((b) => `      - {name: ${b.name}, address: 127.0.0.1, port: ${b.port}}`).join('\n')}
`;
}

/** The smallest valid config the unit tests parse: one SMTP backend, a condition folder. */
export const MINIMAL_YAML = `writer: {type: condition, dir: /tmp/x}
services:
  - name: mail
    port: 25
    check: {type: smtp}
    backends:
      - {name: mail1, address: 192.0.2.1}
`;

/** Check timing in milliseconds, as the kernel tests keep it. */
export interface Timing {
  interval: number;
  fastInterval: number;
  timeout: number;
  rise: number;
  fall: number;
}

/** A balancer's config in the kernel tests: one SMTP service on a VIP, backends named mail1, mail2, ... */
export function balancedMailYaml(c: {
  timing: Timing;
  stateFile: string;
  /** The `writer:` value, e.g. `{ type: nft }`. */
  writer: string;
  vip: string;
  addresses: readonly string[];
  /** Extra top-level YAML lines. */
  extra?: string;
  /** Extra keys of the service, e.g. `{ scheduler: maglev, hash: flow }`. */
  service?: Record<string, string>;
}): string {
  const ms = (n: number) => `${n}ms`;
  const t = c.timing;
  return `defaults: { interval: ${ms(t.interval)}, fastInterval: ${ms(t.fastInterval)}, timeout: ${ms(t.timeout)}, rise: ${t.rise}, fall: ${t.fall} }
log: { level: info, format: json }
stateFile: ${c.stateFile}
writer: ${c.writer}
${c.extra ? `${c.extra}\n` : ''}services:
  - name: mail
    vip: ${c.vip}
    port: 25
${Object.entries(c.service ?? {})
  .map(([key, value]) => `    ${key}: ${value}\n`)
  .join('')}    check: { type: smtp }
    backends:
${c.addresses.map((a, i) => `      - { name: mail${i + 1}, address: ${a} }`).join('\n')}
`;
}

/** One SMTP service on a VIP with backends on loopback ports, for the fault tests' nft writer. */
export function loopbackMailYaml(c: {
  /** The `defaults` flow mapping's inside. */
  timing: string;
  /** The `writer:` value, e.g. `{ type: nft, commandTimeout: 3s }`. */
  writer: string;
  stateFile: string;
  backends: readonly { name: string; port: number }[];
  /** Extra top-level YAML lines. */
  extra?: string;
}): string {
  return `defaults: { ${c.timing} }
log: { level: debug, format: json }
writer: ${c.writer}
stateFile: ${c.stateFile}
${c.extra ? `${c.extra}\n` : ''}services:
  - name: mail
    vip: 10.0.0.1
    port: 25
    check: { type: smtp }
    backends:
${c.backends.map((b) => `      - { name: ${b.name}, address: 127.0.0.1, port: ${b.port} }`).join('\n')}
`;
}
