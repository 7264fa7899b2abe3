/**
 * Passive health metrics (docs/passive.md): what the kernel counted of each backend's real
 * traffic, turned into prom-client values at scrape time from the daemon's own totals.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Daemon } from '../observer.js';

const KINDS = [
  ['new', 'New connections (UDP: flows) the balancer sent to the backend'],
  ['answered', 'New connections the backend answered (SYN-ACK; UDP: a first reply)'],
  ['reset', 'Connections the backend reset (a RST in the reply direction)'],
  ['unanswered', 'New connections neither answered nor reset'],
] as const;

export function registerPassiveMetrics(registers: Registry[], daemon: Pick<Daemon, 'backends'>): void {
  const labelNames = ['service', 'backend'] as const;
  for (const [kind, help] of KINDS)
    new Counter({
      name: `nfh_passive_${kind}_total`,
      help: `${help}, counted by the kernel (passive health)`,
      labelNames,
      registers,
      collect() {
        this.reset();
        for (const b of daemon.backends())
          if (b.passive) this.inc({ service: b.spec.service, backend: b.spec.name }, b.passive.totals[kind]);
      },
    });
  new Gauge({
    name: 'nfh_passive_failure_ratio',
    help: 'Share of the latest window of new connections unanswered or reset (absent below minConnections)',
    labelNames,
    registers,
    collect() {
      this.reset();
      for (const b of daemon.backends())
        if (b.passive && b.passive.latest.kind !== 'quiet')
          this.set({ service: b.spec.service, backend: b.spec.name }, b.passive.latest.ratio);
    },
  });
  new Gauge({
    name: 'nfh_passive_failing',
    help: "1 while the backend's real traffic fails (passive health), whether or not it was ejected",
    labelNames,
    registers,
    collect() {
      this.reset();
      for (const b of daemon.backends())
        if (b.passive)
          this.set({ service: b.spec.service, backend: b.spec.name }, b.passive.failingSince === undefined ? 0 : 1);
    },
  });
}
