/**
 * The control protocol shared by the control socket and the HTTP listener's admin API:
 * one JSON object per request, one per answer. Validated with zod before anything is
 * looked up; an answer never echoes more than a bounded part of the request.
 */
import { z } from 'zod';
import { parseDuration } from '../config/duration.js';
import { ADMIN_STATES } from '../health/admin.js';
import type { Daemon } from '../observer.js';

/** Longest request line: a backend id and a few keys fit many times over. */
export const MAX_REQUEST_BYTES = 4096;
/** The longest drain deadline: a week. Longer is a typo, not a plan. */
const MAX_DEADLINE_MS = 7 * 24 * 3600 * 1000;

export const setRequestSchema = z.strictObject({
  op: z.literal('set'),
  backend: z.string().min(1).max(300),
  state: z.enum(ADMIN_STATES),
  deadline: z.string().max(32).optional(),
});
export type SetRequest = z.infer<typeof setRequestSchema>;

export type ControlAnswer =
  | {
      ok: true;
      backend: string;
      state: string;
      previous: string;
      /** Whether the kernel write was confirmed (false: it failed and is being retried). */
      applied: boolean;
      connections?: number;
      deadline?: string;
    }
  | { ok: false; error: 'usage' | 'unknown_backend' | 'failed'; message: string; suggestion?: string };

/** A deadline in the config's duration syntax (`3s`, `5m`), or a problem in words. */
export function parseDeadline(text: string): number | string {
  const ms = parseDuration(text);
  if (ms === undefined || ms <= 0) return `--deadline "${text}": expected a duration such as 30s or 5m`;
  if (ms > MAX_DEADLINE_MS) return `--deadline "${text}": at most 168h (a week)`;
  return ms;
}

/** Applies one request (already JSON-parsed) to the daemon. */
export async function handleRequest(daemon: Daemon, request: unknown): Promise<ControlAnswer> {
  const parsed = setRequestSchema.safeParse(request);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return {
      ok: false,
      error: 'usage',
      message: `bad request: ${issue.path.join('.') || 'request'}: ${issue.message}`,
    };
  }
  const { backend, state, deadline } = parsed.data;
  let deadlineMs: number | undefined;
  if (deadline !== undefined) {
    if (state !== 'drain') return { ok: false, error: 'usage', message: '--deadline goes with drain only' };
    const ms = parseDeadline(deadline);
    if (typeof ms === 'string') return { ok: false, error: 'usage', message: ms };
    deadlineMs = ms;
  }
  const result = await daemon.setAdmin(backend, state, deadlineMs);
  if (!result.ok)
    return {
      ok: false,
      error: 'unknown_backend',
      message: result.problem,
      ...(result.suggestion ? { suggestion: result.suggestion } : {}),
    };
  const b = result.backend;
  return {
    ok: true,
    backend: b.spec.id,
    state,
    previous: result.previous,
    applied: b.written?.confirmed === true,
    ...(b.connections !== undefined ? { connections: b.connections } : {}),
    ...(b.admin?.deadline !== undefined ? { deadline: new Date(b.admin.deadline).toISOString() } : {}),
  };
}
