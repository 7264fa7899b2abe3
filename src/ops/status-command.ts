/**
 * `nf-healthd status [-c FILE] [--json]`: reads the daemon's state file and shows
 * each backend in one line. Exit 0 all up, 2 some down, 3 when the daemon is not
 * running or its state is stale (said in words on stderr).
 */
import { formatDuration } from '../config/duration.js';
import { ConfigError } from '../config/load.js';
import { STATE_FILE_DEFAULT } from '../config/operations.js';
import type { Config } from '../config/schema.js';
import { EXIT } from '../exit-codes.js';
import { formatTable } from '../format.js';
import { loadConfig } from '../plan/load.js';
import { type BackendSnapshot, type Snapshot, writePeriodOf } from './snapshot.js';
import { readStateFile } from './state-file.js';

export interface StatusIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

/** Why the state cannot be trusted as current, or undefined when it can. */
export function staleness(state: Snapshot, now: number): string | undefined {
  if (state.stoppedAt) return `nf-healthd is not running: it stopped at ${state.stoppedAt} (pid ${state.pid})`;
  const age = now - Date.parse(state.writtenAt);
  if (age > state.staleAfterMs) {
    return `nf-healthd is not running or stuck: its state file was last written ${ago(age)} ago (pid ${state.pid}), it is refreshed every ${formatDuration(writePeriodOf(state.staleAfterMs))}`;
  }
  return undefined;
}

function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}

/** The kernel-side value in the writer's own terms: `0` or `1` for conditions. */
function writtenValue(b: BackendSnapshot, config: Config | undefined): string {
  if (!b.written) return '-';
  let value: string = b.written.up ? 'up' : 'down';
  if (config?.writer.type === 'condition')
    value = String(b.written.up ? config.writer.upValue : 1 - config.writer.upValue);
  return b.written.confirmed ? value : `${value} (unconfirmed)`;
}

/** `33.3%` of the service's slots, or `-` without a balancing table. */
function shareText(b: BackendSnapshot): string {
  return b.share ? `${((100 * b.share.slots) / b.share.of).toFixed(1)}%` : '-';
}

/** One line per service whose table is not in its normal mode: panic, backups serving, resets. */
function serviceModes(state: Snapshot): string[] {
  const modes = new Map<string, string>();
  for (const b of state.backends) if (b.share && b.share.mode !== 'normal') modes.set(b.service, b.share.mode);
  const words: Record<string, string> = {
    panic: 'PANIC: too few primaries pass their checks; new connections spread over all of them, live or not',
    backup: 'no primary is up: the backup backends serve',
    reject: 'no backend can serve: new connections get a TCP reset',
  };
  return [...modes].map(([service, mode]) => `  ${service}: ${words[mode] ?? mode}`);
}

/** Health and admin state in a few words: `up`, `DOWN`, `up, draining`, `maintenance`. */
function stateWords(b: BackendSnapshot, now: number): string {
  if (b.admin?.state === 'maint') return 'maintenance';
  const held = b.held ? ` (held ${ago(Date.parse(b.held.until) - now)})` : '';
  const health = `${b.state === 'up' ? 'up' : 'DOWN'}${held}`;
  if (b.admin?.state !== 'drain') return health;
  return `${health}, ${b.admin.drainedAt ? 'drained' : 'draining'}`;
}

/** Down by health and not in maintenance: what makes `status` exit 2. */
const isDown = (b: BackendSnapshot) => b.state === 'down' && b.admin?.state !== 'maint';

export function statusTable(state: Snapshot, config: Config | undefined, now: number): string {
  // Connection counts (from conntrack): a column while there is something to see, open
  // connections or a backend drained or in maintenance; not a column of zeros.
  const counted = state.backends.some((b) => (b.connections ?? 0) > 0 || b.admin !== undefined);
  const withShares = state.backends.some((b) => b.share);
  const rows = [
    [
      'BACKEND',
      'STATE',
      'SINCE',
      'LAST CHECK',
      'LATENCY',
      'TARGET',
      'VALUE',
      ...(counted ? ['CONNS'] : []),
      ...(withShares ? ['SHARE'] : []),
    ],
    ...state.backends.map((b) => {
      const last = b.last
        ? `${b.last.up ? 'ok' : 'FAIL'} ${ago(now - Date.parse(b.last.at))} ago: ${b.last.detail}`
        : 'not checked yet';
      return [
        `${b.service}/${b.backend}`,
        stateWords(b, now),
        `${ago(now - Date.parse(b.since))} ago`,
        last,
        b.last ? `${Math.round(b.last.latencyMs)}ms` : '-',
        b.target.label,
        writtenValue(b, config),
        ...(counted ? [b.connections === undefined ? '-' : String(b.connections)] : []),
        ...(withShares ? [shareText(b)] : []),
      ];
    }),
  ];
  const lines = formatTable(rows);
  // Why each down backend is down: the reason of its latest change (and a damping hold).
  const reasons = state.backends.filter(isDown).map((b) => {
    const held = b.held
      ? `held down until ${b.held.until}${b.reason.includes(b.held.reason) ? '' : `: ${b.held.reason}`}; `
      : '';
    return `  ${b.service}/${b.backend}: ${held}${b.reason}`;
  });
  const up = state.backends.filter((b) => b.state === 'up').length;
  const head = `${up}/${state.backends.length} backends up (state of pid ${state.pid}, ${ago(now - Date.parse(state.writtenAt))} old)`;
  const modes = serviceModes(state);
  // Real traffic failing (passive health), whether or not it took the backend out.
  const passive = state.backends.flatMap((b) =>
    b.passive?.failingSince
      ? [`  ${b.service}/${b.backend}: failing since ${b.passive.failingSince}: ${b.passive.detail}`]
      : [],
  );
  return `${[head, '', ...lines, ...(modes.length > 0 ? ['', 'Services:', ...modes] : []), ...(passive.length > 0 ? ['', 'Passive:', ...passive] : []), ...(reasons.length > 0 ? ['', 'Down:', ...reasons] : [])].join('\n')}\n`;
}

export async function statusCommand(
  io: StatusIo,
  stateFile: string,
  config: Config | undefined,
  json: boolean,
  now = Date.now(),
): Promise<number> {
  const read = await readStateFile(stateFile);
  if (!read.ok) {
    const why = read.missing
      ? `nf-healthd is not running: no state file at ${stateFile}`
      : `cannot tell whether nf-healthd runs: ${read.problem}`;
    if (json) io.out(`${JSON.stringify({ running: false, problem: why }, null, 2)}\n`);
    io.err(`${why}\n`);
    return EXIT.notRunning;
  }
  const state = read.state;
  const stale = staleness(state, now);
  if (json) io.out(`${JSON.stringify({ running: !stale, ...(stale ? { problem: stale } : {}), ...state }, null, 2)}\n`);
  else io.out(statusTable(state, config, now));
  if (stale) {
    io.err(`${stale}\n`);
    return EXIT.notRunning;
  }
  return state.backends.some(isDown) ? EXIT.down : EXIT.ok;
}

/** The `status` command: the config names the state file; a broken config falls back to the default path. */
export async function runStatus(io: StatusIo, configPath: string, json: boolean): Promise<number> {
  let config: Config | undefined;
  try {
    config = loadConfig(configPath);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    io.err(`${err.message}\n(config unusable: reading the default state file ${STATE_FILE_DEFAULT})\n`);
  }
  return statusCommand(io, config?.stateFile ?? STATE_FILE_DEFAULT, config, json);
}
