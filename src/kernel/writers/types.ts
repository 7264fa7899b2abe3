import type { KernelKey } from '../../plan/kernel-names.js';

/** One thing a writer flips for one backend (named by the Plan): a condition file, a set element. */
export type WriterTarget = KernelKey;

/** What a read found: `up` undefined means present but neither value (garbage in a test folder). */
export type ReadOutcome = { up: boolean | undefined; raw: string } | { error: NodeJS.ErrnoException };

export interface WriteChange {
  target: WriterTarget;
  up: boolean;
}

/**
 * The kernel side of "backend up". Batch-shaped so that set writers can apply a
 * whole round in one transaction; the condition writer just loops.
 */
export interface Writer {
  read(targets: readonly WriterTarget[]): Promise<Map<string, ReadOutcome>>;
  /** Resolves with the error of each change that failed; never rejects. */
  write(changes: readonly WriteChange[]): Promise<Map<string, NodeJS.ErrnoException>>;
  /** One sentence that tells the operator what to do about this error. */
  hint(error: NodeJS.ErrnoException, target: WriterTarget): string;
  close?(): Promise<void>;
}

export function asErrno(err: unknown): NodeJS.ErrnoException {
  return err instanceof Error
    ? (err as NodeJS.ErrnoException)
    : Object.assign(new Error(String(err)), { code: 'EUNKNOWN' });
}
