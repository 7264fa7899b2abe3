import { closeSync, openSync, readSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import type { ConditionWriterConfig } from '../../config/writers.js';
import { conditionPath } from '../../plan/kernel-names.js';
import { asErrno, type ReadOutcome, type Writer } from './types.js';

const who = () => `uid ${process.getuid?.()}, gid ${process.getgid?.()}`;

/**
 * xt_condition makes its files root's, mode 0644, unless the module is loaded with
 * condition_uid_perms / condition_gid_perms and condition_list_perms: name the exact
 * options for this process's group, since the fix is a module option, not a chmod
 * (the kernel recreates the files with its own modes on every rule load).
 */
function procPermissionHint(): string {
  const options = `condition_gid_perms=${process.getgid?.()} condition_list_perms=0664`;
  return `this process (${who()}) may not write it: xt_condition makes its files root's, mode 0644, unless loaded with ${options} ("options xt_condition ${options}" in /etc/modprobe.d/, then reload the module and the rules; condition_uid_perms=${process.getuid?.()} sets the owner instead), or run as root`;
}

/**
 * xt_condition's files: open, write, close every time (a descriptor held across a
 * rule reload fails with EIO); the kernel looks only at the first byte.
 */
export function createConditionWriter(options: ConditionWriterConfig): Writer {
  const create = options.create ?? !/^\/proc(\/|$)/.test(options.dir);
  const valueFor = (up: boolean) => (up ? options.upValue : 1 - options.upValue);
  const readBuffer = Buffer.alloc(16);
  // The keys are the config's targets: each is checked and joined once per writer, not on every check.
  /** The largest read: the read-back reads every target at once, so about the config's size. */
  let largestRead = 0;
  const files = new Map<string, string>();
  const fileOf = (name: string): string => {
    let file = files.get(name);
    if (file === undefined) {
      // Removed backends' keys must not pile up over reloads: start over once it is twice the config.
      if (files.size >= 2 * largestRead + 1024) files.clear();
      files.set(name, (file = conditionPath(options.dir, name)));
    }
    return file;
  };
  return {
    async read(targets) {
      largestRead = Math.max(largestRead, targets.length);
      // Synchronous on purpose: each file is a few bytes in kernel memory (/proc) or the
      // page cache; open+read+close here costs a few µs, while the async path (four
      // thread-pool round trips per file) was the daemon's largest cost at 5,000 checks a
      // second (see BENCHMARKS.md). One pass without yielding: yielding every few hundred
      // files made a 5,000-file read-back wait for as many turns of a saturated event
      // loop (seconds, reported as a stalled writer) for no less work.
      const out = new Map<string, ReadOutcome>();
      for (const t of targets) {
        let fd: number | undefined;
        try {
          fd = openSync(fileOf(t.key), 'r');
          const n = readSync(fd, readBuffer, 0, readBuffer.length, 0);
          const raw = readBuffer.toString('latin1', 0, n);
          const first = raw[0];
          out.set(t.key, { raw, up: first === '0' || first === '1' ? Number(first) === options.upValue : undefined });
        } catch (err) {
          out.set(t.key, { error: asErrno(err) });
        } finally {
          if (fd !== undefined) closeSync(fd);
        }
      }
      return out;
    },
    async write(changes) {
      const failed = new Map<string, NodeJS.ErrnoException>();
      await Promise.all(
        changes.map(async (c) => {
          try {
            // One 2-byte write(2): never a half-written file. 'r+' does not create.
            await writeFile(fileOf(c.target.key), `${valueFor(c.up)}\n`, { flag: create ? 'w' : 'r+' });
          } catch (err) {
            failed.set(c.target.key, asErrno(err));
          }
        }),
      );
      return failed;
    },
    hint(error, target) {
      switch (error.code) {
        case 'ENOENT':
          return create
            ? `the folder ${options.dir} does not exist`
            : `no loaded rule names condition "${target.key}" yet: the kernel creates the file when a rule with "-m condition --condition ${target.key}" is loaded (is xt_condition from xtables-addons installed, and is nf-healthd in the firewall's network namespace?)`;
        case 'EACCES':
        case 'EPERM':
          return create ? `this process (${who()}) may not write in ${options.dir}` : procPermissionHint();
        case 'EIO':
          return 'the condition went away while writing (rules reloaded); retrying';
        default:
          return 'retrying on every check';
      }
    },
  };
}
