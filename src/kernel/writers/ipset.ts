import net from 'node:net';
import type { IpsetWriterConfig } from '../../config/writers.js';
import { ipsetNamePattern } from '../../plan/kernel-names.js';
import { commandError, commandHint, runCommand } from './command.js';
import { asErrno, type ReadOutcome, type WriteChange, type Writer } from './types.js';

const MAX_LISTING = 16 * 1024 * 1024;
/** ipset prints addresses in canonical form; so must we, to compare. */
export function canonicalIp(text: string): string {
  return net.isIPv6(text) ? new URL(`http://[${text}]/`).hostname.slice(1, -1) : text;
}

function parseTarget(key: string): { set: string; element: string } {
  const [set, element] = key.split(' ');
  if (!set || !element || !ipsetNamePattern.test(set) || net.isIP(element) === 0)
    throw new Error(`refusing ipset target ${JSON.stringify(key)}`);
  return { set, element: canonicalIp(element) };
}

/** `ipset list -o save` output: members of each set listed. */
export function parseIpsetSave(text: string): Map<string, Set<string>> {
  const sets = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    const [verb, name, element] = line.trim().split(/\s+/);
    if (verb === 'create' && name) sets.set(name, sets.get(name) ?? new Set());
    else if (verb === 'add' && name && element) sets.get(name)?.add(canonicalIp(element));
  }
  return sets;
}

/**
 * Up is membership of the service VIP in the backend's hash:ip set. One `ipset list`
 * per read batch (only the set when the batch has one target), one `ipset restore
 * -exist` per write batch (add/del are idempotent with -exist).
 */
export function createIpsetWriter(options: IpsetWriterConfig): Writer {
  const timeoutMs = options.commandTimeout ?? 5000;
  // The keys are the config's targets: each is checked and canonicalised once per writer, not on every check.
  /** The largest read: the read-back reads every target at once, so about the config's size. */
  let largestRead = 0;
  const parsed = new Map<string, { set: string; element: string }>();
  const parse = (key: string) => {
    let target = parsed.get(key);
    if (target === undefined) {
      // Removed backends' keys must not pile up over reloads: start over once it is twice the config.
      if (parsed.size >= 2 * largestRead + 1024) parsed.clear();
      parsed.set(key, (target = parseTarget(key)));
    }
    return target;
  };
  const ipset = (args: string[], input?: string) =>
    runCommand(options.ipsetPath, args, {
      timeoutMs,
      maxOutput: MAX_LISTING,
      ...(input === undefined ? {} : { input }),
    });

  const restore = async (changes: readonly WriteChange[]) => {
    const script = changes.map((c) => {
      const { set, element } = parse(c.target.key);
      return `${c.up ? 'add' : 'del'} ${set} ${element}\n`;
    });
    const result = await ipset(['restore', '-exist'], script.join(''));
    if (result.code !== 0) throw commandError('ipset', result);
  };

  return {
    async read(targets) {
      largestRead = Math.max(largestRead, targets.length);
      const out = new Map<string, ReadOutcome>();
      if (targets.length === 0) return out;
      let sets: Map<string, Set<string>>;
      try {
        const only = targets.length === 1 ? [parse(targets[0]!.key).set] : [];
        const result = await ipset(['list', '-o', 'save', ...only]);
        if (result.code !== 0) throw commandError('ipset', result);
        sets = parseIpsetSave(result.stdout);
      } catch (err) {
        for (const t of targets) out.set(t.key, { error: asErrno(err) });
        return out;
      }
      for (const t of targets) {
        const { set, element } = parse(t.key);
        const members = sets.get(set);
        if (!members)
          out.set(t.key, { error: Object.assign(new Error(`ipset: set ${set} does not exist`), { code: 'ENOENT' }) });
        else
          out.set(
            t.key,
            members.has(element) ? { up: true, raw: 'up (in the set)' } : { up: false, raw: 'down (not in the set)' },
          );
      }
      return out;
    },
    async write(changes) {
      const failed = new Map<string, NodeJS.ErrnoException>();
      if (changes.length === 0) return failed;
      try {
        await restore(changes);
      } catch (err) {
        if (changes.length === 1) failed.set(changes[0]!.target.key, asErrno(err));
        else {
          // ipset restore stops at the first bad line: redo one by one to apply the rest and name the culprits.
          for (const c of changes) {
            try {
              await restore([c]);
            } catch (each) {
              failed.set(c.target.key, asErrno(each));
            }
          }
        }
      }
      return failed;
    },
    hint(error, target) {
      // ipset's own word for a timeout (nft's is the shared default).
      if (error.code === 'ETIMEDOUT' && !error.syscall?.startsWith('spawn')) return `${error.message}; retrying`;
      const set = target.key.split(' ')[0];
      return commandHint(error, {
        tool: 'ipset',
        path: options.ipsetPath,
        pathKey: 'writer.ipsetPath',
        install: 'ipset',
        missing: `set ${set} does not exist: load the rules first (nf-healthd rules --format iptables-ipset)`,
      });
    },
  };
}
