/**
 * The catalog of every `event` value the daemon logs: one line per state change, each
 * with an `event` field that alerting can match on. test/events.test.ts fails when the
 * code logs an event that is not here, or the docs' table (docs/operating.md, generated
 * by `npm run docs`) differs from this list.
 */
export type EventLevel = 'error' | 'warn' | 'info' | 'debug';

export interface EventInfo {
  level: EventLevel | `${EventLevel}/${EventLevel}`;
  /** When it is logged, and what to do about it. */
  when: string;
}

export const EVENTS = {
  // The daemon's life
  starting: { level: 'info', when: 'the daemon starts: config file and backend count' },
  ready: { level: 'info', when: 'the first round of checks is done and handed to the kernel: the summary' },
  reloading: { level: 'info', when: 'SIGHUP received: the config is read again' },
  reloaded: { level: 'info', when: 'a reload was applied: backends added and removed' },
  reload_rejected: {
    level: 'error',
    when: 'a reload found the config invalid or unreadable (one line per problem, with FILE:LINE:COLUMN); the running config is kept. Without a position: the reload failed unexpectedly (a bug: report it)',
  },
  stopping: { level: 'info', when: 'SIGTERM or SIGINT: checks are aborted, writes under way finish' },
  signal_ignored: {
    level: 'warn',
    when: 'SIGUSR2 (HAProxy reloads on it, keepalived dumps stats): nothing done; SIGHUP reloads',
  },
  start_failed: { level: 'error', when: 'starting failed unexpectedly: the daemon stops (a bug: report it)' },
  stop_failed: { level: 'error', when: 'stopping failed unexpectedly: exit code 1 (a bug: report it)' },
  backend_added: { level: 'info', when: 'a reload added a backend: its starting state' },
  backend_removed: {
    level: 'info',
    when: 'a reload removed a backend: no longer checked; its kernel key is left as it is',
  },
  // Health
  transition: { level: 'warn/info', when: 'a backend went down (warn) or up (info), with the reason' },
  check: { level: 'debug', when: 'every check result (only at log level debug)' },
  service_down: {
    level: 'error',
    when: 'every backend of a service is down: new connections to its VIP are refused',
  },
  service_up: { level: 'info', when: 'a service that had no live backend has one again' },
  damping_hold: { level: 'warn/info', when: 'flap damping holds a backend down, with the reason and the end' },
  damping_suppressed: { level: 'debug', when: 'a held backend passes its checks but stays down until the hold ends' },
  damping_released: { level: 'info', when: 'a flap damping hold ended' },
  passive_failing: {
    level: 'warn',
    when: 'real traffic fails on a backend (passive health): the share of its new connections unanswered or reset, and what follows (fastInterval; ejection with passive.eject)',
  },
  passive_recovered: {
    level: 'info',
    when: "a backend's real traffic no longer fails (or became too quiet for a verdict)",
  },
  passive_eject_capped: {
    level: 'warn',
    when: 'a passively failing backend is kept in: ejecting it would leave more than passive.maxEjectPercent of its service out (once per episode)',
  },
  passive_suppressed: {
    level: 'debug',
    when: 'a passively ejected backend passes a check before its window is over: not counted',
  },
  passive_read_failed: {
    level: 'error',
    when: 'the passive counters cannot be read (`nft reset counters`): no passive verdicts meanwhile',
  },
  passive_read_recovered: { level: 'info', when: 'the passive counters can be read again' },
  check_job_failed: { level: 'error', when: 'a check job threw (a bug: report it); the schedule goes on' },
  observer_failed: { level: 'error', when: 'an operating part (metrics, state file, hooks) threw; the rest go on' },
  // Administrative state and the connection lifecycle
  admin_state: {
    level: 'info',
    when: 'an operator set a backend ready, drain or maint (`nf-healthd set`, or the HTTP admin API)',
  },
  drained: { level: 'info', when: 'a draining backend has no open connection left: safe to take it down' },
  drain_deadline: {
    level: 'warn',
    when: 'a drain deadline passed: the flows still open were deleted (their clients get a reset), with the count',
  },
  flows_reaped: {
    level: 'info/debug',
    when: 'a backend went down: its UDP flows and unanswered SYNs (all flows with reapOnDown: all) were deleted',
  },
  conntrack_failed: {
    level: 'error',
    when: 'conntrack cannot list or delete flows (once per episode): counts, drain deadlines and reaping wait',
  },
  conntrack_missing: {
    level: 'info',
    when: 'conntrackPath does not exist: no connection counts, drain deadlines or reaping (install conntrack)',
  },
  conntrack_recovered: { level: 'info', when: 'conntrack works again' },
  control_listening: { level: 'info', when: 'the control socket for `nf-healthd set` is bound: its path' },
  control_failed: {
    level: 'error',
    when: 'the control socket cannot be bound (or another daemon answers on it), or a request failed inside',
  },
  // Kernel side
  write_failed: {
    level: 'error',
    when: 'a kernel write failed, once per episode, with a hint; retried with backoff while checks go on',
  },
  write_recovered: { level: 'info', when: 'writing a kernel key works again' },
  drift_repaired: {
    level: 'warn',
    when: 'the read-back found a kernel key holding another value (rules reloaded, written by hand) and set it back',
  },
  writer_stalled: {
    level: 'error',
    when: 'one writer call (nft, ipset, a condition file) has run past its timeout; checks go on',
  },
  writer_resumed: { level: 'info', when: 'the stalled writer call returned' },
  writer_bug: { level: 'error', when: 'the writer loop caught an unexpected error (a bug: report it); it goes on' },
  // Balancing table (nft writer; docs/balancing.md)
  table_changed: {
    level: 'info',
    when: "a backend's state change moved slots of its service's table: where its share went (or came from), the new shares",
  },
  table_written: { level: 'debug', when: 'the writer wrote a balancing table: how many slots moved' },
  backup_active: {
    level: 'warn',
    when: 'no primary backend of a service is up: its backup backends take the new connections',
  },
  panic_started: {
    level: 'warn',
    when: 'the live primary weight of a service fell below its panicThreshold: new connections spread over all its backends, live or not',
  },
  panic_ended: { level: 'info', when: 'a service that panicked no longer does' },
  balancing_normal: {
    level: 'info',
    when: 'a service in panic, backup or reset mode sends new connections to its live primaries again',
  },
  service_rejecting: {
    level: 'error',
    when: 'no backend of a service can serve (none up, no backup, no panic): new connections get a TCP reset from the balancer',
  },
  // Operating parts
  state_file_read: { level: 'info', when: 'at start: the state file was read and how many backends resume from it' },
  state_resumed: { level: 'debug', when: 'one backend resumes its state from the state file' },
  state_not_resumed: {
    level: 'info/warn',
    when: 'at start: no state file, an old or unreadable one, or a changed backend: starting from initialState',
  },
  state_file_failed: { level: 'error', when: 'the state file cannot be written, once per episode' },
  state_file_recovered: { level: 'info', when: 'the state file can be written again' },
  state_dump: { level: 'info', when: 'SIGUSR1: the whole state in one line' },
  http_listening: { level: 'info', when: 'the HTTP listener (/metrics, /status, /healthz) is bound: host and port' },
  http_failed: { level: 'error', when: 'the HTTP listener cannot bind its address' },
  http_error: { level: 'error', when: 'the HTTP listener failed after it was bound' },
  metrics_failed: { level: 'error', when: 'collecting the metrics for a scrape failed' },
  hook: { level: 'debug/warn', when: 'a notify hook ran (debug), or failed or timed out (warn)' },
  hook_bug: { level: 'error', when: 'the hook runner threw (a bug: report it)' },
  vrrp_track_value: {
    level: 'info',
    when: 'the keepalived track file got a new value: the live capacity changed, or FAULT (-254) when none is left or the daemon stops',
  },
  vrrp_file_failed: {
    level: 'error',
    when: 'the keepalived track file cannot be written, once per episode; retried every second',
  },
  vrrp_file_recovered: { level: 'info', when: 'the keepalived track file can be written again' },
  // systemd
  watchdog: { level: 'debug', when: 'the watchdog period in use' },
  watchdog_stalled: { level: 'error', when: 'the checks stalled: watchdog pings stop, systemd restarts the service' },
  watchdog_resumed: { level: 'info', when: 'the checks progress again: watchdog pings resumed' },
  sd_notify_failed: { level: 'warn', when: 'systemd-notify failed (once per episode); the daemon goes on' },
  sd_notify_recovered: { level: 'info', when: 'systemd-notify works again' },
  sd_notify_stopped: { level: 'debug', when: 'systemd-notify was stopped by SIGTERM while the unit stops' },
} as const satisfies Record<string, EventInfo>;

export type EventName = keyof typeof EVENTS;

/** The catalog as a Markdown table, for docs/operating.md. */
export function eventCatalogMarkdown(): string {
  const rows = Object.entries(EVENTS).map(([name, info]) => `| \`${name}\` | ${info.level} | ${info.when} |`);
  return ['| event | level | when |', '| --- | --- | --- |', ...rows].join('\n');
}
