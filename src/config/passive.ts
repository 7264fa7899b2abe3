import { z } from 'zod';
import { duration } from './duration.js';

/**
 * Passive health (docs/passive.md): what the kernel's own counters say about a backend's
 * real traffic. A failing share is evidence for the active checks, and an ejection only
 * when `eject` is set; a cap keeps ejections from emptying a service.
 */
export const passiveSchema = z
  .strictObject({
    window: duration
      .default(10_000)
      .describe(
        "How far back the counts reach: the verdict looks at the new connections of the latest `window`, and an ejected backend stays out at least this long before its active checks' `rise` can bring it back.",
      ),
    minConnections: z
      .number()
      .int()
      .min(1)
      .default(20)
      .describe('New connections within `window` below which there is no verdict (a quiet backend is never flagged).'),
    failureRatio: z
      .number()
      .gt(0)
      .max(1)
      .default(0.5)
      .describe(
        'Share of the new connections of `window` that were never answered or got a reset from the backend at which it counts as failing (0 to 1).',
      ),
    maxEjectPercent: z
      .number()
      .min(0)
      .max(100)
      .default(50)
      .describe(
        "Passive ejection never takes a backend out when that would leave more than this percentage of the service's backends out (whatever took the others out); Envoy's max_ejection_percent.",
      ),
    maxEjectionTime: duration
      .default(300_000)
      .describe(
        "The longest one ejection lasts: each ejection in a row lasts `window` times its number (the first one `window`), at most this; a whole `window` in service takes one off the count. Envoy's base_ejection_time and max_ejection_time.",
      ),
    eject: z
      .boolean()
      .default(false)
      .describe(
        'Take a failing backend out at once (as `fall` failed checks would). Default: only check it at `fastInterval` and flag it in logs, status and metrics.',
      ),
  })
  .describe(
    'Passive health from the kernel counters of real traffic (nft writer): new connections, answered, reset, unanswered per backend (docs/passive.md).',
  );

export type PassiveConfig = z.infer<typeof passiveSchema>;
