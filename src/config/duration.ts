import { z } from 'zod';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/y;

/** Parses `250ms`, `2s`, `1m30s`, `1h` into milliseconds; undefined when malformed. */
export function parseDuration(text: string): number | undefined {
  const s = text.trim();
  if (s === '') return undefined;
  let total = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < s.length) {
    const m = PART.exec(s);
    if (!m) return undefined;
    total += Number(m[1]) * (UNIT_MS[m[2]!] ?? NaN);
  }
  return Number.isFinite(total) ? Math.round(total) : undefined;
}

/** Prints milliseconds the way an operator wrote them: 500ms, 2s, 1m30s. */
export function formatDuration(ms: number): string {
  if (ms < 1000 || ms % 1000 !== 0) return `${ms}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
}

/** A zod field holding a duration string; parses to milliseconds. */
export const duration = z
  .string({ error: 'expected a duration with a unit, such as 500ms, 2s or 1m' })
  .transform((text, ctx) => {
    const ms = parseDuration(text);
    if (ms === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: `"${text}" is not a duration: use a number and a unit (ms, s, m, h), such as 500ms or 2s`,
      });
      return z.NEVER;
    }
    if (ms <= 0) {
      ctx.addIssue({ code: 'custom', message: 'a duration must be longer than 0' });
      return z.NEVER;
    }
    return ms;
  });
