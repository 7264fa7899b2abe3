import { readFileSync } from 'node:fs';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import pLimit from 'p-limit';
import { ConfigError } from './config/load.js';
import { EXIT } from './exit-codes.js';
import { formatTable, hostPort } from './format.js';
import { printRules } from './kernel/rules/command.js';
import { setCommand } from './ops/set-command.js';
import { runStatus } from './ops/status-command.js';
import type { Plan } from './plan/compile.js';
import { loadPlan } from './plan/load.js';
import { checkLabel, runCheck } from './probes/run.js';
import { runDaemon } from './run-daemon.js';

export const DEFAULT_CONFIG = '/etc/nf-healthd/config.yaml';

export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const HELP = `nf-healthd: health checks that steer kernel (netfilter) load balancing

Usage:
  nf-healthd run    [-c FILE]          run the daemon
  nf-healthd check  [-c FILE]          validate the config (exit 0, or 78 with the errors)
  nf-healthd probe  [-c FILE] [--json] check every backend once, write nothing
                                       (exit 0 all up, 2 some down, 78 bad config)
  nf-healthd status [-c FILE] [--json] the running daemon's view of every backend
                                       (exit 0 all up, 2 some down, 3 not running or stale)
  nf-healthd rules  [-c FILE] [--format F]
                                       print the balancing ruleset for the kernel; F is
                                       iptables (xt_condition), iptables-ipset, ipset (the
                                       sets alone) or nft, by default the one writer.type
                                       drives (exit 78 when the config cannot be expressed)
  nf-healthd set SERVICE/BACKEND ready|drain|maint [--deadline DURATION] [-c FILE]
                                       tell the running daemon to drain a backend (no new
                                       connections), put it in maintenance (checks paused
                                       too) or make it ready again; waits for the kernel
                                       write (exit 0 applied, 3 not running, 65 unknown
                                       backend, 77 no permission on the control socket)

Options:
  -c, --config FILE   config file (default ${DEFAULT_CONFIG})
      --json          machine-readable output
      --format F      rules: the ruleset format
      --deadline D    set drain: delete the flows still open after D (30s, 5m)
  -h, --help          this text
  -V, --version       the version
`;

const OPTIONS = {
  config: { type: 'string', short: 'c', default: DEFAULT_CONFIG },
  json: { type: 'boolean', default: false },
  format: { type: 'string' },
  deadline: { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
  version: { type: 'boolean', short: 'V', default: false },
} satisfies ParseArgsConfig['options'];

export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
}

const stdio: Io = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };

function usage(io: Io, message: string): number {
  io.err(`nf-healthd: ${message}. Try 'nf-healthd --help'.\n`);
  return EXIT.usage;
}

/** Loads the config into a Plan or prints every problem; undefined on error. */
function load(io: Io, file: string): Plan | undefined {
  try {
    return loadPlan(file);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    io.err(`${err.message}\n`);
    return undefined;
  }
}

export async function main(argv: string[], io: Io = stdio): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    return usage(io, (err as Error).message.split('. ')[0]!.replace(/\.$/, ''));
  }
  const { values, positionals } = parsed;
  if (values.version) {
    io.out(`${version()}\n`);
    return EXIT.ok;
  }
  if (values.help) {
    io.out(HELP);
    return EXIT.ok;
  }
  const [command, ...rest] = positionals;
  if (command === undefined) return usage(io, 'a command is needed (run, check, probe)');
  if (command === 'set') return setCommand(io, values.config, rest, values.deadline);
  if (values.deadline !== undefined) return usage(io, '--deadline goes with set ... drain only');
  if (rest.length > 0) return usage(io, `unexpected argument '${rest[0]}'`);
  switch (command) {
    case 'check': {
      const plan = load(io, values.config);
      if (!plan) return EXIT.config;
      io.out(`${values.config}: OK (${plan.services.length} services, ${plan.backends.length} backends)\n`);
      return EXIT.ok;
    }
    case 'probe': {
      const plan = load(io, values.config);
      if (!plan) return EXIT.config;
      return probeAll(io, plan, values.json);
    }
    case 'rules': {
      const plan = load(io, values.config);
      if (!plan) return EXIT.config;
      return printRules(io, plan, values.format);
    }
    case 'status':
      return runStatus(io, values.config, values.json);
    case 'run': {
      const plan = load(io, values.config);
      if (!plan) return EXIT.config;
      return runDaemon(values.config, plan);
    }
    default:
      return usage(io, `unknown command '${command}'`);
  }
}

async function probeAll(io: Io, plan: Plan, json: boolean): Promise<number> {
  const limit = pLimit(plan.config.concurrency);
  const specs = plan.backends;
  const rows = await Promise.all(
    specs.map(async (spec) => {
      const result = await limit(() => runCheck(spec.checks, spec.probe, spec.timeout));
      // Where the checks went: a check with its own `port` probes that one, not the traffic port.
      const [port, ...more] = new Set(spec.probes.map((p) => p.port));
      return {
        service: spec.service,
        backend: spec.name,
        address: spec.address,
        port: port!,
        ...(more.length > 0 ? { ports: [port!, ...more] } : {}),
        type: checkLabel(spec.checks),
        ...result,
      };
    }),
  );
  if (json) {
    io.out(`${JSON.stringify(rows, null, 2)}\n`);
  } else {
    const table = [
      ['SERVICE', 'BACKEND', 'ADDRESS', 'TYPE', 'RESULT', 'LATENCY', 'DETAIL'],
      ...rows.map((r) => [
        r.service,
        r.backend,
        hostPort(r.address, r.port) + (r.ports ? `,${r.ports.slice(1).join(',')}` : ''),
        r.type,
        r.up ? 'up' : 'DOWN',
        `${Math.round(r.latencyMs)}ms`,
        r.detail,
      ]),
    ];
    for (const line of formatTable(table)) io.out(`${line}\n`);
  }
  return rows.every((r) => r.up) ? EXIT.ok : EXIT.down;
}
