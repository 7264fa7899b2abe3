/**
 * Resuming at start: backends found in a recent state file, with the same address,
 * port, check and writer target, continue in the state they had (so a restart of a
 * healthy daemon writes nothing to the kernel); the others start at initialState.
 */
import { formatDuration } from '../config/duration.js';
import type { AdminStatus } from '../health/admin.js';
import type { Logger } from '../log.js';
import type { ResumedStatus } from '../observer.js';
import type { BackendPlan, Plan } from '../plan/compile.js';
import { type BackendSnapshot, fingerprint, type Snapshot } from './snapshot.js';
import { readStateFile } from './state-file.js';

export type Restore = (spec: BackendPlan) => ResumedStatus | undefined;
export type RestoreAdmin = (spec: BackendPlan) => AdminStatus | undefined;

/**
 * The administrative states saved in the state file, by backend id. An operator's
 * decision does not go stale: it is kept whatever the file's age or the backend's checks.
 */
export function adminFrom(state: Snapshot): RestoreAdmin {
  const byId = new Map(state.backends.map((b) => [b.id, b.admin]));
  const ms = (s: string | undefined) => (s === undefined ? undefined : Date.parse(s));
  return (spec) => {
    const saved = byId.get(spec.id);
    if (!saved) return undefined;
    const admin: AdminStatus = { state: saved.state, since: Date.parse(saved.since) };
    for (const key of ['deadline', 'drainedAt', 'deadlineDoneAt'] as const) {
      const at = ms(saved[key]);
      if (at !== undefined) admin[key] = at;
    }
    return admin;
  };
}

export function restoreFrom(
  state: Snapshot,
  maxAgeMs: number,
  now: number,
): { restore: Restore; ageMs: number; usable: boolean } {
  const ageMs = now - Date.parse(state.writtenAt);
  const usable = ageMs >= 0 && ageMs <= maxAgeMs;
  const byId = new Map<string, BackendSnapshot>(state.backends.map((b) => [b.id, b]));
  const restore: Restore = (spec) => {
    const saved = byId.get(spec.id);
    if (!usable || !saved || saved.fingerprint !== fingerprint(spec)) return undefined;
    const resumed: ResumedStatus = {
      health: { state: saved.state, successes: saved.successes, failures: saved.failures },
      since: Date.parse(saved.since),
      reason: saved.reason,
    };
    if (saved.last)
      resumed.last = {
        up: saved.last.up,
        detail: saved.last.detail,
        latencyMs: saved.last.latencyMs,
        at: Date.parse(saved.last.at),
      };
    if (saved.damping) resumed.damping = saved.damping;
    return resumed;
  };
  return { restore, ageMs, usable };
}

/** Reads the state file once, logs what it will do, and returns the daemon's `restore` and `restoreAdmin` options. */
export async function loadRestore(
  plan: Plan,
  log: Logger,
  now = Date.now(),
): Promise<{ restore?: Restore; restoreAdmin?: RestoreAdmin }> {
  const config = plan.config;
  const file = config.stateFile;
  const read = await readStateFile(file);
  if (!read.ok) {
    if (read.missing)
      log.info({ event: 'state_not_resumed', file }, `no state file at ${file}: backends start ${config.initialState}`);
    else log.warn({ event: 'state_not_resumed', file }, `${read.problem}: backends start ${config.initialState}`);
    return {};
  }
  const restoreAdmin = adminFrom(read.state);
  const { restore, ageMs, usable } = restoreFrom(read.state, config.stateMaxAge, now);
  if (!usable) {
    log.info(
      { event: 'state_not_resumed', file, ageMs },
      `state file ${file} is ${(ageMs / 1000).toFixed(1)}s old (stateMaxAge ${formatDuration(config.stateMaxAge)}): backends start ${config.initialState}`,
    );
    return { restoreAdmin };
  }
  const logging: Restore = (spec) => {
    const r = restore(spec);
    if (r && !config.damping) delete r.damping; // damping turned off since: no hold carries over
    if (!r)
      log.info(
        { event: 'state_not_resumed', backend: spec.name, service: spec.service },
        `backend ${spec.name} is new or changed since the state file: it starts ${config.initialState}`,
      );
    else
      log.debug(
        { event: 'state_resumed', backend: spec.name, service: spec.service, state: r.health.state },
        `backend ${spec.name} resumes ${r.health.state} (since ${new Date(r.since).toISOString()}): ${r.reason}`,
      );
    return r;
  };
  const specs = plan.backends;
  const matching = specs.filter((spec) => restore(spec) !== undefined).length;
  log.info(
    { event: 'state_file_read', file, ageMs, resumed: matching, backends: specs.length },
    `resuming ${matching} of ${specs.length} backends from ${file}, written ${(ageMs / 1000).toFixed(1)}s ago`,
  );
  return { restore: logging, restoreAdmin };
}
