/**
 * The state file: written atomically (temporary file in the same folder, then
 * rename), so a reader (`nf-healthd status`, a restart) never sees half of it.
 */
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ADMIN_STATES } from '../health/admin.js';
import { SNAPSHOT_VERSION, type Snapshot } from './snapshot.js';

/** Largest state file we read back: thousands of backends fit, a wrong path does not hurt. */
const MAX_BYTES = 64 * 1024 * 1024;

/** Replaces `file` with `text` atomically: a reader sees the old content or the new, never a part. */
export async function writeFileAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
  const tmp = `${file}.${process.pid}.tmp`;
  const handle = await open(tmp, 'w', 0o644);
  try {
    try {
      await handle.writeFile(text);
      // The rename must not reach the disk before the data: a crash leaves old or new, not empty.
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
  } catch (err) {
    // A full disk (ENOSPC) leaves a part written: it must not keep the space the next try needs.
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

export function writeStateFile(file: string, state: Snapshot): Promise<void> {
  return writeFileAtomically(file, `${JSON.stringify(state, null, 1)}\n`);
}

const dampingSchema = z.object({
  changes: z.array(z.number()),
  level: z.number().int().min(0),
  calmSince: z.number(),
  heldUntil: z.number().optional(),
  reason: z.string().optional(),
});

const stamp = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'expected a time');

/** What a reader relies on; other fields are passed through as they are. */
const snapshotSchema = z.looseObject({
  version: z.literal(1),
  pid: z.number().int(),
  writtenAt: stamp,
  staleAfterMs: z.number().min(0),
  stoppedAt: stamp.optional(),
  configPath: z.string(),
  backends: z.array(
    z.looseObject({
      id: z.string(),
      service: z.string(),
      backend: z.string(),
      address: z.string(),
      port: z.number(),
      type: z.string(),
      fingerprint: z.string(),
      target: z.object({ key: z.string(), label: z.string() }),
      state: z.enum(['up', 'down']),
      since: stamp,
      reason: z.string(),
      successes: z.number().int().min(0),
      failures: z.number().int().min(0),
      last: z.object({ at: stamp, up: z.boolean(), detail: z.string(), latencyMs: z.number() }).optional(),
      written: z.object({ up: z.boolean(), confirmed: z.boolean(), at: stamp }).optional(),
      held: z.object({ until: stamp, reason: z.string() }).optional(),
      damping: dampingSchema.optional(),
      admin: z
        .object({
          state: z.enum(ADMIN_STATES),
          since: stamp,
          deadline: stamp.optional(),
          drainedAt: stamp.optional(),
          deadlineDoneAt: stamp.optional(),
        })
        .optional(),
      connections: z.number().int().min(0).optional(),
      passive: z
        .object({
          windowMs: z.number(),
          new: z.number(),
          answered: z.number(),
          reset: z.number(),
          unanswered: z.number(),
          ratio: z.number().optional(),
          failingSince: stamp.optional(),
          heldUntil: stamp.optional(),
          detail: z.string(),
        })
        .optional(),
    }),
  ),
});

export type ReadState = { ok: true; state: Snapshot } | { ok: false; missing: boolean; problem: string };

export async function readStateFile(file: string): Promise<ReadState> {
  let text: string;
  try {
    const handle = await open(file, 'r');
    try {
      const { size } = await handle.stat();
      if (size > MAX_BYTES)
        return { ok: false, missing: false, problem: `${file} is larger than ${MAX_BYTES} bytes: not a state file` };
      text = await readFile(handle, 'utf8');
    } finally {
      await handle.close();
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { ok: false, missing: e.code === 'ENOENT', problem: `cannot read ${file}: ${e.code ?? e.message}` };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, missing: false, problem: `${file} is not JSON` };
  }
  const version = (json as { version?: unknown } | null)?.version;
  if (typeof version === 'number' && version > SNAPSHOT_VERSION)
    return {
      ok: false,
      missing: false,
      problem: `${file} was written by a newer nf-healthd (state file version ${version}, this one reads ${SNAPSHOT_VERSION})`,
    };
  const parsed = snapshotSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return {
      ok: false,
      missing: false,
      problem: `${file} is not a state file of this version: ${issue.path.join('.')}: ${issue.message}`,
    };
  }
  return { ok: true, state: parsed.data as unknown as Snapshot };
}
