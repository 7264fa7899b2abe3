import { closeSync, openSync, readSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { conditionName } from '../config/names.js';
import { asErrno, defineWriter, type ReadOutcome, type Writer, type WriterTarget } from './types.js';

export const conditionWriterSchema = z
  .strictObject({
    type: z.literal('condition'),
    dir: z
      .string()
      .startsWith('/', 'expected an absolute path')
      .default('/proc/net/nf_condition')
      .describe('The folder of the condition files (one per backend, named by its `condition`).'),
    /** The recipe's rules say `! --condition`, so 0 means up there. */
    upValue: z
      .union([z.literal(0), z.literal(1)])
      .default(0)
      .describe("The value that means up: `0` for rules that test `! --condition`, as the recipe's do."),
    /** Create missing files: right for a plain folder, wrong under /proc where the kernel owns them. Default: not under /proc. */
    create: z
      .boolean()
      .optional()
      .describe(
        'Create missing files; default: yes, except under `/proc`, where the kernel makes them when a rule names them.',
      ),
  })
  .describe('xt_condition (xtables-addons): writes `0`/`1` to one file per backend.');
export type ConditionWriterConfig = z.infer<typeof conditionWriterSchema>;

function fileFor(dir: string, name: string): string {
  // Names are validated by the config schema; check again right before they become a path.
  if (!conditionName.safeParse(name).success) throw new Error(`refusing condition name ${JSON.stringify(name)}`);
  return path.join(dir, name);
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
  const files = new Map<string, string>();
  const fileOf = (name: string): string => {
    let file = files.get(name);
    if (file === undefined) files.set(name, (file = fileFor(options.dir, name)));
    return file;
  };
  return {
    async read(targets) {
      // Synchronous on purpose: each file is a few bytes in kernel memory (/proc) or the
      // page cache, read on every check; open+read+close here costs a few µs, while the
      // async path (four thread-pool round trips per file) was the daemon's largest cost
      // at 5,000 checks a second (see BENCHMARKS.md).
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
          return 'run as root, or load xt_condition with condition_uid_perms/condition_gid_perms and condition_list_perms so that this user may write';
        case 'EIO':
          return 'the condition went away while writing (rules reloaded); retrying';
        default:
          return 'retrying on every check';
      }
    },
  };
}

export const conditionWriter = defineWriter({
  type: 'condition',
  schema: conditionWriterSchema,
  create: createConditionWriter,
  target(options, _service, backend): WriterTarget {
    const key = backend.condition ?? backend.name;
    return { key, label: path.join(options.dir, key) };
  },
});
