import type { Config } from './config/schema.js';
import type { AdminState, AdminStatus } from './health/admin.js';
import type { DampingState } from './health/damping.js';
import type { BackendState, Health } from './health/hysteresis.js';
import type { PassiveStatus } from './health/passive.js';
import type { Scheduler } from './health/scheduler.js';
import type { SyncOutcome, WriterHealth } from './kernel/loop.js';
import type { TableMode } from './kernel/table.js';
import type { Logger } from './log.js';
import type { BackendPlan, Plan } from './plan/compile.js';
import type { ProbeResult } from './probes/types.js';

/**
 * The daemon as the parts around it see it: the runtime view of each backend, the
 * callbacks they get, and the plugin type. The parts (state file, status, metrics,
 * hooks, sd_notify) observe; they never steer.
 */

/** Everything the daemon knows about one backend right now. */
export interface BackendStatus {
  spec: BackendPlan;
  health: Health;
  /** Epoch ms of the latest state change (or of start). */
  since: number;
  /** Why the state is what it is, in words. */
  reason: string;
  last?: ProbeResult & { at: number };
  /** What the writer last made the kernel hold, and whether it was confirmed. */
  written?: { up: boolean; confirmed: boolean; at: number };
  /** Flap damping: recent changes and the hold, when `damping` is configured. */
  damping?: DampingState;
  /** Its slots in its service's balancing table (nft writer), and the service's mode. */
  share?: { slots: number; of: number; mode: TableMode };
  /** Set by an operator (`nf-healthd set`); absent means `ready`. */
  admin?: AdminStatus;
  /** Open flows in conntrack carrying the backend's mark, at the latest count (absent: not counted). */
  connections?: number;
  /** Passive health from the kernel's counters of real traffic, when its service has `passive`. */
  passive?: PassiveStatus;
}

/** What a restart may resume for one backend (from the state file). */
export type ResumedStatus = Pick<BackendStatus, 'health' | 'since' | 'reason' | 'last' | 'damping'>;

/** The outcome of `Daemon.setAdmin`. */
export type SetAdminResult =
  | { ok: true; backend: BackendStatus; previous: AdminState }
  | { ok: false; problem: string; suggestion?: string };

/** Plain callbacks for the parts that watch the daemon (sd_notify, metrics, state file, hooks). */
export interface DaemonObserver {
  onCheck?(backend: BackendStatus, result: ProbeResult): void;
  onTransition?(backend: BackendStatus, from: BackendState, to: BackendState): void;
  /** The first round of checks has been handed to the writer loop and tried once. */
  onReady?(): void;
  onReloading?(): void;
  /** After a reload was applied (ok) or rejected (the errors). */
  onReloaded?(ok: boolean, problems: string[]): void;
  onStopping?(): void;
  /** Checks and writes have finished: the last word (final state file, closing listeners). */
  onStopped?(): void;
  /** The writer loop wrote or read back this backend's kernel key. */
  onSync?(backend: BackendStatus, outcome: SyncOutcome): void;
  /** An operator set the backend's administrative state (already applied to the kernel). */
  onAdmin?(backend: BackendStatus, previous: AdminState): void;
}

export interface Daemon {
  /** Resolves once the first round of checks has been tried on the kernel. */
  start(): Promise<void>;
  /** Re-reads the config file; false (old config kept) when it is invalid. */
  reload(): Promise<boolean>;
  stop(): Promise<void>;
  backends(): BackendStatus[];
  /** False once a reload removed the backend (or replaced it under its id): a late task drops it. */
  isCurrent(backend: BackendStatus): boolean;
  plan(): Plan;
  /** The running Plan's config (its keys for the operating parts). */
  config(): Config;
  /** performance.now() of the latest completed check, for the liveness measure. */
  lastProgressAt(): number;
  scheduler(): Scheduler;
  /** The writer loop's health, for the liveness measure. */
  writerHealth(): WriterHealth;
  addObserver(observer: DaemonObserver): void;
  /**
   * Sets a backend's administrative state; resolves once the writer loop has tried the
   * kernel write (`settled()`). `deadlineMs`: drain only, flows left after it are deleted.
   */
  setAdmin(id: string, state: AdminState, deadlineMs?: number): Promise<SetAdminResult>;
  /** Checks holding a concurrency slot now, and checks waiting for one. */
  checksInFlight(): { active: number; pending: number };
}

/** What a plugin gets: the daemon, the logger, the config file's path. */
export interface PluginContext {
  daemon: Daemon;
  log: Logger;
  configPath: string;
}

/** A part wired around the daemon by `run`; undefined when it has nothing to do (not configured). */
export type DaemonPlugin = (context: PluginContext) => DaemonObserver | undefined;
