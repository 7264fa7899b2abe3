import { setMaxListeners } from 'node:events';
import { formatDuration } from '../config/duration.js';
import { describeSocketError, openMeter } from './connection.js';
import { runLean } from './engine.js';
import { type CheckConfig, leanConversation, runCheckType } from './registry.js';
import { checkTarget } from './target.js';
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
  const single: CheckConfig | undefined = Array.isArray(checks)
    ? checks.length === 1
      ? checks[0]
      : undefined
    : (checks as CheckConfig);
  if (single !== undefined) {
    const check = single;
    const conversation = leanConversation(check);
    if (conversation !== undefined) return runLean(checkTarget(target, check), conversation, timeoutMs, parent);
  }
  const started = performance.now();
  const controller = new AbortController();
  const meter = openMeter(controller.signal);
  const timer = setTimeout(
    () => controller.abort(new CheckTimedOut(`timeout after ${formatDuration(timeoutMs)}`)),
    timeoutMs,
  );
  // Probes hang their abort listeners on this signal; `checks:` has up to 16 probes at once.
  setMaxListeners(0, controller.signal);
  const onParentAbort = () => controller.abort(new Error('check aborted: shutting down'));
  if (parent?.aborted) onParentAbort();
  const stopListening = parent ? onAbortOf(parent, onParentAbort) : undefined;
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
    stopListening?.();
  }
}

/**
 * One listener on a shared signal (the daemon's stop signal) for every check in
 * flight, fanning out to theirs: a listener per check would pass Node's limit of 10
 * and print MaxListenersExceededWarning as soon as 11 checks overlap.
 */
const fanOuts = new WeakMap<AbortSignal, Set<() => void>>();

function onAbortOf(signal: AbortSignal, listener: () => void): () => void {
  const listeners = fanOuts.get(signal) ?? fanOut(signal);
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function fanOut(signal: AbortSignal): Set<() => void> {
  const listeners = new Set<() => void>();
  fanOuts.set(signal, listeners);
  signal.addEventListener(
    'abort',
    () => {
      for (const listener of [...listeners]) listener();
    },
    { once: true },
  );
  return listeners;
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
