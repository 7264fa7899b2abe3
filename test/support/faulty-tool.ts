import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { renderRules } from '../../src/kernel/rules/command.js';
import { parseNftSetJson } from '../../src/kernel/writers/nft.js';
import { parsePlan } from '../../src/plan/load.js';
import type { Netns } from './netns.js';

/**
 * How the stand-in for `nft` or `ipset` behaves on its next call:
 * - pass: runs the real tool inside the test's namespace;
 * - hang: sleeps (an nft stuck on the netlink socket), until the writer's commandTimeout kills it;
 * - fail: exits 1 with a message on stderr;
 * - signal: is killed by SIGKILL (the OOM killer, an operator) before doing anything;
 * - held: a write (`nft -f`, `ipset restore`) writes its pid to `held.pid` and sleeps, for the test
 *   to kill it in the middle of the call; reads pass;
 * - commit-then-die: runs the real tool (the transaction is applied) and is killed before it can report;
 * - slow: sleeps 3 s, then runs the real tool (a loaded machine).
 */
export type ToolMode = 'pass' | 'hang' | 'fail' | 'signal' | 'held' | 'commit-then-die' | 'slow';

export interface FaultyTool {
  /** The folder to put first (alone) on the daemon's PATH. */
  binDir: string;
  set(mode: ToolMode): void;
  /** Takes the tool off PATH (`missing`) or puts it back. */
  remove(): void;
  restore(): void;
  /** The pid of the call sleeping in `held` mode, once it started. */
  heldPid(): number | undefined;
  /** Every call so far: `<mode> <args>`, one per line. */
  calls(): string[];
}

/**
 * A wrapper script named like the real tool (`nft`, `ipset`) in a folder of its own,
 * switched between passing and failing by a mode file the test rewrites. Passing, it
 * runs the real binary inside `ns`; the daemon finds it through PATH, as it finds the
 * real one. Every command in it is an absolute path: PATH holds only its folder.
 */
export function faultyTool(dir: string, tool: 'nft' | 'ipset', ns: Netns): FaultyTool {
  const binDir = path.join(dir, `bin-${tool}`);
  const file = path.join(binDir, tool);
  const modeFile = path.join(dir, `${tool}.mode`);
  const pidFile = path.join(dir, `${tool}.held.pid`);
  const callLog = path.join(dir, `${tool}.calls`);
  const real = `/usr/sbin/ip netns exec ${ns.name} /usr/sbin/${tool} "$@"`;
  writeFileSync(modeFile, 'pass\n');
  writeFileSync(callLog, '');
  mkdirSync(binDir, { recursive: true });
  writeFileSync(
    file,
    `#!/bin/sh
mode=$(/usr/bin/cat '${modeFile}')
echo "$mode $*" >> '${callLog}'
case "$mode" in
  hang) exec /usr/bin/sleep 60 ;;
  fail) echo "${tool}: simulated failure" >&2; exit 1 ;;
  signal) kill -KILL $$ ;;
  held) case "$1" in -f|restore) echo $$ > '${pidFile}.tmp' && /usr/bin/mv '${pidFile}.tmp' '${pidFile}'; exec /usr/bin/sleep 60 ;; esac ;;
  commit-then-die) ${real}; kill -KILL $$ ;;
  slow) /usr/bin/sleep 3 ;;
esac
exec ${real}
`,
  );
  chmodSync(file, 0o755);
  return {
    binDir,
    set: (mode) => {
      rmSync(pidFile, { force: true });
      writeFileSync(modeFile, `${mode}\n`);
    },
    remove: () => renameSync(file, `${file}.off`),
    restore: () => renameSync(`${file}.off`, file),
    heldPid: () => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'latin1')) : undefined),
    calls: () => readFileSync(callLog, 'utf8').split('\n').filter(Boolean),
  };
}

/** The nft side of a fault test: the config's rules loaded in `ns`, and its set read back per backend. */
export interface NftLab {
  /** The backends' marks, in config order. */
  marks: string[];
  /** `family table set` */
  where: string[];
  /** Whether each backend's mark is in the set, in config order. */
  members(): Promise<boolean[]>;
}

export async function nftLab(ns: Netns, configText: string): Promise<NftLab> {
  const plan = parsePlan(configText);
  const marks = plan.backends.map((b) => b.target.key);
  const w = plan.writer as { family: string; table: string; set: string };
  const where = [w.family, w.table, w.set];
  await ns.run(['nft', '-f', '-'], renderRules(plan, 'nft'));
  return {
    marks,
    where,
    async members() {
      const inSet = parseNftSetJson(await ns.run(['nft', '-j', 'list', 'set', ...where]))!;
      return marks.map((m) => inSet.has(Number(m)));
    },
  };
}
