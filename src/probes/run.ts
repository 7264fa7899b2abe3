import { formatDuration } from '../config/duration.js';
import { describeSocketError, openMeter } from './connection.js';
import { type CheckConfig, runCheckType } from './registry.js';
import { CheckFailed, type ProbeResult, type ProbeTarget, type ProbeVerdict } from './types.js';

export class CheckTimedOut extends Error {
  override readonly name = 'CheckTimedOut';
}

/**
 * Runs one check with its whole-check timeout. Never throws: every failure,
 * including a probe bug, becomes a "down" verdict with the reason in words.
 */
export async function runCheck(
  checks: CheckConfig | readonly CheckConfig[],
  target: ProbeTarget,
  timeoutMs: number,
  parent?: AbortSignal,
): Promise<ProbeResult> {
  const started = performance.now();
  const controller = new AbortController();
  const meter = openMeter(controller.signal);
  const timer = setTimeout(
    () => controller.abort(new CheckTimedOut(`timeout after ${formatDuration(timeoutMs)}`)),
    timeoutMs,
  );
  const onParentAbort = () => controller.abort(new Error('check aborted: shutting down'));
  if (parent?.aborted) onParentAbort();
  parent?.addEventListener('abort', onParentAbort, { once: true });
  const list: readonly CheckConfig[] = Array.isArray(checks) ? checks : [checks as CheckConfig];
  try {
    const verdict =
      list.length === 1
        ? await runCheckType(list[0]!, target, controller.signal)
        : await runAll(list, target, controller);
    return { ...verdict, latencyMs: elapsed(started), bytesRead: meter.bytes };
  } catch (err) {
    return {
      up: false,
      detail: failureDetail(err, controller.signal),
      latencyMs: elapsed(started),
      bytesRead: meter.bytes,
    };
  } finally {
    clearTimeout(timer);
    parent?.removeEventListener('abort', onParentAbort);
  }
}

/** `smtp+tls` for a backend with several checks: the `type` of `probe --json`. */
export function checkLabel(checks: CheckConfig | readonly CheckConfig[]): string {
  return Array.isArray(checks) ? checks.map((c: CheckConfig) => c.type).join('+') : (checks as CheckConfig).type;
}

/**
 * Several checks of one backend (`checks:`), concurrently within the one timeout: up
 * only when all pass (keepalived's and Envoy's rule). The first to fail stops the
 * others and names itself in the detail.
 */
async function runAll(
  checks: readonly CheckConfig[],
  target: ProbeTarget,
  controller: AbortController,
): Promise<ProbeVerdict> {
  let failed: string | undefined;
  const verdicts = await Promise.all(
    checks.map((check) =>
      runCheckType(check, target, controller.signal).catch((err: unknown) => {
        failed ??= `${check.type}: ${failureDetail(err, controller.signal)}`;
        if (!controller.signal.aborted) controller.abort(new Error('stopped: another check failed'));
        return undefined;
      }),
    ),
  );
  if (failed !== undefined) throw new CheckFailed(failed);
  return { up: true, detail: verdicts.map((v, i) => `${checks[i]!.type}: ${v!.detail}`).join('; ') };
}

function failureDetail(err: unknown, signal: AbortSignal): string {
  if (err instanceof CheckFailed) return err.message;
  if (signal.aborted && signal.reason instanceof Error) return signal.reason.message;
  return describeSocketError(err, 'check');
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}
