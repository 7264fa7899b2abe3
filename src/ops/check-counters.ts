/**
 * The per-check metrics (nfh_checks_total, nfh_check_duration_seconds) as plain numbers
 * per backend, turned into Prometheus series only when scraped. prom-client's Counter
 * and Histogram hash the label set on every update; at thousands of checks a second
 * that was a visible share of the check path, for series read every 15 s or so.
 */
import type { Metric } from 'prom-client';

/** One sample as prom-client's Registry formats it. */
interface Sample {
  metricName?: string;
  labels: Record<string, string | number>;
  value: number;
}

/** The duration buckets, in seconds. */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

interface Outcome {
  labels: Record<string, string>;
  count: number;
  sum: number;
  /** Observations per bucket (not cumulative); the last slot is +Inf only. */
  buckets: Float64Array;
}

export interface CheckRecord {
  type: string;
  up: Outcome;
  down: Outcome;
}

export interface CheckCounters {
  /** The backend's record, made at its first check (and again when its check type changes). */
  record(id: string, service: string, backend: string, type: string): CheckRecord;
  observe(record: CheckRecord, up: boolean, seconds: number): void;
  /** Drops records of backends for which `keep` is false (a reload removed them or changed their type). */
  retain(keep: (id: string, record: CheckRecord) => boolean): void;
  /** The two metrics, to register with a prom-client Registry. */
  metrics: Metric[];
}

export function createCheckCounters(): CheckCounters {
  const records = new Map<string, CheckRecord>();
  const outcome = (labels: Record<string, string>): Outcome => ({
    labels,
    count: 0,
    sum: 0,
    buckets: new Float64Array(DURATION_BUCKETS.length + 1),
  });
  /** Zeroes every series (registry.resetMetrics): records stay, held by the observer. */
  const reset = () => {
    for (const r of records.values())
      for (const o of [r.up, r.down]) {
        o.count = 0;
        o.sum = 0;
        o.buckets.fill(0);
      }
  };
  const all = function* () {
    for (const r of records.values()) {
      if (r.up.count > 0) yield r.up;
      if (r.down.count > 0) yield r.down;
    }
  };

  const checks = {
    name: 'nfh_checks_total',
    help: 'Checks run, by outcome (up or down)',
    type: 'counter',
    aggregator: 'sum',
    async get() {
      const values: Sample[] = [];
      for (const o of all()) values.push({ labels: o.labels, value: o.count });
      return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
    },
    reset,
  };
  const duration = {
    name: 'nfh_check_duration_seconds',
    help: 'Duration of one whole check (connect and exchange), by outcome',
    type: 'histogram',
    aggregator: 'sum',
    async get() {
      const values: Sample[] = [];
      for (const o of all()) {
        let cumulative = 0;
        DURATION_BUCKETS.forEach((le, i) => {
          cumulative += o.buckets[i]!;
          values.push({ metricName: `${this.name}_bucket`, labels: { le, ...o.labels }, value: cumulative });
        });
        values.push(
          { metricName: `${this.name}_bucket`, labels: { le: '+Inf', ...o.labels }, value: o.count },
          { metricName: `${this.name}_sum`, labels: o.labels, value: o.sum },
          { metricName: `${this.name}_count`, labels: o.labels, value: o.count },
        );
      }
      return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
    },
    reset,
  };

  return {
    record(id, service, backend, type) {
      let r = records.get(id);
      if (r === undefined || r.type !== type) {
        r = {
          type,
          up: outcome({ service, backend, type, outcome: 'up' }),
          down: outcome({ service, backend, type, outcome: 'down' }),
        };
        records.set(id, r);
      }
      return r;
    },
    observe(record, up, seconds) {
      const o = up ? record.up : record.down;
      o.count++;
      o.sum += seconds;
      let i = 0;
      while (i < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[i]!) i++;
      o.buckets[i]!++;
    },
    retain(keep) {
      for (const [id, r] of records) if (!keep(id, r)) records.delete(id);
    },
    metrics: [checks, duration] as unknown as Metric[],
  };
}
