import { writeFileSync } from 'node:fs';
import type { DaemonPlugin } from '../../src/observer.js';

/**
 * Opt-in timing samples for the benchmark (`NF_HEALTHD_SAMPLES=FILE`): per wall-clock
 * second, a log-bucket histogram of scheduling lag (actual minus planned start) and of
 * check latency, written to FILE as JSON when the daemon stops. Histograms instead of
 * raw samples keep memory flat at 10,000 checks a second (the benchmark measures RSS).
 * Only the instrumented entry (test/instrument/entry.ts) carries it, never dist/.
 */
export const SAMPLES_ENV = 'NF_HEALTHD_SAMPLES';

/** Bucket i holds values in [MIN_MS * GROWTH^(i-1), MIN_MS * GROWTH^i); bucket 0 everything below MIN_MS. */
export const HISTOGRAM = { minMs: 0.01, growth: 1.05, buckets: 300 } as const;
const LOG_GROWTH = Math.log(HISTOGRAM.growth);
/** Seconds kept: older ones are dropped so a long run stays bounded. */
const KEEP_SECONDS = 900;

export interface SamplesFile {
  histogram: typeof HISTOGRAM;
  /** Epoch second -> bucket counts. */
  lag: Record<string, number[]>;
  latency: Record<string, number[]>;
  /** process.memoryUsage() when the daemon stopped, in bytes. */
  memory: NodeJS.MemoryUsage;
}

export function bucketOf(ms: number): number {
  if (!(ms >= HISTOGRAM.minMs)) return 0;
  return Math.min(HISTOGRAM.buckets - 1, 1 + Math.floor(Math.log(ms / HISTOGRAM.minMs) / LOG_GROWTH));
}

/** The upper edge of a bucket: what a percentile falling in it reports. */
export function bucketUpperMs(bucket: number): number {
  return HISTOGRAM.minMs * HISTOGRAM.growth ** bucket;
}

function perSecond() {
  const seconds = new Map<number, Uint32Array>();
  return {
    add(ms: number) {
      const second = Math.floor(Date.now() / 1000);
      let counts = seconds.get(second);
      if (!counts) {
        counts = new Uint32Array(HISTOGRAM.buckets);
        seconds.set(second, counts);
        if (seconds.size > KEEP_SECONDS) seconds.delete(seconds.keys().next().value!);
      }
      counts[bucketOf(ms)]!++;
    },
    toJSON: () => Object.fromEntries([...seconds].map(([s, c]) => [String(s), [...c]])),
  };
}

export const samplesPlugin: DaemonPlugin = ({ daemon, log }) => {
  const file = process.env[SAMPLES_ENV];
  if (!file) return;
  const lag = perSecond();
  const latency = perSecond();
  daemon.scheduler().onRunStart((_id, lagMs) => lag.add(lagMs));
  return {
    onCheck: (_backend, result) => latency.add(result.latencyMs),
    onStopping() {
      const out: SamplesFile = {
        histogram: HISTOGRAM,
        lag: lag.toJSON(),
        latency: latency.toJSON(),
        memory: process.memoryUsage(),
      };
      try {
        writeFileSync(file, JSON.stringify(out));
      } catch (err) {
        log.error({ event: 'samples_failed', err, file }, `cannot write timing samples to ${file}`);
      }
    },
  };
};
