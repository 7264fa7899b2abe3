import { formatDuration } from '../config/duration.js';
import { describeSocketError } from './connection.js';
import { runCheckType, type CheckConfig } from './registry.js';
import { CheckFailed, type ProbeResult, type ProbeTarget } from './types.js';

export class CheckTimedOut extends Error {
  override readonly name = 'CheckTimedOut';
}

/**
 * Runs one check with its whole-check timeout. Never throws: every failure,
 * including a probe bug, becomes a "down" verdict with the reason in words.
 */
export async function runCheck(check: CheckConfig, target: ProbeTarget, timeoutMs: number, parent?: AbortSignal): Promise<ProbeResult> {
  const started = performance.now();
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new CheckTimedOut(`timeout after ${formatDuration(timeoutMs)}`)), timeoutMs);
  const onParentAbort = () => controller.abort(new Error('check aborted: shutting down'));
  if (parent?.aborted) onParentAbort();
  parent?.addEventListener('abort', onParentAbort, { once: true });
  try {
    const verdict = await runCheckType(check, target, controller.signal);
    return { ...verdict, latencyMs: elapsed(started) };
  } catch (err) {
    return { up: false, detail: failureDetail(err, controller.signal), latencyMs: elapsed(started) };
  } finally {
    clearTimeout(timer);
    parent?.removeEventListener('abort', onParentAbort);
  }
}

function failureDetail(err: unknown, signal: AbortSignal): string {
  if (err instanceof CheckFailed) return err.message;
  if (signal.aborted && signal.reason instanceof Error) return signal.reason.message;
  return describeSocketError(err, 'check');
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}
