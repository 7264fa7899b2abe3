import type { NftWriterConfig } from '../../config/writers.js';
import { formatMark } from '../../plan/kernel-names.js';
import { commandError, commandHint, runCommand } from './command.js';
import { asErrno, type ReadOutcome, type Writer } from './types.js';

const MAX_LISTING = 4 * 1024 * 1024;

function markFromKey(key: string): number {
  const mark = Number(key);
  if (!/^0x[0-9a-f]{1,8}$/.test(key) || !Number.isInteger(mark) || mark <= 0)
    throw new Error(`refusing nft mark ${JSON.stringify(key)}`);
  return mark;
}

/** Elements of `nft -j list set`: plain numbers, or `{elem: {val}}` when the set has flags such as counters. */
export function parseNftSetJson(text: string): Set<number> | undefined {
  const doc = JSON.parse(text) as { nftables?: { set?: { elem?: unknown[] } }[] };
  const entry = doc.nftables?.find((e) => e.set !== undefined);
  if (!entry?.set) return undefined;
  const marks = new Set<number>();
  for (const e of entry.set.elem ?? []) {
    const value = typeof e === 'number' ? e : (e as { elem?: { val?: unknown } })?.elem?.val;
    if (typeof value === 'number') marks.add(value);
  }
  return marks;
}

/**
 * Up is membership of the backend's mark in one named set. Reads: one `nft -j list
 * set` per batch. Writes: one `nft -f -` transaction per batch; nft 1.0.6 has no
 * `destroy element` and `delete element` fails on a missing one, so a removal is
 * `add` then `delete` in the same transaction.
 */
export function createNftWriter(options: NftWriterConfig): Writer {
  const timeoutMs = options.commandTimeout ?? 5000;
  const where = `${options.family} ${options.table} ${options.set}`;
  return {
    async read(targets) {
      const out = new Map<string, ReadOutcome>();
      if (targets.length === 0) return out;
      try {
        const result = await runCommand(
          options.nftPath,
          ['-j', 'list', 'set', options.family, options.table, options.set],
          { timeoutMs, maxOutput: MAX_LISTING },
        );
        if (result.code !== 0) throw commandError('nft', result);
        const marks = parseNftSetJson(result.stdout);
        if (!marks) throw Object.assign(new Error(`nft: no set ${where} in the listing`), { code: 'ENOENT' });
        for (const t of targets)
          out.set(
            t.key,
            marks.has(markFromKey(t.key))
              ? { up: true, raw: 'up (in the set)' }
              : { up: false, raw: 'down (not in the set)' },
          );
      } catch (err) {
        for (const t of targets) out.set(t.key, { error: asErrno(err) });
      }
      return out;
    },
    async write(changes) {
      const failed = new Map<string, NodeJS.ErrnoException>();
      if (changes.length === 0) return failed;
      const lines = changes.flatMap((c) => {
        const element = `element ${where} { ${formatMark(markFromKey(c.target.key))} }`;
        return c.up ? [`add ${element}`] : [`add ${element}`, `delete ${element}`];
      });
      try {
        const result = await runCommand(options.nftPath, ['-f', '-'], {
          input: `${lines.join('\n')}\n`,
          timeoutMs,
          maxOutput: MAX_LISTING,
        });
        if (result.code !== 0) throw commandError('nft', result);
      } catch (err) {
        // One transaction: all or nothing.
        for (const c of changes) failed.set(c.target.key, asErrno(err));
      }
      return failed;
    },
    hint(error) {
      return commandHint(error, {
        tool: 'nft',
        path: options.nftPath,
        pathKey: 'writer.nftPath',
        install: 'nftables',
        missing: `set ${where} does not exist: load the rules first (nf-healthd rules --format nft | nft -f -)`,
      });
    },
  };
}
