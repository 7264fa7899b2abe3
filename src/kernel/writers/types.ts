import type { KernelKey } from '../../plan/kernel-names.js';

/** One thing a writer flips for one backend (named by the Plan): a condition file, a set element. */
export type WriterTarget = KernelKey;

/** What a read found: `up` undefined means present but neither value (garbage in a test folder). */
export type ReadOutcome = { up: boolean | undefined; raw: string } | { error: NodeJS.ErrnoException };

export interface WriteChange {
  target: WriterTarget;
  up: boolean;
}

/** A service's balancing table in the kernel (nft: the map `slots_<service>`). */
export interface TableTarget {
  /** Unique per writer: the map name. */
  key: string;
  /** Where it lives, for operators: `nft map inet nfh slots_mail`. */
  label: string;
}

/** What a table read found: the mark of every slot, or undefined where a slot is missing. */
export type TableRead = { slots: (number | undefined)[] } | { error: NodeJS.ErrnoException };

export interface TableChange {
  target: TableTarget;
  /** The wanted mark of every slot. */
  slots: Uint32Array;
  /** What the kernel holds now, when known (complete): only the slots that differ are written. */
  known: Uint32Array | undefined;
}

/**
 * The kernel side of "backend up". Batch-shaped so that set writers can apply a
 * whole round in one transaction; the condition writer just loops.
 */
export interface Writer {
  read(targets: readonly WriterTarget[]): Promise<Map<string, ReadOutcome>>;
  /**
   * Resolves with the error of each change that failed (by target or table key); never
   * rejects. Table changes go in the same transaction as the set changes.
   */
  write(changes: readonly WriteChange[], tables?: readonly TableChange[]): Promise<Map<string, NodeJS.ErrnoException>>;
  /** Writers that keep balancing tables (nft) read them here; the others ignore tables. */
  readTables?(targets: readonly TableTarget[]): Promise<Map<string, TableRead>>;
  /**
   * Writers that keep passive counters (nft) read every named counter of their table and
   * zero it in the same call: packets by counter name. Rejects when the read fails.
   */
  readCounters?(): Promise<Map<string, number>>;
  /** One sentence that tells the operator what to do about this error. */
  hint(error: NodeJS.ErrnoException, target: WriterTarget): string;
  close?(): Promise<void>;
}

export function asErrno(err: unknown): NodeJS.ErrnoException {
  return err instanceof Error
    ? (err as NodeJS.ErrnoException)
    : Object.assign(new Error(String(err)), { code: 'EUNKNOWN' });
}
