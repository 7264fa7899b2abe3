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
