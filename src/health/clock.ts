/**
 * The daemon's clock for health decisions: epoch milliseconds that advance with the
 * monotonic clock. `since`, damping windows and holds, drain deadlines and the pace of
 * checks are durations between two of these readings, so setting the wall clock (an
 * NTP step, a VM resumed, an operator's `date -s`) neither releases a hold early nor
 * stretches it by the size of the jump. It equals Date.now() at start and drifts from
 * the wall clock only by the steps taken since; what other processes compare with their
 * own wall clock (the state file's `writtenAt`) stays on Date.now().
 */
export function steadyNow(): number {
  // Whole milliseconds, as Date.now(): the times it stamps are shown and saved at that precision.
  return Math.floor(performance.timeOrigin + performance.now());
}
