/**
 * Administrative state of a backend, set by an operator and independent of health:
 * `ready` (the default), `drain` (no new connections; existing ones go on; checks go
 * on), `maint` (no new connections; checks paused; shown as maintenance, not as down).
 */
export const ADMIN_STATES = ['ready', 'drain', 'maint'] as const;
export type AdminState = (typeof ADMIN_STATES)[number];

export interface AdminStatus {
  state: AdminState;
  /** Epoch ms when it was set. */
  since: number;
  /** Drain: epoch ms at which the flows still open are deleted. */
  deadline?: number;
  /** Drain: epoch ms when the backend's open flows reached 0 (the `drained` event). */
  drainedAt?: number;
  /** Drain: epoch ms when the deadline deleted the remaining flows. */
  deadlineDoneAt?: number;
}

/** May the kernel send new connections to it? Health up and admin `ready` (absent means ready). */
export function eligible(healthUp: boolean, admin: AdminStatus | undefined): boolean {
  return healthUp && (admin === undefined || admin.state === 'ready');
}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++)
      next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length]!;
}

/** The closest of `names` to `wanted`, when it is close enough to be a typo. */
export function closestName(wanted: string, names: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const name of names) {
    const d = distance(wanted.toLowerCase(), name.toLowerCase());
    if (d < bestDistance) {
      best = name;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(wanted.length / 3)) ? best : undefined;
}
