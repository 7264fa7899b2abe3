import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createKernelLoop, type KernelLoop, type SyncOutcome } from '../src/kernel/loop.js';
import { createConditionWriter } from '../src/kernel/writers/condition.js';
import { createNftWriter } from '../src/kernel/writers/nft.js';
import type { Writer } from '../src/kernel/writers/types.js';
import { createLogger } from '../src/log.js';
import { tempDir } from './support/daemon.js';

// The writer loop on a plain folder (the condition writer with `create`): the kernel's
// xt_condition files behave the same for these cases, and the real kernel paths are
// covered by test/kernel-failover.test.ts and test/set-writers.test.ts.

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function folder() {
  const t = tempDir('nfh-loop-');
  cleanups.push(t.cleanup);
  return t.dir;
}

function capture() {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({
    level: 'info',
    format: 'json',
    destination: { write: (l: string) => void lines.push(JSON.parse(l)) },
  });
  return { lines, log };
}

const target = (dir: string, key: string) => ({ key, label: path.join(dir, key) });

/** Outcomes as they come, and a way to wait for one. */
function outcomes() {
  const seen: { key: string; up: boolean; outcome: SyncOutcome }[] = [];
  const waiters: { test: (o: SyncOutcome) => boolean; resolve: (o: SyncOutcome) => void }[] = [];
  return {
    seen,
    onOutcome(key: string, up: boolean, outcome: SyncOutcome) {
      seen.push({ key, up, outcome });
      for (const w of [...waiters]) {
        if (w.test(outcome)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(outcome);
        }
      }
    },
    next: (test: (o: SyncOutcome) => boolean) => new Promise<SyncOutcome>((resolve) => waiters.push({ test, resolve })),
  };
}

function loop(
  writer: Writer,
  log = capture().log,
  readBackMs = 60_000,
  onOutcome?: ReturnType<typeof outcomes>['onOutcome'],
) {
  const l = createKernelLoop({ writer, log, readBackMs, stallAfterMs: 60_000, ...(onOutcome ? { onOutcome } : {}) });
  cleanups.push(() => l.stop());
  return l;
}

/** A writer that counts its calls and can be held mid-write. */
function countingWriter(inner: Writer) {
  const calls: { kind: 'read' | 'write'; size: number }[] = [];
  let gate: Promise<void> | undefined;
  const writer: Writer = {
    async read(targets) {
      calls.push({ kind: 'read', size: targets.length });
      return inner.read(targets);
    },
    async write(changes) {
      calls.push({ kind: 'write', size: changes.length });
      if (gate) await gate;
      return inner.write(changes);
    },
    hint: (e, t) => inner.hint(e, t),
  };
  return {
    writer,
    calls,
    hold() {
      let release!: () => void;
      gate = new Promise((r) => (release = r));
      return () => {
        gate = undefined;
        release();
      };
    },
  };
}

describe('writer loop', () => {
  it('applies a burst of wanted changes in one write; what already holds is read once, not rewritten', async () => {
    const dir = folder();
    const c = countingWriter(createConditionWriter({ type: 'condition', dir, upValue: 0 }));
    const l = loop(c.writer);
    writeFileSync(path.join(dir, 'held'), '0\n'); // up already, from an earlier run
    for (const name of ['a', 'b', 'c', 'held']) l.want(target(dir, name), name !== 'b');
    await l.settled();
    expect(c.calls).toEqual([
      { kind: 'read', size: 4 },
      { kind: 'write', size: 3 },
    ]);
    expect(['a', 'b', 'c'].map((n) => readFileSync(path.join(dir, n), 'latin1'))).toEqual(['0\n', '1\n', '0\n']);
    // Wanting what the kernel already holds writes nothing.
    l.want(target(dir, 'a'), true);
    await l.settled();
    expect(c.calls).toHaveLength(2);
  });

  it('never makes the caller wait: want() returns while a write hangs, and health() shows the busy writer', async () => {
    const dir = folder();
    const c = countingWriter(createConditionWriter({ type: 'condition', dir, upValue: 0 }));
    const l = loop(c.writer);
    const release = c.hold();
    l.want(target(dir, 'a'), true);
    const settled = l.settled();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(l.health().busySince).toBeTypeOf('number');
    // Further changes queue up behind the hung write and go out together after it.
    l.want(target(dir, 'b'), true);
    l.want(target(dir, 'c'), false);
    expect(l.health().pending).toBe(3);
    release();
    await settled;
    await l.settled();
    expect(c.calls.filter((x) => x.kind === 'write')).toEqual([
      { kind: 'write', size: 1 },
      { kind: 'write', size: 2 },
    ]);
    expect(l.health()).toMatchObject({ busySince: undefined, pending: 0, failingSince: undefined });
  });

  it('reads everything back in one call per interval and repairs drift, saying so once', async () => {
    const dir = folder();
    const { lines, log } = capture();
    const c = countingWriter(createConditionWriter({ type: 'condition', dir, upValue: 0 }));
    const o = outcomes();
    const l = loop(c.writer, log, 50, o.onOutcome);
    const t = target(dir, 'mail1up');
    l.want(t, true);
    l.want(target(dir, 'mail2up'), false);
    await l.settled();
    writeFileSync(t.label, '1\n'); // someone echoed 1, or the rules were reloaded
    const repaired = await o.next((x) => x.drift !== undefined);
    expect(repaired).toEqual({ confirmed: true, wrote: true, drift: '1' });
    expect(readFileSync(t.label, 'latin1')).toBe('0\n');
    expect(lines).toEqual([
      expect.objectContaining({ level: 'warn', event: 'drift_repaired', target: t.label, found: '1', want: 'up' }),
    ]);
    // Each read-back read both targets at once.
    expect(c.calls.filter((x) => x.kind === 'read').every((x) => x.size === 2)).toBe(true);
  });

  it('logs a failing write once per episode, retries with backoff, and logs the recovery', async () => {
    const dir = folder();
    const { lines, log } = capture();
    const o = outcomes();
    const l = loop(
      createConditionWriter({ type: 'condition', dir, upValue: 0, create: false }),
      log,
      60_000,
      o.onOutcome,
    );
    const t = target(dir, 'mail1up');
    l.want(t, false);
    for (let i = 0; i < 3; i++) await l.settled(); // settled() asks for an attempt now instead of the backoff
    expect(o.seen.map((s) => s.outcome.error?.code)).toEqual(['ENOENT', 'ENOENT', 'ENOENT']);
    expect(lines.map((x) => x.event)).toEqual(['write_failed']);
    expect(lines[0]).toMatchObject({
      level: 'error',
      code: 'ENOENT',
      msg: expect.stringContaining('no loaded rule names condition "mail1up" yet'),
    });
    expect(l.health().failingSince).toBeTypeOf('number');
    expect(l.health().lastError).toContain('ENOENT');
    writeFileSync(t.label, '0\n'); // the rule got loaded: the kernel made the file
    // The backoff retry comes by itself.
    await o.next((x) => x.confirmed);
    expect(readFileSync(t.label, 'latin1')).toBe('1\n');
    expect(lines.map((x) => x.event)).toEqual(['write_failed', 'write_recovered']);
    expect(l.health().failingSince).toBeUndefined();
  });

  it('ends an attempt at a read that timed out: a hung tool costs one commandTimeout, not one per call', async () => {
    // A real child process that never answers (a stand-in for an nft stuck on netlink).
    const dir = folder();
    const nft = path.join(dir, 'nft-hangs');
    const calls = path.join(dir, 'calls');
    writeFileSync(nft, `#!/bin/sh\necho "$@" >> ${calls}\nexec sleep 30\n`);
    chmodSync(nft, 0o755);
    const o = outcomes();
    const inner = createNftWriter({
      type: 'nft',
      table: 'nfh',
      family: 'inet',
      set: 'up',
      nftPath: nft,
      commandTimeout: 1500, // time enough for the script to log its call before it hangs
    });
    const l = loop(inner, capture().log, 60_000, o.onOutcome);
    l.want({ key: '0x101', label: 'nft set inet nfh up element 0x101' }, true);
    await l.settled();
    expect(o.seen.map((s) => s.outcome.error?.code)).toEqual(['ETIMEDOUT']);
    // The set was listed once; no `nft -f -` transaction followed the hung listing.
    expect(readFileSync(calls, 'latin1')).toBe('-j list set inet nfh up\n');
  });

  it('keeps other targets going when one fails', async () => {
    const dir = folder();
    mkdirSync(path.join(dir, 'sub'));
    const o = outcomes();
    const l = loop(
      createConditionWriter({ type: 'condition', dir: path.join(dir, 'sub'), upValue: 0, create: false }),
      capture().log,
      60_000,
      o.onOutcome,
    );
    writeFileSync(path.join(dir, 'sub', 'a'), '1\n');
    chmodSync(path.join(dir, 'sub', 'a'), 0o644);
    l.want(target(path.join(dir, 'sub'), 'a'), true);
    l.want(target(path.join(dir, 'sub'), 'b'), true);
    await l.settled();
    const byKey = Object.fromEntries(o.seen.map((s) => [s.key, s.outcome]));
    expect(byKey.a).toMatchObject({ confirmed: true, wrote: true });
    expect(byKey.b?.error?.code).toBe('ENOENT');
    // A new value for the failing key is tried at once, not after the backoff.
    const next = o.next(() => true);
    l.want(target(path.join(dir, 'sub'), 'b'), false);
    expect((await next).error?.code).toBe('ENOENT');
  });

  it('finishes what is pending at stop, and a forgotten target is left alone', async () => {
    const dir = folder();
    const c = countingWriter(createConditionWriter({ type: 'condition', dir, upValue: 0 }));
    const l: KernelLoop = createKernelLoop({
      writer: c.writer,
      log: capture().log,
      readBackMs: 60_000,
      stallAfterMs: 60_000,
    });
    l.want(target(dir, 'a'), true);
    l.want(target(dir, 'gone'), true);
    l.forget('gone');
    await l.stop();
    expect(readFileSync(path.join(dir, 'a'), 'latin1')).toBe('0\n');
    expect(c.calls).toEqual([
      { kind: 'read', size: 1 },
      { kind: 'write', size: 1 },
    ]);
  });
});
