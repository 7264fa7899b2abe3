import { type NftWriterConfig, nftIdentifierPattern } from '../../config/writers.js';
import { formatMark } from '../../plan/kernel-names.js';
import { changedSlots } from '../table.js';
import { commandError, commandHint, runCommand } from './command.js';
import { asErrno, type ReadOutcome, type TableChange, type TableRead, type Writer } from './types.js';

/** A 65,537-slot map lists as about 1 MB of JSON. */
const MAX_LISTING = 16 * 1024 * 1024;

function mapName(key: string): string {
  if (!nftIdentifierPattern.test(key)) throw new Error(`refusing nft map name ${JSON.stringify(key)}`);
  return key;
}

const scalar = (v: unknown): number | undefined =>
  typeof v === 'number' ? v : ((v as { elem?: { val?: unknown } })?.elem?.val as number | undefined);

/** The maps of `nft -j list table`, by name: slot -> mark pairs (`[key, value]`, the key maybe wrapped in `{elem}`). */
export function parseNftMapsJson(text: string): Map<string, Map<number, number>> {
  const doc = JSON.parse(text) as { nftables?: { map?: { name?: unknown; elem?: unknown[] } }[] };
  const maps = new Map<string, Map<number, number>>();
  for (const entry of doc.nftables ?? []) {
    if (!entry.map || typeof entry.map.name !== 'string') continue;
    const pairs = new Map<number, number>();
    for (const e of entry.map.elem ?? []) {
      if (!Array.isArray(e)) continue;
      const key = scalar(e[0]);
      const value = scalar(e[1]);
      if (typeof key === 'number' && typeof value === 'number') pairs.set(key, value);
    }
    maps.set(entry.map.name, pairs);
  }
  return maps;
}

/** Named counters of `nft -j reset counters table`: packets by name (their values before the reset). */
export function parseNftCountersJson(text: string): Map<string, number> {
  const doc = JSON.parse(text) as { nftables?: { counter?: { name?: unknown; packets?: unknown } }[] };
  const counters = new Map<string, number>();
  for (const entry of doc.nftables ?? []) {
    const c = entry.counter;
    if (c && typeof c.name === 'string' && typeof c.packets === 'number') counters.set(c.name, c.packets);
  }
  return counters;
}

/** Elements per `add element` line: one line per thousand keeps nft's parser errors readable. */
const ELEMENTS_PER_COMMAND = 1000;

/**
 * The commands that make a map hold `change.slots`. Known content: delete and re-add
 * only the slots that differ (nft 1.0.6 has no element update), unless more than half
 * differ: then flush and fill, which costs less (BENCHMARKS.md, table).
 */
export function tableCommands(where: string, change: TableChange): string[] {
  const map = `${where} ${mapName(change.target.key)}`;
  const { slots, known } = change;
  const moved = known ? changedSlots(known, slots) : undefined;
  const lines: string[] = [];
  const add = (keys: readonly number[]) => {
    for (let i = 0; i < keys.length; i += ELEMENTS_PER_COMMAND) {
      const part = keys.slice(i, i + ELEMENTS_PER_COMMAND).map((k) => `${k} : ${formatMark(slots[k]!)}`);
      lines.push(`add element ${map} { ${part.join(', ')} }`);
    }
  };
  if (moved && moved.length * 2 <= slots.length) {
    if (moved.length === 0) return lines;
    for (let i = 0; i < moved.length; i += ELEMENTS_PER_COMMAND)
      lines.push(`delete element ${map} { ${moved.slice(i, i + ELEMENTS_PER_COMMAND).join(', ')} }`);
    add(moved);
  } else {
    lines.push(`flush map ${map}`);
    add(Array.from(slots.keys()));
  }
  return lines;
}

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
    async readTables(targets) {
      const out = new Map<string, TableRead>();
      if (targets.length === 0) return out;
      try {
        const result = await runCommand(options.nftPath, ['-j', 'list', 'table', options.family, options.table], {
          timeoutMs,
          maxOutput: MAX_LISTING,
        });
        if (result.code !== 0) throw commandError('nft', result);
        const maps = parseNftMapsJson(result.stdout);
        for (const t of targets) {
          const pairs = maps.get(mapName(t.key));
          if (!pairs) {
            const error = new Error(`nft: no map ${options.family} ${options.table} ${t.key} in the listing`);
            out.set(t.key, { error: Object.assign(error, { code: 'ENOENT' }) });
            continue;
          }
          const size = Math.max(0, ...pairs.keys()) + 1;
          out.set(t.key, { slots: Array.from({ length: size }, (_, k) => pairs.get(k)) });
        }
      } catch (err) {
        for (const t of targets) out.set(t.key, { error: asErrno(err) });
      }
      return out;
    },
    async readCounters() {
      // Lists and zeroes at once: nothing counted between the read and the reset is lost.
      const result = await runCommand(
        options.nftPath,
        ['-j', 'reset', 'counters', 'table', options.family, options.table],
        { timeoutMs, maxOutput: MAX_LISTING },
      );
      if (result.code !== 0) throw commandError('nft', result);
      return parseNftCountersJson(result.stdout);
    },
    async write(changes, tables = []) {
      const failed = new Map<string, NodeJS.ErrnoException>();
      if (changes.length === 0 && tables.length === 0) return failed;
      const tableLines: string[] = [];
      try {
        for (const t of tables) tableLines.push(...tableCommands(`${options.family} ${options.table}`, t));
      } catch (err) {
        for (const t of tables) failed.set(t.target.key, asErrno(err));
        for (const c of changes) failed.set(c.target.key, asErrno(err));
        return failed;
      }
      const lines = changes.flatMap((c) => {
        const element = `element ${where} { ${formatMark(markFromKey(c.target.key))} }`;
        return c.up ? [`add ${element}`] : [`add ${element}`, `delete ${element}`];
      });
      lines.push(...tableLines);
      if (lines.length === 0) return failed;
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
        for (const t of tables) failed.set(t.target.key, asErrno(err));
      }
      return failed;
    },
    hint(error, target) {
      const isMap = !target.key.startsWith('0x');
      return commandHint(error, {
        tool: 'nft',
        path: options.nftPath,
        pathKey: 'writer.nftPath',
        install: 'nftables',
        missing: `${isMap ? `map ${options.family} ${options.table} ${target.key}` : `set ${where}`} does not exist: load the rules first (nf-healthd rules --format nft | nft -f -)`,
      });
    },
  };
}
