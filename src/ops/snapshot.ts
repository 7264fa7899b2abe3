/**
 * The daemon's state as plain JSON: the state file, `/status`, the SIGUSR1 dump and
 * `nf-healthd status` all share this one shape.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { AdminState } from '../health/admin.js';
import { steadyNow } from '../health/clock.js';
import { type DampingState, isHeld } from '../health/damping.js';
import type { BackendState } from '../health/hysteresis.js';
import { describeVerdict, type PassiveStatus } from '../health/passive.js';
import type { BackendStatus, Daemon } from '../observer.js';
import type { BackendPlan } from '../plan/compile.js';
import { checkLabel } from '../probes/run.js';

export const SNAPSHOT_VERSION = 1;

export interface BackendSnapshot {
  id: string;
  service: string;
  backend: string;
  address: string;
  port: number;
  type: string;
  /** Identifies what was checked and written: a restart resumes only when it is the same. */
  fingerprint: string;
  target: { key: string; label: string };
  state: BackendState;
  since: string;
  reason: string;
  successes: number;
  failures: number;
  last?: { at: string; up: boolean; detail: string; latencyMs: number };
  /** What the writer last made the kernel hold, and whether a read-back or write confirmed it. */
  written?: { up: boolean; confirmed: boolean; at: string };
  /** Set while flap damping holds the backend down. */
  held?: { until: string; reason: string };
  damping?: DampingState;
  /** Its slots in its service's balancing table (nft writer), and the service's mode (normal, backup, panic, reject). */
  share?: { slots: number; of: number; mode: string };
  /** Set by an operator (`nf-healthd set`); absent means ready. Times as ISO strings. */
  admin?: { state: AdminState; since: string; deadline?: string; drainedAt?: string; deadlineDoneAt?: string };
  /** Open flows in conntrack with the backend's mark, at the latest count. */
  connections?: number;
  /** Passive health over the latest window (docs/passive.md), when its service has `passive`. */
  passive?: PassiveSnapshot;
}

export interface PassiveSnapshot {
  windowMs: number;
  /** Counts of the latest window. */
  new: number;
  answered: number;
  reset: number;
  unanswered: number;
  /** Unanswered or reset share of the window's new connections; absent below minConnections. */
  ratio?: number;
  /** Since when its real traffic has been failing; absent: not failing. */
  failingSince?: string;
  /** Ejected by passive health: passing checks count again from this time. */
  heldUntil?: string;
  /** Words for status: `100 of 100 new connections in the latest 2s unanswered, 0 reset (ratio 1.00)`. */
  detail: string;
}

export interface Snapshot {
  version: typeof SNAPSHOT_VERSION;
  pid: number;
  writtenAt: string;
  /** A reader should call the file stale (daemon gone or stuck) once it is older than this. */
  staleAfterMs: number;
  /** Set by the last write of a daemon that stopped cleanly. */
  stoppedAt?: string;
  configPath: string;
  backends: BackendSnapshot[];
}

/**
 * address, port, check and writer target: what "the backend is unchanged" means across
 * restarts. A hash, not the values: a check's options may hold secrets (an exec check's
 * environment, a token in an HTTP path), and the state file and /status are readable.
 */
export function fingerprint(spec: BackendPlan): string {
  const facts = JSON.stringify([spec.address, spec.port, spec.checks, spec.target.key]);
  return `sha256:${createHash('sha256').update(facts).digest('hex')}`;
}

const iso = (ms: number) => new Date(ms).toISOString();

export function backendSnapshot(b: BackendStatus, now: number): BackendSnapshot {
  const { spec } = b;
  const out: BackendSnapshot = {
    id: spec.id,
    service: spec.service,
    backend: spec.name,
    address: spec.address,
    port: spec.port,
    type: checkLabel(spec.checks),
    fingerprint: fingerprint(spec),
    target: { key: spec.target.key, label: spec.target.label },
    state: b.health.state,
    since: iso(b.since),
    reason: b.reason,
    successes: b.health.successes,
    failures: b.health.failures,
  };
  if (b.last) out.last = { at: iso(b.last.at), up: b.last.up, detail: b.last.detail, latencyMs: b.last.latencyMs };
  if (b.written) out.written = { up: b.written.up, confirmed: b.written.confirmed, at: iso(b.written.at) };
  if (b.share) out.share = { ...b.share };
  if (b.damping) {
    out.damping = b.damping;
    if (isHeld(b.damping, now)) out.held = { until: iso(b.damping.heldUntil!), reason: b.damping.reason ?? 'flapping' };
  }
  if (b.admin) {
    const { state, since, deadline, drainedAt, deadlineDoneAt } = b.admin;
    out.admin = { state, since: iso(since) };
    if (deadline !== undefined) out.admin.deadline = iso(deadline);
    if (drainedAt !== undefined) out.admin.drainedAt = iso(drainedAt);
    if (deadlineDoneAt !== undefined) out.admin.deadlineDoneAt = iso(deadlineDoneAt);
  }
  if (b.connections !== undefined) out.connections = b.connections;
  if (b.passive) out.passive = passiveSnapshot(b.passive, now);
  return out;
}

function passiveSnapshot(p: PassiveStatus, now: number): PassiveSnapshot {
  const { tally, kind } = p.latest;
  const out: PassiveSnapshot = { windowMs: p.windowMs, ...tally, detail: describeVerdict(p.latest, p.windowMs) };
  if (kind !== 'quiet') out.ratio = p.latest.ratio;
  if (p.failingSince !== undefined) out.failingSince = iso(p.failingSince);
  if (p.heldUntil !== undefined && p.heldUntil > now) out.heldUntil = iso(p.heldUntil);
  return out;
}

/** How long a reader waits before calling the state stale: a few write periods. */
export function staleAfter(writePeriodMs: number): number {
  return 3 * writePeriodMs + 2000;
}

/** The write period a `staleAfterMs` was made from: staleAfter's inverse, for readers. */
export function writePeriodOf(staleAfterMs: number): number {
  return Math.round((staleAfterMs - 2000) / 3);
}

export function snapshot(
  daemon: Pick<Daemon, 'backends'>,
  options: { configPath: string; writePeriodMs: number; now?: number; stopped?: boolean },
): Snapshot {
  // writtenAt is compared with another process's wall clock (`status`, a restart); holds run on the daemon's own.
  const now = options.now ?? Date.now();
  const steady = options.now ?? steadyNow();
  const out: Snapshot = {
    version: SNAPSHOT_VERSION,
    pid: process.pid,
    writtenAt: iso(now),
    staleAfterMs: staleAfter(options.writePeriodMs),
    configPath: path.resolve(options.configPath),
    backends: daemon.backends().map((b) => backendSnapshot(b, steady)),
  };
  if (options.stopped) out.stoppedAt = iso(now);
  return out;
}
