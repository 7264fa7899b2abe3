import type { z } from 'zod';
import type { BackendConfig, ServiceConfig } from '../config/schema.js';

/** One thing a writer flips for one backend: a condition file, a set element. */
export interface WriterTarget {
  /** Unique per writer: the condition name, or set and element. */
  key: string;
  /** Where it lives, for operators: `/proc/net/nf_condition/mail1up`, `set nfh_mail_up element 1`. */
  label: string;
}

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

export interface WriterDefinition<S extends z.ZodObject = z.ZodObject> {
  readonly type: string;
  readonly schema: S;
  create(options: z.infer<S>): Writer;
  /** `services`: the whole config's, in order (set writers number marks by position). */
  target(
    options: z.infer<S>,
    service: ServiceConfig,
    backend: BackendConfig,
    services: readonly ServiceConfig[],
  ): WriterTarget;
}

export function defineWriter<S extends z.ZodObject>(def: WriterDefinition<S>): WriterDefinition<S> {
  return def;
}

export function asErrno(err: unknown): NodeJS.ErrnoException {
  return err instanceof Error
    ? (err as NodeJS.ErrnoException)
    : Object.assign(new Error(String(err)), { code: 'EUNKNOWN' });
}
