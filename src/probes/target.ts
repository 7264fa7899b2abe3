import { oncePer } from './memo.js';
import type { ProbeTarget } from './types.js';

/**
 * Where one check of a backend connects: the backend's target, or the same address
 * at the check's own `port` (HAProxy's `port`, keepalived's `connect_port`). The Plan
 * resolves every check's target when it compiles; later calls return those same
 * frozen objects, so the check path allocates nothing for it.
 */
const portsOf = oncePer((_target: ProbeTarget) => new Map<number, ProbeTarget>());

export function checkTarget(target: ProbeTarget, check: { readonly port?: number | undefined }): ProbeTarget {
  const port = check.port;
  if (port === undefined || port === target.port) return target;
  const ports = portsOf(target);
  let resolved = ports.get(port);
  if (resolved === undefined) {
    resolved = Object.freeze({ ...target, port });
    ports.set(port, resolved);
  }
  return resolved;
}
