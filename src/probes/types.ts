import type { z } from 'zod';

/** Where a check connects to. */
export interface ProbeTarget {
  service: string;
  backend: string;
  address: string;
  port: number;
}

/** What a probe says about one check: the verdict and why, in words. */
export interface ProbeVerdict {
  up: boolean;
  detail: string;
}

/** A check result as the rest of the daemon sees it. */
export interface ProbeResult extends ProbeVerdict {
  latencyMs: number;
  /** Bytes the check read from the backend (bounded by each probe's byte bound). */
  bytesRead?: number;
}

/**
 * One check type. `schema` is the zod object for its `check:` block (with
 * `type: z.literal(...)`), so the config's types come from the probes themselves;
 * `run` must honour `signal` (aborted at the check's timeout) and bound every read.
 */
export interface ProbeDefinition<S extends z.ZodObject = z.ZodObject> {
  readonly type: string;
  readonly schema: S;
  run(target: ProbeTarget, options: z.infer<S>, signal: AbortSignal): Promise<ProbeVerdict>;
}

/** Thrown by probes for a verdict of "down" with a ready-made detail. */
export class CheckFailed extends Error {
  override readonly name = 'CheckFailed';
}

export function defineProbe<S extends z.ZodObject>(def: ProbeDefinition<S>): ProbeDefinition<S> {
  return def;
}
